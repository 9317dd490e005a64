"""The edge workers' core on CPython: local adapters for their ports and an HTTP server around them.

The counterpart of ``edge_workers/workers_adapters.py`` (the Workers FFI adapters): ``agistack dev``
(wired in ``devstack/edge_server.py``), the tests and the benchmarks serve the same
``edge_workers.core.gateway.handle`` that the workers run:
KV namespaces persist in SQLite files with Workers KV semantics, outbound fetch is urllib (in a
thread, never following redirects), the Rate Limiting binding is an in-memory fixed window, the
rate-limit Durable Object is the same ``SlidingWindowObject`` over in-memory storage (one object per
key in this one process: as strongly consistent as the real one), and Turnstile's documented test
secret keys are answered offline. One asyncio loop thread runs the core for every connection.

As on Cloudflare, where the push router is routed ``/push/*`` on the gateway's host, one server
serves both workers: ``/push/...`` goes to the push router when ``VAPID_PUBLIC_KEY`` is configured.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import io
import ipaddress
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_workers.core.composition import GATEWAY, PUSH, WorkerSpec, build, required_rate_limit_bindings, route_table
from edge_workers.core.config import GatewayConfig
from edge_workers.core.context import GatewayDeps
from edge_workers.core.gateway import handle, reject
from edge_workers.core.http import EdgeRequest, EdgeResponse, Headers, OutboundRequest
from edge_workers.core.ports import (
    KV_BINDINGS,
    KV_MAX_LIST_LIMIT,
    Clock,
    KvKey,
    KvListResult,
    LogSink,
    OriginClient,
    OriginTimeout,
    OriginUnavailable,
    SystemClock,
    check_kv_key,
    check_kv_keys,
    check_kv_list_limit,
    check_kv_put,
)
from edge_workers.core.ratelimit import SlidingWindowObject
from edge_workers.core.routes import Quota
from edge_workers.core.turnstile import HttpSiteverify, OfflineTestKeys
from shared.errors import AppError, BadRequest, PayloadTooLarge

log = logging.getLogger("agistack.edge")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_MAX_CHUNK_LINE = 1024
PUSH_MOUNT = "/push/"
_NO_CONTENT_STATUSES = (204, 304)


class SqliteKv:
    """One KV namespace in an SQLite file. Keys sort by UTF-8 bytes (SQLite's BINARY collation).

    Calls run on the caller's thread: a query on a small local file takes microseconds, less than
    handing it to a worker thread would (the lock keeps callers on other threads safe).
    """

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        # One connection shared by the worker threads, serialised by the lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of this process, just not a power cut, and costs no
        # fsync; without it every rate-limit count and session touch waits for the disk.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def get(self, key: str) -> str | None:
        check_kv_key(key)
        return self._get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        check_kv_keys(keys)
        with self._lock:
            rows = self._db.execute(
                f"SELECT key, value FROM kv WHERE key IN ({', '.join('?' * len(keys))}) "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (*keys, self._clock.now()),
            ).fetchall()
        found = {str(key): str(value) for key, value in rows}
        return {key: found.get(key) for key in keys}

    async def put(self, key: str, value: str, *, expiration_ttl: int | None = None) -> None:
        check_kv_put(key, value, expiration_ttl)
        self._put(key, value, expiration_ttl)

    async def delete(self, key: str) -> None:
        check_kv_key(key)
        self._delete(key)

    async def list(
        self, *, prefix: str = "", limit: int = KV_MAX_LIST_LIMIT, cursor: str | None = None
    ) -> KvListResult:
        check_kv_list_limit(limit)
        after = _decode_cursor(cursor) if cursor else ""
        return self._list(prefix, limit, after)

    def _get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, self._clock.now()),
            ).fetchone()
        return None if row is None else str(row[0])

    def _put(self, key: str, value: str, expiration_ttl: int | None) -> None:
        now = self._clock.now()
        expires_at = None if expiration_ttl is None else now + expiration_ttl
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
                self._db.execute(
                    "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    (key, value, expires_at),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kv WHERE key = ?", (key,))

    def _list(self, prefix: str, limit: int, after: str) -> KvListResult:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, expires_at FROM kv WHERE key > ? AND substr(key, 1, ?) = ? "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
                (after, len(prefix), prefix, self._clock.now(), limit + 1),
            ).fetchall()
        page = rows[:limit]
        keys = [KvKey(str(key), None if expires is None else int(expires)) for key, expires in page]
        if len(rows) > limit:
            return KvListResult(keys=keys, list_complete=False, cursor=_encode_cursor(keys[-1].name))
        return KvListResult(keys=keys, list_complete=True)


def _encode_cursor(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode("utf-8")).decode("ascii")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise ValueError("invalid list cursor") from exc


def open_local_kv(kv_dir: Path, *, clock: Clock | None = None) -> dict[str, SqliteKv]:
    """The workers' namespaces, one SQLite file each: ``<kv_dir>/<BINDING>.sqlite3``."""
    return {name: SqliteKv(kv_dir / f"{name}.sqlite3", clock=clock) for name in KV_BINDINGS}


class HttpOriginClient:
    """Outbound HTTP with ``http.client``, in a worker thread so the event loop never blocks.

    One connection per request, closed after it: kept alive, a connection to a server built on
    ``http.server`` (Chalice's local server among them) stalls about 40 ms per answer, the server's
    Nagle algorithm waiting on this side's delayed ACK between the header and body writes. Redirects
    are never followed (a 3xx goes back to the client: following it would send signed headers
    elsewhere) and proxy variables are ignored (an HTTP_PROXY must not capture origin traffic).
    """

    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: OutboundRequest) -> EdgeResponse:
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OriginUnavailable(f"refusing a non-HTTP origin URL {request.url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = connection_class(parts.hostname, parts.port, timeout=request.timeout)
        except ValueError as exc:  # a malformed port
            raise OriginUnavailable(f"invalid origin URL {request.url!r}") from exc
        deadline = time.monotonic() + request.timeout
        try:
            headers = {**dict(request.headers.items()), "connection": "close"}
            conn.request(request.method, target, body=request.body or None, headers=headers)
            _shorten(conn, deadline)
            response = conn.getresponse()
            body = bytearray()
            # Read in chunks, each within what is left: a per-read timeout alone lets a trickle run on.
            while True:
                _shorten(conn, deadline)
                chunk = response.read1(65536)
                if not chunk:
                    break
                body += chunk
            return _response(response.status, response.headers, bytes(body))
        except TimeoutError as exc:
            raise OriginTimeout(str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise OriginUnavailable(str(exc)) from exc
        finally:
            conn.close()


def _shorten(conn: http.client.HTTPConnection, deadline: float) -> None:
    """The socket's timeout cut to what is left before ``deadline`` (``TimeoutError`` once it passed)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the origin's deadline passed")
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _response(status: int, headers: Message, body: bytes) -> EdgeResponse:
    edge_headers = Headers()
    for name, value in headers.items():
        if name.lower() not in _HOP_BY_HOP:
            edge_headers.add(name, value)
    return EdgeResponse(status=status, headers=edge_headers, body=body)


class LocalRateLimitBinding:
    """The Rate Limiting binding's local stand-in: a fixed window per key from its first hit, in memory."""

    def __init__(self, quota: Quota, clock: Clock) -> None:
        self._quota = quota
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    async def limit(self, key: str) -> bool:
        now = self._clock.now()
        started, count = self._windows.get(key, (now, 0))
        if now >= started + self._quota.period:
            started, count = now, 0
        if count >= self._quota.limit:
            return False
        self._windows[key] = (started, count + 1)
        return True


class MemoryObjectStorage:
    """A Durable Object's storage for the local stand-in: the object lives as long as the server."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._values.get(key)

    async def put(self, key: str, value: str) -> None:
        self._values[key] = value


class LocalLimiterObjects:
    """The rate-limit Durable Object namespace in one process: one ``SlidingWindowObject`` per name."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._objects: dict[str, SlidingWindowObject] = {}

    async def hit(self, name: str, limit: int, window_ms: int) -> str:
        window = self._objects.get(name)
        if window is None:
            window = self._objects[name] = SlidingWindowObject(MemoryObjectStorage(), self._clock)
        return await window.hit(limit, window_ms)


class LoggingSink:
    """Request records as JSON lines on the ``agistack.edge`` logger."""

    def write(self, record: Mapping[str, object]) -> None:
        log.info(json.dumps(record, separators=(",", ":"), sort_keys=True))


class RequestTimeout(AppError):
    status = 408
    code = "request_timeout"


class _SocketBody:
    """The request body on the connection, read only when the core asks, and never past the limit."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Headers) -> None:
        self._rfile = rfile
        self._length = headers.get("content-length")
        self._coding = headers.get("transfer-encoding")
        self.consumed = self._length is None and self._coding is None

    async def read(self, limit: int) -> bytes:
        try:
            return await asyncio.to_thread(self._read, limit)
        except TimeoutError as exc:
            raise RequestTimeout("the request body did not arrive in time") from exc

    def _read(self, limit: int) -> bytes:
        if self._coding is not None:
            if self._coding.lower() != "chunked":
                # Bytes framed some other way cannot be found on the connection: refuse, then close.
                raise BadRequest("unsupported Transfer-Encoding", code="bad_framing")
            data = self._read_chunked(limit)
        elif self._length is None:
            return b""
        else:
            # The core has checked the declared length against the limit before asking.
            length = int(self._length)
            if length > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            data = self._rfile.read(length)
            if len(data) != length:
                raise BadRequest("the body ended before its declared length", code="bad_framing")
        self.consumed = True
        return data

    def _read_chunked(self, limit: int) -> bytes:
        data = bytearray()
        while True:
            line = self._rfile.readline(_MAX_CHUNK_LINE)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadRequest("malformed chunked body", code="bad_framing") from exc
            if size == 0:
                while self._rfile.readline(_MAX_CHUNK_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields carry nothing the gateway uses
                return bytes(data)
            if len(data) + size > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            data += self._rfile.read(size)
            self._rfile.readline(_MAX_CHUNK_LINE)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agistack-edge"
    # Headers and body go out in two writes: with Nagle's algorithm a keep-alive client would wait for
    # its own delayed ACK (~40 ms) before seeing the body.
    disable_nagle_algorithm = True
    timeout = 60  # seconds a client may stall mid-request before its connection is dropped
    server: _GatewayHTTPServer

    def _serve(self) -> None:
        deps = self.server.deps_for(self.path)
        try:
            headers = Headers(self.headers.items())
        except ValueError:
            self._write(reject(BadRequest("malformed header field"), deps, method=self.command), close=True)
            return
        body = _SocketBody(self.rfile, headers)
        request = EdgeRequest(
            method=self.command, target=self.path, headers=headers, body=body, client_ip=self._client_ip(headers)
        )
        future = asyncio.run_coroutine_threadsafe(handle(request, deps), self.server.loop)
        response = future.result()
        # Unread body bytes would be parsed as the next request: close instead.
        self._write(response, close=not body.consumed)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = _serve

    def _client_ip(self, headers: Headers) -> str:
        peer = str(self.client_address[0])
        if not self.server.trust_cf_connecting_ip:
            # Anyone can send CF-Connecting-IP to this server: only Cloudflare's is worth believing.
            return peer
        offered = headers.get("cf-connecting-ip") or ""
        try:
            return str(ipaddress.ip_address(offered))
        except ValueError:
            return peer

    def version_string(self) -> str:
        return self.server_version

    def _write(self, response: EdgeResponse, *, close: bool) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if close:
            self.close_connection = True
            self.send_header("connection", "close")
        if response.status not in _NO_CONTENT_STATUSES:
            self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Requests http.server refuses before routing (bad request line, unknown method, huge headers)
        # get the same JSON shape and headers as everything else.
        error = AppError(message or "the request is malformed", code=HTTPStatus(code).phrase.lower().replace(" ", "_"))
        error.status = code
        deps = self.server.deps_for(getattr(self, "path", "") or "/")
        self._write(reject(error, deps, method=getattr(self, "command", "") or ""), close=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the core writes one structured line per request."""


class _GatewayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        workers: Mapping[str, GatewayDeps],
        loop: asyncio.AbstractEventLoop,
        trust_cf_connecting_ip: bool,
    ) -> None:
        self.workers = workers
        self.loop = loop
        self.trust_cf_connecting_ip = trust_cf_connecting_ip
        super().__init__(address, _Handler)

    def deps_for(self, target: str) -> GatewayDeps:
        """The worker a path is routed to, as Cloudflare's route patterns do: ``/push/*`` or the gateway."""
        push = self.workers.get(PUSH.name)
        return push if push is not None and target.startswith(PUSH_MOUNT) else self.workers[GATEWAY.name]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is routine, not worth a traceback on stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class EdgeServer:
    """The edge workers served over HTTP on ``host:port``; KV data under ``data_dir/kv``.

    ``start()`` binds at once (a port in use raises ``OSError`` there) and serves from a background
    thread; ``stop()`` shuts down and closes the KV files. ``port=0`` picks a free port.
    ``trust_cf_connecting_ip`` takes the client address from ``CF-Connecting-IP``; only for a server
    that Cloudflare (or a test standing in for it) fronts: anyone else could set the header.
    """

    def __init__(
        self,
        host: str,
        port: int,
        data_dir: Path,
        config: GatewayConfig,
        *,
        origin: OriginClient | None = None,
        clock: Clock | None = None,
        log_sink: LogSink | None = None,
        trust_cf_connecting_ip: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.config = config
        self.trust_cf_connecting_ip = trust_cf_connecting_ip
        self._origin = origin or HttpOriginClient()
        self._clock = clock or SystemClock()
        self._log_sink = log_sink or LoggingSink()
        self.kv: dict[str, SqliteKv] = {}
        self.workers: dict[str, GatewayDeps] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: _GatewayHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("the edge server is already running")
        self.kv = open_local_kv(self.data_dir / "kv", clock=self._clock)
        try:
            self.workers = self._compose()
        except Exception:
            self._close_kv()
            raise
        loop = asyncio.new_event_loop()
        # Origin calls and KV calls each hold a thread while they wait: allow many at once.
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=32))
        try:
            httpd = _GatewayHTTPServer((self.host, self.port), self.workers, loop, self.trust_cf_connecting_ip)
        except OSError:
            loop.close()
            self._close_kv()
            raise
        self._loop, self._httpd = loop, httpd
        self.port = int(httpd.server_address[1])
        self._threads = [
            threading.Thread(target=loop.run_forever, name="edge-loop", daemon=True),
            # A short poll interval keeps stop() quick; the cost is an idle wake-up every 50 ms.
            threading.Thread(target=httpd.serve_forever, args=(0.05,), name="edge-http", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _compose(self) -> dict[str, GatewayDeps]:
        """The local composition root: both workers over the same KV files and local bindings."""
        specs: list[WorkerSpec] = [GATEWAY, *([PUSH] if self.config.vapid_public_key else [])]
        # Workers that declare the same binding share its counters (same namespace_id in wrangler.toml).
        quotas: dict[str, Quota] = {}
        for spec in specs:
            quotas.update(required_rate_limit_bindings(route_table(spec, self.config)))
        bindings = {name: LocalRateLimitBinding(quota, self._clock) for name, quota in quotas.items()}
        objects = LocalLimiterObjects(self._clock)
        siteverify = OfflineTestKeys(HttpSiteverify(self._origin, self.config.siteverify_url))
        return {
            spec.name: build(
                spec,
                self.config,
                stores=self.kv,
                origin=self._origin,
                siteverify=siteverify,
                bindings=bindings,
                objects=objects,
                clock=self._clock,
                log=self._log_sink,
            )
            for spec in specs
        }

    def stop(self) -> None:
        httpd, loop = self._httpd, self._loop
        if httpd is None or loop is None:
            return
        httpd.shutdown()
        httpd.server_close()
        loop.call_soon_threadsafe(loop.stop)
        for thread in self._threads:
            thread.join(timeout=10)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        self._close_kv()
        self._httpd, self._loop, self._threads = None, None, []

    def _close_kv(self) -> None:
        for store in self.kv.values():
            store.close()
        self.kv = {}

    def __enter__(self) -> EdgeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
