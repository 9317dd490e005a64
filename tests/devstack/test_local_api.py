"""The dev stack's API server (``devstack.local_api``: a Chalice app on uvicorn) over real HTTP, with a
small Chalice app: bodies, greedy routes, the JSON error shape for what the parser refuses, the body
limit, and each concurrent request seeing its own ``current_request``."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.app import Chalice

from devstack.local_api import MAX_BODY_BYTES, local_server
from edge_workers.local_server import BackgroundServer

app = Chalice(app_name="local-api-test")


@app.route("/echo/{name}", methods=["GET", "POST"])
def echo(name: str) -> dict[str, Any]:
    time.sleep(0.02)  # other threads set their requests meanwhile
    current = app.current_request
    assert current is not None and current.uri_params is not None
    raw = current.raw_body
    body = raw.decode() if isinstance(raw, bytes) else raw or ""
    return {"name": name, "seen": current.uri_params["name"], "body": body}


@app.route("/{proxy+}", methods=["GET"])
def fallback(**_: str) -> dict[str, str]:
    assert app.current_request is not None
    return {"fallback": app.current_request.context["resourcePath"]}


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    running = local_server(app, "127.0.0.1", 0)
    running.start()
    yield running
    running.stop()


def request(server: BackgroundServer, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_requests_and_bodies_reach_the_app(server: BackgroundServer) -> None:
    assert request(server, "POST", "/echo/ada", b'{"x": 1}', **{"Content-Type": "application/json"}) == (
        200,
        {"name": "ada", "seen": "ada", "body": '{"x": 1}'},
    )
    # Chunked bodies too (chalice local's server read only Content-Length bodies).
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/echo/chunked", body=iter([b'{"a":', b" 2}"]), headers={"Content-Type": "application/json"})
    assert json.loads(conn.getresponse().read())["body"] == '{"a": 2}'
    conn.close()


def test_unknown_deep_paths_reach_the_greedy_route(server: BackgroundServer) -> None:
    assert request(server, "GET", "/no/such/thing") == (200, {"fallback": "/{proxy+}"})


def test_concurrent_requests_each_see_their_own_request(server: BackgroundServer) -> None:
    names = [f"user{number}" for number in range(16)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda name: request(server, "GET", f"/echo/{name}")[1], names))
    assert [answer["seen"] for answer in answers] == names


def test_a_malformed_request_gets_the_json_error_shape(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /echo/x HTTP/1.1\r\nHost: api\r\nBad Header: 1\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body) == {
        "error": {"code": "malformed_request", "message": "the request is malformed", "details": None}
    }


def test_bodies_over_api_gateways_limit_are_refused(server: BackgroundServer) -> None:
    status, body = request(server, "POST", "/echo/big", b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
