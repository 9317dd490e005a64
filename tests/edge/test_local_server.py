"""The local edge's HTTP server (uvicorn on h11, ``edge_workers.local_server``) as a client meets it
over raw sockets: malformed requests are refused whole, slow uploaders do not hold up anyone else,
origin connections are kept alive, and a stopped server's port is usable again at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import PortInUse, ensure_port_free
from edge_workers.local_server import BackgroundServer, Receive, Scope, Send, bind_listening, port_is_free
from tests.edge.test_edge_gateway import USER, Edge, call, origin_url, running_origin, start_edge

SIGN_UP_HEADERS = b"Content-Type: application/json\r\ncf-turnstile-response: XXXX.DUMMY.TOKEN.XXXX\r\n"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_origin(USER) as origin:
        running = start_edge(tmp_path_factory.mktemp("edge-server"), origin_url(origin))
        yield running
        running.server.stop()


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def responses_in(raw: bytes) -> list[tuple[int, dict[str, Any]]]:
    """Each response's status and JSON body (bodies framed by Content-Length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split(" ")[1]), json.loads(rest[:length]) if length else {}))
        raw = rest[length:]
    return found


@pytest.mark.parametrize(
    "head",
    [
        # A space before the colon: http.server dropped this header and every one after it, so the
        # Connection: close below went unseen and the smuggled second request was answered too.
        b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Note : x\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        # A bare CR, which http.server took for a line break (a header hidden inside another).
        b"GET /healthz HTTP/1.1\r\nHost: edge\rX-Injected: 1\r\nConnection: close\r\n\r\n",
    ],
    ids=["space_before_colon", "bare_cr"],
)
def test_malformed_header_lines_get_one_json_400_and_the_connection_closes(edge: Edge, head: bytes) -> None:
    answered = responses_in(exchange(edge.server.port, head))
    assert answered == [
        (400, {"error": {"code": "malformed_request", "message": "the request is malformed", "details": None}})
    ]


def test_a_length_the_parser_cannot_frame_is_a_bad_framing_400(edge: Edge) -> None:
    raw = b"POST /api/users HTTP/1.1\r\nHost: edge\r\nContent-Length: 1, 2\r\n\r\nab"
    [(status, body)] = responses_in(exchange(edge.server.port, raw))
    assert (status, body["error"]["code"]) == (400, "bad_framing")


def test_slow_uploaders_do_not_hold_up_other_requests(edge: Edge) -> None:
    """32 clients each declare a body and send one byte of it: the core waits for all 32 bodies
    (http.server held a thread per body and stopped answering anyone)."""
    uploaders = []
    try:
        for number in range(32):
            sock = socket.create_connection(("127.0.0.1", edge.server.port), timeout=5)
            uploaders.append(sock)
            sock.sendall(
                b"POST /api/users HTTP/1.1\r\nHost: edge\r\nCF-Connecting-IP: 203.0.113.%d\r\n%s"
                b"Content-Length: 1000\r\n\r\n{" % (number + 1, SIGN_UP_HEADERS)
            )
        time.sleep(0.2)  # the uploads reach the core and wait for their bodies
        for _ in range(3):
            health = call(edge.url, "GET", "/healthz")  # a 10 s socket timeout fails a stuck server
            assert health.status == 200 and health.json()["checks"]["origin"] == "ok"
        # The uploads are still waiting for their bodies, not refused.
        uploaders[0].settimeout(0.2)
        with pytest.raises(TimeoutError):
            uploaders[0].recv(1)
    finally:
        for sock in uploaders:
            sock.close()


def test_a_body_that_finishes_slowly_is_still_forwarded(edge: Edge) -> None:
    body = b'{"email": "slow@example.com"}'
    with socket.create_connection(("127.0.0.1", edge.server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/users HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n%sContent-Length: %d\r\n\r\n"
            % (SIGN_UP_HEADERS, len(body))
        )
        for at in range(0, len(body), 8):
            sock.sendall(body[at : at + 8])
            time.sleep(0.02)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    [(status, echo)] = responses_in(bytes(received))
    assert status == 200 and json.loads(echo["body"]) == {"email": "slow@example.com"}


class _PeerRecorder:
    """An origin that answers every request with 200 and remembers which client port it came from."""

    def __init__(self) -> None:
        self.peers: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.peers.append(int(scope["client"][1]))
        body = b'{"ok": true}'
        # no-store: every request must reach the origin, none answered from the edge cache.
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_origin_connections_are_kept_alive(tmp_path: Path) -> None:
    origin = _PeerRecorder()
    with BackgroundServer(origin, "127.0.0.1", 0, name="origin") as server:
        edge = start_edge(tmp_path, server.url)
        try:
            for _ in range(10):
                assert call(edge.url, "GET", "/api/events").status == 200
        finally:
            edge.server.stop()
    assert len(origin.peers) == 10
    assert len(set(origin.peers)) == 1, origin.peers  # one connection, reused


def test_a_stopped_server_can_start_again_at_once_on_its_port(tmp_path: Path) -> None:
    with running_origin(USER) as origin:
        first = start_edge(tmp_path / "first", origin_url(origin))
        port = first.server.port
        # Connection: close makes the server close first: its side of each connection waits in TIME_WAIT.
        for _ in range(3):
            assert call(first.url, "GET", "/healthz", {"Connection": "close"}).status == 200
        first.server.stop()
        ensure_port_free("127.0.0.1", port, "edge")  # what `agistack dev` checks first
        again = start_edge(tmp_path / "again", origin_url(origin), port=port)
        try:
            assert again.server.port == port
            assert call(again.url, "GET", "/healthz").status == 200
            # A port something listens on is still in use.
            assert not port_is_free("127.0.0.1", port)
            with pytest.raises(PortInUse, match=f"port {port} .* already in use"):
                ensure_port_free("127.0.0.1", port, "edge")
        finally:
            again.server.stop()


def test_stop_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    release = threading.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        import asyncio

        await asyncio.to_thread(release.wait, 5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = BackgroundServer(slow, "127.0.0.1", 0, name="slow")
    server.start()
    replies: list[bytes] = []
    client = threading.Thread(
        target=lambda: replies.append(exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    )
    client.start()
    time.sleep(0.2)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.2)
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pytest.fail("a stopping server accepted a new connection")
    release.set()
    stopper.join(10)
    client.join(10)
    assert replies and replies[0].startswith(b"HTTP/1.1 200") and replies[0].endswith(b"ok")


def test_listening_sockets_say_they_are_tcp() -> None:
    """asyncio disables Nagle's algorithm only on sockets created with IPPROTO_TCP: with proto 0 each
    kept-alive answer waited ~40 ms for the peer's delayed ACK."""
    sock = bind_listening("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
