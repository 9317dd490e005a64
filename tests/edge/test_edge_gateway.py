"""The gateway end to end over real HTTP: the real EdgeServer (the core plus local adapters, KV in
SQLite) in front of a fake origin that verifies every request's signed envelope, as the API does.

Every request comes from its own client address (``CF-Connecting-IP``, trusted as behind Cloudflare)
so that the per-IP rate limits, tested in the conformance suite, stay out of the way here. Turnstile
uses Cloudflare's always-pass test secret, answered offline by the local adapter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from edge_workers.core.config import ConfigurationError, GatewayConfig
from edge_workers.local import EdgeServer, SqliteKv
from shared.envelope import Identity, verify
from shared.errors import Unauthorized, internal_error_body
from tests.shared.keys import b64url, p256_point

SECRET = "edge-test-signing-secret-" + "x" * 32
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
USER = {"id": 42, "email": "ada@example.com", "name": "Ada", "role": "user"}
PASSWORD = "correct horse battery staple"
SESSION_COOKIE = re.compile(r"^__Host-session=([A-Za-z0-9_-]{43}); ")
PASSING_TURNSTILE_SECRET = "1x0000000000000000000000000000000AA"
TURNSTILE = {"cf-turnstile-response": "XXXX.DUMMY.TOKEN.XXXX"}
_CLIENTS = itertools.count(1)


# --- a fake origin that trusts only the edge ---------------------------------------------------


class _OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _OriginServer

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.received.append({"method": self.command, "path": self.path, "headers": headers})
        if self.path == "/healthz":
            self._json(200, {"status": "ok"})
            return
        try:
            identity = verify(
                SECRET, method=self.command, path=self.path, headers=headers, body=body, now=int(time.time())
            )
        except Unauthorized as exc:
            self._json(401, exc.body())
            return
        if self.path == "/auth/login":
            credentials = json.loads(body)
            if credentials.get("password") == PASSWORD:
                self._json(200, {"user": self.server.login_user}, {"Set-Cookie": "origin_cookie=1; Path=/"})
            else:
                self._json(401, {"error": {"code": "bad_credentials", "message": "no", "details": None}})
            return
        if self.path.startswith("/redirect"):
            self._json(302, {}, {"Location": "/events/1"})
            return
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/drip"):
            # Each write well inside a per-operation socket timeout, the whole answer far beyond the deadline.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "12")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for byte in b'{"drip": 1} ':
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.15)
            return
        echo = {
            "method": self.command,
            "path": self.path,
            "identity": identity._asdict() if identity else None,
            "headers": headers,
            "body": body.decode("utf-8"),
        }
        # An echo must not be cached: each test wants to see its own request arrive.
        self._json(200, echo, {"X-Origin-Internal": "not for clients", "Cache-Control": "no-store"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _json(self, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            # The edge may have given up already (the /slow case): that is not an error here.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[dict[str, Any]]
    login_user: Mapping[str, Any]


@contextlib.contextmanager
def running_origin(login_user: Mapping[str, Any]) -> Iterator[_OriginServer]:
    server = _OriginServer(("127.0.0.1", 0), _OriginHandler)
    server.received = []
    server.login_user = login_user
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[_OriginServer]:
    with running_origin(USER) as server:
        yield server


def origin_url(server: _OriginServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


# --- the edge under test ------------------------------------------------------------------------


@dataclass
class Edge:
    server: EdgeServer
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url


class ListSink:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def write(self, record: Mapping[str, object]) -> None:
        # Through JSON, as a log line would go: the record must serialise.
        self.records.append(json.loads(json.dumps(record)))


def start_edge(data_dir: Path, origin: str, *, port: int = 0, **env: str) -> Edge:
    config = GatewayConfig.from_mapping(
        {
            "EDGE_SIGNING_SECRET": SECRET,
            "STEPPERSLIFE_ORIGIN": origin,
            "TURNSTILE_SECRET_KEY": PASSING_TURNSTILE_SECRET,
            **env,
        }
    )
    records: list[dict[str, Any]] = []
    server = EdgeServer("127.0.0.1", port, data_dir, config, log_sink=ListSink(records), trust_cf_connecting_ip=True)
    server.start()
    return Edge(server, records)


@pytest.fixture(scope="module")
def edge(origin: _OriginServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    running = start_edge(tmp_path_factory.mktemp("edge"), origin_url(origin))
    yield running
    running.server.stop()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base_url: str,
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request with the target sent exactly as given (no client-side normalisation)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        given = {name.lower() for name in (headers or {})}
        if "cf-connecting-ip" not in given:
            number = next(_CLIENTS)
            conn.putheader("CF-Connecting-IP", f"198.51.{number // 250 % 250}.{number % 250 + 1}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and "content-length" not in given and "transfer-encoding" not in given:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def login(edge: Edge, extra_headers: Mapping[str, str] | None = None) -> tuple[str, Reply]:
    """Log in; return the ``__Host-session=<id>`` pair to send back, and the reply."""
    reply = call(
        edge.url,
        "POST",
        "/api/auth/login",
        {"Content-Type": "application/json", **TURNSTILE, **(extra_headers or {})},
        json.dumps({"email": USER["email"], "password": PASSWORD}).encode(),
    )
    assert reply.status == 200, reply.body
    match = SESSION_COOKIE.match(reply.headers["Set-Cookie"])
    assert match, reply.headers["Set-Cookie"]
    return f"__Host-session={match.group(1)}", reply


def session_record(edge: Edge, cookie: str) -> str | None:
    """Read SESSION_KV through a second connection to its file, as a restarted server would."""
    store = SqliteKv(edge.server.data_dir / "kv" / "SESSION_KV.sqlite3")
    try:
        return asyncio.run(store.get("session:" + cookie.split("=", 1)[1]))
    finally:
        store.close()


def assert_security_headers(reply: Reply) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers[name] == value, name
    assert re.match(r"^[A-Za-z0-9._-]{8,128}$", reply.headers["X-Request-Id"] or "")


def assert_error(reply: Reply, status: int, code: str | None = None) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    error = reply.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code
    assert_security_headers(reply)


# --- proxying and the envelope ------------------------------------------------------------------


def test_api_is_proxied_with_prefix_stripped_and_query_kept(edge: Edge) -> None:
    reply = call(edge.url, "GET", "/api/events?x=1")
    assert reply.status == 200
    echo = reply.json()
    assert echo["method"] == "GET"
    assert echo["path"] == "/events?x=1"
    assert reply.headers["Content-Type"] == "application/json"
    assert_security_headers(reply)


def test_query_is_canonicalised_before_signing(edge: Edge) -> None:
    # The origin verifies the signature over the target it receives, so any accepted form works.
    reply = call(edge.url, "GET", "/api/events?z=last&a=first+one&a=second&empty=")
    assert reply.status == 200
    assert reply.json()["path"] == "/events?a=first%20one&a=second&empty=&z=last"


def test_envelope_is_signed_and_anonymous_without_a_session(edge: Edge) -> None:
    echo = call(edge.url, "GET", "/api/events").json()
    assert echo["identity"] is None
    assert echo["headers"]["x-agistack-signature"].startswith("v1=")
    assert echo["headers"]["x-agistack-identity"] == ""


def test_session_identity_is_forwarded_in_the_envelope(edge: Edge) -> None:
    cookie, _ = login(edge)
    read = call(edge.url, "GET", "/api/events/mine", {"Cookie": cookie}).json()
    assert read["identity"] == {
        "user_id": "42",
        "role": "user",
        "email": "ada@example.com",
        "product": "stepperslife",
        "generation": 0,
    }
    write = call(
        edge.url, "POST", "/api/events", {"Cookie": cookie, "Content-Type": "application/json"}, b'{"title": "x"}'
    )
    assert write.status == 200
    assert write.json()["identity"]["user_id"] == "42"
    assert write.json()["body"] == '{"title": "x"}'


def test_client_cannot_spoof_the_identity(edge: Edge) -> None:
    admin = Identity(user_id="1", role="admin", email="root@example.com")
    forged = {
        "X-Agistack-Identity": base64.urlsafe_b64encode(admin.to_json().encode()).decode().rstrip("="),
        "X-Agistack-Timestamp": str(int(time.time())),
        "X-Agistack-Signature": "v1=" + "0" * 64,
    }
    anonymous = call(edge.url, "GET", "/api/events", forged)
    assert anonymous.status == 200
    assert anonymous.json()["identity"] is None

    cookie, _ = login(edge)
    as_user = call(edge.url, "POST", "/api/events", {**forged, "Cookie": cookie}, b"{}")
    assert as_user.status == 200
    assert as_user.json()["identity"]["role"] == "user"


def test_only_safe_headers_reach_the_origin(edge: Edge) -> None:
    cookie, _ = login(edge)
    echo = call(
        edge.url,
        "POST",
        "/api/events",
        {
            "Cookie": cookie + "; theme=dark",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": "idem-123",
            "X-Forwarded-For": "10.0.0.1",
            "Proxy-Authorization": "Basic abc",
            "Upgrade": "websocket",
        },
        b"{}",
    ).json()
    forwarded = echo["headers"]
    for dropped in ("cookie", "x-forwarded-for", "proxy-authorization", "upgrade"):
        assert dropped not in forwarded, dropped
    assert forwarded["content-type"] == "application/json"
    assert forwarded["accept"] == "application/json"
    assert forwarded["idempotency-key"] == "idem-123"


def test_origin_response_headers_are_filtered_and_redirects_not_followed(edge: Edge) -> None:
    reply = call(edge.url, "GET", "/api/events")
    assert reply.headers["X-Origin-Internal"] is None
    redirect = call(edge.url, "GET", "/api/redirect")
    assert redirect.status == 302
    assert redirect.headers["Location"] == "/api/events/1"


def test_head_is_forwarded_without_a_body(edge: Edge) -> None:
    reply = call(edge.url, "HEAD", "/api/events")
    assert reply.status == 200
    assert reply.body == b""
    assert_security_headers(reply)


# --- sessions -----------------------------------------------------------------------------------


def test_login_sets_a_host_cookie_and_stores_the_session(edge: Edge) -> None:
    cookie, reply = login(edge)
    assert reply.json() == {"user": USER}
    set_cookies = reply.headers.get_all("Set-Cookie") or []
    assert len(set_cookies) == 1, "the origin's own cookie must not pass"
    attributes = [part.strip() for part in set_cookies[0].split(";")][1:]
    assert sorted(attributes) == sorted(["Path=/", "HttpOnly", "Secure", "SameSite=Lax", "Max-Age=86400"])
    assert reply.headers["Cache-Control"] == "no-store"
    assert_security_headers(reply)

    record = json.loads(session_record(edge, cookie) or "null")
    assert record["identity"] == {
        "user_id": "42",
        "role": "user",
        "email": "ada@example.com",
        "product": "stepperslife",
        "generation": 0,
    }
    assert record["expires_at"] - record["created_at"] == 86400


def test_every_login_gets_a_new_session_id(edge: Edge) -> None:
    first, _ = login(edge)
    second, _ = login(edge, {"Cookie": first})
    assert first != second
    # The id the client held before logging in is dead: a planted cookie is worth nothing.
    assert session_record(edge, first) is None
    assert_error(call(edge.url, "POST", "/api/events", {"Cookie": first}, b"{}"), 401)
    assert call(edge.url, "POST", "/api/events", {"Cookie": second}, b"{}").status == 200


def test_failed_login_relays_the_origin_answer_and_sets_no_cookie(edge: Edge) -> None:
    reply = call(
        edge.url, "POST", "/api/auth/login", {"Content-Type": "application/json", **TURNSTILE}, b'{"password": "no"}'
    )
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "bad_credentials"
    assert reply.headers["Set-Cookie"] is None
    assert_security_headers(reply)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_without_a_session_are_refused(edge: Edge, method: str) -> None:
    before = len(edge.records)
    reply = call(edge.url, method, "/api/events/1", {"Content-Type": "application/json"}, b"{}")
    assert_error(reply, 401, "unauthorized")
    assert len(edge.records) == before + 1


def test_refused_writes_do_not_wait_for_the_body(edge: Edge) -> None:
    # 1000 bytes declared, none sent: an edge that read before refusing would never answer (the
    # client's socket timeout would fail the call).
    reply = call(edge.url, "POST", "/api/events", {"Content-Length": "1000"}, b"")
    assert_error(reply, 401)
    assert reply.headers["Connection"] == "close"


def test_unknown_or_malformed_session_cookies_are_refused_and_cleared(edge: Edge) -> None:
    for cookie in ("__Host-session=" + "A" * 43, "__Host-session=short", "__Host-session=" + "!" * 43):
        reply = call(edge.url, "POST", "/api/events", {"Cookie": cookie}, b"{}")
        assert_error(reply, 401, "unauthorized")
        assert (reply.headers["Set-Cookie"] or "").startswith("__Host-session=; ")
        assert "Max-Age=0" in reply.headers["Set-Cookie"]


def test_sign_up_needs_no_session(edge: Edge) -> None:
    reply = call(
        edge.url, "POST", "/api/users", {"Content-Type": "application/json", **TURNSTILE}, b'{"email": "x@y.z"}'
    )
    assert reply.status == 200
    assert reply.json()["path"] == "/users"
    assert reply.json()["identity"] is None


def test_sign_up_exemption_does_not_survive_normalisation(edge: Edge) -> None:
    reply = call(edge.url, "POST", "/api/users/../events", {"Content-Type": "application/json"}, b"{}")
    assert_error(reply, 401)


def test_logout_invalidates_the_session(edge: Edge) -> None:
    cookie, _ = login(edge)
    assert call(edge.url, "POST", "/api/events", {"Cookie": cookie}, b"{}").status == 200
    reply = call(edge.url, "POST", "/api/auth/logout", {"Cookie": cookie}, b"")
    assert reply.status == 204
    assert reply.body == b""
    assert (reply.headers["Set-Cookie"] or "").startswith("__Host-session=; ")
    assert_security_headers(reply)
    assert session_record(edge, cookie) is None
    assert_error(call(edge.url, "POST", "/api/events", {"Cookie": cookie}, b"{}"), 401)
    # Logging out twice is harmless.
    assert call(edge.url, "POST", "/api/auth/logout", {"Cookie": cookie}, b"").status == 204


# --- request ids, headers, limits, paths ----------------------------------------------------------


def test_request_id_is_generated_when_absent(edge: Edge, origin: _OriginServer) -> None:
    reply = call(edge.url, "GET", "/api/events")
    generated = reply.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated or "")
    assert reply.json()["headers"]["x-request-id"] == generated


def test_request_id_is_propagated_when_well_formed(edge: Edge) -> None:
    reply = call(edge.url, "GET", "/api/events", {"X-Request-Id": "client-req.0001_ok"})
    assert reply.headers["X-Request-Id"] == "client-req.0001_ok"
    assert reply.json()["headers"]["x-request-id"] == "client-req.0001_ok"


@pytest.mark.parametrize("offered", ["short", "has space in it", "x" * 129, "semi;colon-123", "ünïcode-12345"])
def test_malformed_request_ids_are_replaced(edge: Edge, offered: str) -> None:
    reply = call(edge.url, "GET", "/api/events", {"X-Request-Id": offered.encode().decode("latin-1")})
    assert reply.headers["X-Request-Id"] != offered
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-Id"] or "")


def test_oversize_declared_body_is_refused_without_reading_it(edge: Edge, origin: _OriginServer) -> None:
    cookie, _ = login(edge)
    seen = len(origin.received)
    # Declares 2 MiB and sends nothing: the answer must come from the declaration alone.
    reply = call(edge.url, "POST", "/api/events", {"Cookie": cookie, "Content-Length": str(2 * 1024 * 1024)}, b"")
    assert_error(reply, 413, "payload_too_large")
    assert reply.headers["Connection"] == "close"
    assert len(origin.received) == seen


def test_oversize_chunked_body_is_refused(edge: Edge) -> None:
    cookie, _ = login(edge)
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
    reply = call(edge.url, "POST", "/api/events", {"Cookie": cookie, "Transfer-Encoding": "chunked"}, body)
    assert_error(reply, 413)


def test_small_chunked_body_is_forwarded(edge: Edge) -> None:
    cookie, _ = login(edge)
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    reply = call(edge.url, "POST", "/api/events", {"Cookie": cookie, "Transfer-Encoding": "chunked"}, body)
    assert reply.status == 200
    assert reply.json()["body"] == "hello world"


def test_route_body_limit_is_per_route(edge: Edge) -> None:
    # Login takes small bodies only; the general API takes up to 1 MiB.
    reply = call(edge.url, "POST", "/api/auth/login", {"Content-Type": "application/json"}, b" " * 20000)
    assert_error(reply, 413)


@pytest.mark.parametrize(
    "framing",
    [{"Content-Length": "abc"}, {"Content-Length": "2", "Transfer-Encoding": "chunked"}, {"Transfer-Encoding": "gzip"}],
)
def test_ambiguous_framing_is_refused(edge: Edge, framing: dict[str, str]) -> None:
    reply = call(edge.url, "POST", "/api/users", framing, b"ab")
    assert_error(reply, 400, "bad_framing")
    assert reply.headers["Connection"] == "close"


@pytest.mark.parametrize("target", ["/api/../healthz", "/api/%2e%2e/healthz", "/api/events/%2E%2E/../healthz"])
def test_dot_segments_are_resolved_before_routing(edge: Edge, target: str) -> None:
    reply = call(edge.url, "GET", target)
    assert reply.status == 200
    assert reply.json()["checks"]["origin"] == "ok"


def test_duplicate_slashes_are_collapsed(edge: Edge) -> None:
    reply = call(edge.url, "GET", "//api//events///42")
    assert reply.status == 200
    assert reply.json()["path"] == "/events/42"


def test_traversal_cannot_escape_to_unknown_routes(edge: Edge) -> None:
    assert_error(call(edge.url, "GET", "/api/events/%2e%2e/%2e%2e/admin"), 404, "not_found")


def test_percent_encoded_characters_are_forwarded_canonically(edge: Edge) -> None:
    reply = call(edge.url, "GET", "/api/events/caf%C3%A9%20bar/%41")
    assert reply.json()["path"] == "/events/caf%C3%A9%20bar/A"


@pytest.mark.parametrize(
    "target",
    [
        "/api/events%2Fsecret",
        "/api/events%2fsecret",
        "/api/events%5Csecret",
        "/api/events%00",
        "/api/%252e%252e/healthz",
        "/api/events/%ff",
        "/api/events/%0d%0aX-Injected:1",
    ],
)
def test_ambiguous_paths_are_refused(edge: Edge, target: str) -> None:
    assert_error(call(edge.url, "GET", target), 400)


def test_unknown_paths_are_404(edge: Edge) -> None:
    assert_error(call(edge.url, "GET", "/nope"), 404, "not_found")
    assert_error(call(edge.url, "GET", "/api"), 404)


def test_wrong_method_is_405_with_allow(edge: Edge) -> None:
    reply = call(edge.url, "PUT", "/healthz", body=b"")
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET, HEAD"
    login_reply = call(edge.url, "GET", "/api/auth/login")
    assert_error(login_reply, 405)
    assert login_reply.headers["Allow"] == "POST"


def test_methods_http_server_does_not_know_get_json_errors(edge: Edge) -> None:
    reply = call(edge.url, "BREW", "/api/events")
    assert reply.status == 501
    assert_error(reply, 501)


# --- health, failures, logs ------------------------------------------------------------------------


def test_healthz_reports_kv_and_origin(edge: Edge) -> None:
    reply = call(edge.url, "GET", "/healthz")
    assert reply.status == 200
    assert reply.json()["status"] == "ok"
    assert reply.json()["checks"]["kv"] == "ok" and reply.json()["checks"]["origin"] == "ok"
    assert_security_headers(reply)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_origin_down_gives_502_and_degraded_health(tmp_path: Path) -> None:
    down = start_edge(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    try:
        assert_error(call(down.url, "GET", "/api/events"), 502, "upstream_unavailable")
        health = call(down.url, "GET", "/healthz")
        assert health.status == 503
        assert health.json() == {
            "status": "degraded",
            "checks": {"kv": "ok", "origin": "down", "origins": {"stepperslife": {"status": "down"}}},
        }
        assert_security_headers(health)
    finally:
        down.server.stop()


def test_slow_origin_gives_504(tmp_path: Path, origin: _OriginServer) -> None:
    impatient = start_edge(tmp_path, origin_url(origin), ORIGIN_TIMEOUT_SECONDS="0.3")
    try:
        assert_error(call(impatient.url, "GET", "/api/slow"), 504, "upstream_timeout")
        # The timeout bounds the whole exchange, not each read: a trickle does not keep it open.
        assert_error(call(impatient.url, "GET", "/api/drip"), 504, "upstream_timeout")
    finally:
        impatient.server.stop()


def test_unexpected_failure_is_500_without_details(tmp_path: Path, origin: _OriginServer) -> None:
    broken = start_edge(tmp_path, origin_url(origin))
    try:
        broken.server.kv["SESSION_KV"].close()  # the next session lookup fails inside the adapter
        reply = call(broken.url, "POST", "/api/events", {"Cookie": "__Host-session=" + "A" * 43}, b"{}")
        assert_error(reply, 500)
        assert reply.json() == internal_error_body()
        assert b"Traceback" not in reply.body and b"sqlite" not in reply.body.lower()
        assert broken.records[-1]["status"] == 500
        assert broken.records[-1]["error"] == "ProgrammingError"
    finally:
        broken.server.stop()


def test_one_log_line_per_request_without_secrets(edge: Edge) -> None:
    start = len(edge.records)
    cookie, _ = login(edge)
    call(edge.url, "GET", "/api/events?token=very-secret-query", {"Cookie": cookie, "X-Request-Id": "log-check-0001"})
    records = edge.records[start:]
    assert len(records) == 2
    last = records[-1]
    assert {"method", "path", "status", "duration_ms", "request_id"} <= set(last)
    assert (last["method"], last["path"], last["status"], last["request_id"]) == (
        "GET",
        "/api/events",
        200,
        "log-check-0001",
    )
    assert isinstance(last["duration_ms"], float | int)
    logged = json.dumps(records)
    for secret in (cookie.split("=", 1)[1], SECRET, "very-secret-query", PASSWORD):
        assert secret not in logged


def test_port_in_use_fails_at_start(edge: Edge, tmp_path: Path) -> None:
    with pytest.raises(OSError), EdgeServer("127.0.0.1", edge.server.port, tmp_path, edge.server.config):
        pytest.fail("a second server bound the same port")


def test_configuration_names_what_is_missing() -> None:
    with pytest.raises(ConfigurationError, match="EDGE_SIGNING_SECRET, STEPPERSLIFE_ORIGIN"):
        GatewayConfig.from_mapping({})
    with pytest.raises(ConfigurationError, match="at least 32"):
        GatewayConfig.from_mapping({"EDGE_SIGNING_SECRET": "short", "STEPPERSLIFE_ORIGIN": "http://x"})
    with pytest.raises(ConfigurationError, match="STEPPERSLIFE_ORIGIN"):
        GatewayConfig.from_mapping({"EDGE_SIGNING_SECRET": SECRET, "STEPPERSLIFE_ORIGIN": "ftp://x"})
    with pytest.raises(ConfigurationError, match="SESSION_TTL_SECONDS"):
        GatewayConfig.from_mapping(
            {"EDGE_SIGNING_SECRET": SECRET, "STEPPERSLIFE_ORIGIN": "http://x", "SESSION_TTL_SECONDS": "30"}
        )
    config = GatewayConfig.from_mapping({"EDGE_SIGNING_SECRET": SECRET, "STEPPERSLIFE_ORIGIN": "https://api.x/v1/"})
    assert config.origins == {"stepperslife": "https://api.x/v1"}
    assert config.session_ttl_seconds == 86400
    assert SECRET not in repr(config)


# --- local-development behaviour ----------------------------------------------------------------------


def test_turnstile_test_keys_behave_as_documented_offline(tmp_path: Path, origin: _OriginServer) -> None:
    # No route to Cloudflare: the configured siteverify URL points at a closed port.
    unreachable = f"http://127.0.0.1:{_closed_port()}/siteverify"
    expected = {
        "1x0000000000000000000000000000000AA": (200, None),
        "2x0000000000000000000000000000000AA": (403, ["invalid-input-response"]),
        "3x0000000000000000000000000000000AA": (403, ["timeout-or-duplicate"]),
        "a-real-secret": (503, None),
    }
    for number, (secret, (status, codes)) in enumerate(expected.items()):
        local = start_edge(
            tmp_path / str(number),
            origin_url(origin),
            TURNSTILE_SECRET_KEY=secret,
            TURNSTILE_SITEVERIFY_URL=unreachable,
        )
        try:
            reply = call(local.url, "POST", "/api/users", {"Content-Type": "application/json", **TURNSTILE}, b"{}")
            assert reply.status == status, (secret, reply.body)
            if codes is not None:
                assert reply.json()["error"]["details"] == {"error-codes": codes}
        finally:
            local.server.stop()


def test_client_supplied_cf_connecting_ip_is_ignored_unless_trusted(tmp_path: Path, origin: _OriginServer) -> None:
    config = GatewayConfig.from_mapping(
        {
            "EDGE_SIGNING_SECRET": SECRET,
            "STEPPERSLIFE_ORIGIN": origin_url(origin),
            "TURNSTILE_SECRET_KEY": PASSING_TURNSTILE_SECRET,
        }
    )
    with EdgeServer("127.0.0.1", 0, tmp_path, config, log_sink=ListSink([])) as local:
        statuses = [
            call(
                local.url,
                "POST",
                "/api/auth/login",
                {"Content-Type": "application/json", "CF-Connecting-IP": f"198.51.100.{number}", **TURNSTILE},
                b'{"password": "wrong"}',
            ).status
            for number in range(1, 7)
        ]
    # Six different claimed addresses, one real peer: the login limit (5 a minute) still applies.
    assert statuses == [401] * 5 + [429]


def test_the_push_router_is_served_under_push_when_configured(tmp_path: Path, origin: _OriginServer) -> None:
    vapid = b64url(p256_point(1))
    with_push = start_edge(tmp_path / "push", origin_url(origin), VAPID_PUBLIC_KEY=vapid)
    try:
        reply = call(with_push.url, "GET", "/push/vapid-public-key")
        assert reply.status == 200 and reply.json() == {"publicKey": vapid}
        assert with_push.records[-1]["worker"] == "push"
        # Elsewhere it is the gateway; and the push router answers only its own routes.
        assert call(with_push.url, "GET", "/healthz").status == 200
        assert_error(call(with_push.url, "GET", "/push/other"), 404)
    finally:
        with_push.server.stop()
    plain = start_edge(tmp_path / "plain", origin_url(origin))
    try:
        assert_error(call(plain.url, "GET", "/push/vapid-public-key"), 404)
    finally:
        plain.server.stop()


# --- two products, one session cookie -----------------------------------------------------------

AGI_USER = {"id": "7f0c7a52-5f37-4a8e-9a57-0d3c1f1e2b11", "email": "owner@hosting.example", "role": "owner"}


@pytest.fixture(scope="module")
def two_products(origin: _OriginServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_origin(AGI_USER) as agi_origin:
        running = start_edge(
            tmp_path_factory.mktemp("edge-two-products"),
            origin_url(origin),
            AGISTAFFERS_ORIGIN=origin_url(agi_origin),
        )
        yield running
        running.server.stop()


def product_login(edge: Edge, path: str) -> str:
    body = json.dumps({"email": "x@example.com", "password": PASSWORD}).encode()
    reply = call(edge.url, "POST", path, {"Content-Type": "application/json", **TURNSTILE}, body)
    assert reply.status == 200, reply.body
    match = SESSION_COOKIE.match(reply.headers["Set-Cookie"])
    assert match, reply.headers["Set-Cookie"]
    return f"__Host-session={match.group(1)}"


def test_an_agi_staffers_session_names_its_product_and_reaches_only_its_origin(two_products: Edge) -> None:
    cookie = product_login(two_products, "/api/agi/auth/login")
    mine = call(two_products.url, "GET", "/api/agi/me", {"Cookie": cookie}).json()
    assert mine["identity"] == {
        "user_id": AGI_USER["id"],
        "email": AGI_USER["email"],
        "role": AGI_USER["role"],
        "product": "agistaffers",
        "generation": 0,
    }
    # On SteppersLife's routes the same cookie is nobody: reads go out anonymous, writes are refused.
    read = call(two_products.url, "GET", "/api/events/mine", {"Cookie": cookie}).json()
    assert read["identity"] is None
    write = call(two_products.url, "POST", "/api/events", {"Cookie": cookie, "Content-Type": "application/json"}, b"{}")
    assert write.status == 401 and write.json()["error"]["code"] == "unauthorized"


def test_a_stepperslife_session_is_nobody_on_agi_staffers_routes(two_products: Edge) -> None:
    cookie = product_login(two_products, "/api/auth/login")
    read = call(two_products.url, "GET", "/api/agi/sites", {"Cookie": cookie}).json()
    assert read["identity"] is None
    write = call(
        two_products.url, "POST", "/api/agi/sites", {"Cookie": cookie, "Content-Type": "application/json"}, b"{}"
    )
    assert write.status == 401
    own = call(two_products.url, "GET", "/api/events/mine", {"Cookie": cookie}).json()
    assert own["identity"]["product"] == "stepperslife"


def test_an_origin_cannot_mint_another_products_role(two_products: Edge, origin: _OriginServer) -> None:
    """SteppersLife's login answer names role "user": under /api/agi/ that is no AGI Staffers role,
    so no session is made from it (the product is the route's, the role must be that product's)."""
    with running_origin(USER) as lying:
        edge = start_edge(
            two_products.server.data_dir / "lying", origin_url(origin), AGISTAFFERS_ORIGIN=origin_url(lying)
        )
        try:
            body = json.dumps({"email": "x@example.com", "password": PASSWORD}).encode()
            reply = call(
                edge.url, "POST", "/api/agi/auth/login", {"Content-Type": "application/json", **TURNSTILE}, body
            )
            assert reply.status == 502
            assert "Set-Cookie" not in reply.headers
        finally:
            edge.server.stop()


def test_the_metrics_ingest_route_forwards_the_sites_token_and_no_identity(two_products: Edge) -> None:
    """A site's agent has no session: its bearer token is the origin's to check, never read as a JWT,
    and it is forwarded on this route only."""
    headers = {"Authorization": "Bearer agi_ingest_abc", "Content-Type": "application/x-ndjson"}
    reply = call(two_products.url, "POST", "/api/agi/metrics", headers, b'{"metric":"up","value":1,"at":1}\n')
    assert reply.status == 200, reply.body
    echo = reply.json()
    assert echo["path"] == "/metrics"
    assert echo["identity"] is None
    assert echo["headers"]["authorization"] == "Bearer agi_ingest_abc"
    assert echo["headers"]["content-type"] == "application/x-ndjson"
    elsewhere = call(two_products.url, "GET", "/api/agi/sites", {"X-Ingest-Token": "agi_ingest_abc"}).json()
    assert "x-ingest-token" not in elsewhere["headers"]
