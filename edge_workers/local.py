"""The edge workers' core on CPython: local adapters for their ports and an HTTP server around them.

The counterpart of ``edge_workers/workers_adapters.py`` (the Workers FFI adapters): ``agistack dev``
(wired in ``devstack/edge_server.py``), the tests and the benchmarks serve the same
``edge_workers.core.gateway.handle`` that the workers run:
KV namespaces persist in SQLite files with Workers KV semantics, outbound fetch is a urllib3 pool of
kept-alive connections (in threads, never following redirects), the Rate Limiting binding is an
in-memory fixed window, the rate-limit Durable Object is the same ``SlidingWindowObject`` over
in-memory storage (one object per key in this one process: as strongly consistent as the real one),
and Turnstile's documented test secret keys are answered offline. The HTTP server is uvicorn on h11
(``edge_workers.local_server``); the core runs on its event loop, one task per request, as an
isolate runs it on Cloudflare.

As on Cloudflare, where the push router is routed ``/push/*`` on the gateway's host, one server
serves both workers: ``/push/...`` goes to the push router when ``VAPID_PUBLIC_KEY`` is configured.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import ipaddress
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import urllib3

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
from edge_workers.local_server import (
    BackgroundServer,
    Receive,
    Scope,
    Send,
    http_url,
    read_body,
    refusal_error,
    send_response,
)
from shared.errors import AppError, BadRequest

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
# The methods the local edge has always served; others get a 501 in the JSON shape.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
PUSH_MOUNT = "/push/"


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
    """Outbound HTTP over kept-alive connections (a urllib3 pool per origin), in a worker thread so
    the event loop never blocks; ``close()`` drops the pooled connections.

    A new connection per request cost the local edge most of its latency under load (a TCP handshake
    and a slot in the origin's accept queue each time). The pool hands each thread its own connection,
    and a connection the origin has closed while idle is noticed when taken from the pool. Redirects
    are never followed (a 3xx goes back to the client: following it would send signed headers
    elsewhere), nothing is retried (the core decides), and proxy variables are ignored (an HTTP_PROXY
    must not capture origin traffic).
    """

    def __init__(self, connections_per_origin: int = 64) -> None:
        self._pool = urllib3.PoolManager(num_pools=32, maxsize=connections_per_origin, retries=False)

    def close(self) -> None:
        self._pool.clear()

    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: OutboundRequest) -> EdgeResponse:
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OriginUnavailable(f"refusing a non-HTTP origin URL {request.url!r}")
        deadline = time.monotonic() + request.timeout
        # urllib3 would add a User-Agent of its own: the origin sees only what the core sends.
        headers = {"user-agent": urllib3.util.SKIP_HEADER, **dict(request.headers.items())}
        try:
            response = self._pool.request(
                request.method,
                request.url,
                body=request.body or None,
                headers=headers,
                timeout=urllib3.Timeout(total=request.timeout),
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
            )
            try:
                body = bytearray()
                # Read what has arrived, each read within what is left: a per-read timeout alone lets
                # a trickle run on.
                while chunk := _read_before(response, deadline):
                    body += chunk
            except BaseException:
                response.close()  # half read: the connection cannot be reused
                raise
            finally:
                response.release_conn()
            return _response(response.status, response.headers.items(), bytes(body))
        except urllib3.exceptions.NewConnectionError as exc:  # refused (urllib3 files it under timeouts)
            raise OriginUnavailable(str(exc)) from exc
        except (TimeoutError, urllib3.exceptions.TimeoutError) as exc:
            raise OriginTimeout(str(exc)) from exc
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            raise OriginUnavailable(str(exc)) from exc


def _read_before(response: Any, deadline: float) -> bytes:
    """The next bytes of ``response``'s body, waiting no later than ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the origin's deadline passed")
    connection = response.connection
    if connection is not None and connection.sock is not None:
        connection.sock.settimeout(left)
    return bytes(response.read1(65536))


def _response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> EdgeResponse:
    edge_headers = Headers()
    for name, value in headers:
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


class NotImplementedMethod(AppError):
    status = 501
    code = "not_implemented"


class _AsgiBody:
    """The request body as the ASGI server receives it, read only when the core asks, and never
    past the limit (a larger body is refused as soon as the limit is crossed)."""

    def __init__(self, receive: Receive, headers: Headers) -> None:
        self._receive = receive
        length = headers.get("content-length")
        self.consumed = headers.get("transfer-encoding") is None and length in (None, "0")

    async def read(self, limit: int) -> bytes:
        if self.consumed:
            return b""
        data = await read_body(self._receive, limit)
        self.consumed = True
        return data


class EdgeApp:
    """The workers as one ASGI app: ``/push/*`` to the push router when it is configured (as
    Cloudflare's route patterns do), everything else to the gateway."""

    def __init__(self, workers: Mapping[str, GatewayDeps], *, trust_cf_connecting_ip: bool) -> None:
        self.workers = workers
        self.trust_cf_connecting_ip = trust_cf_connecting_ip

    def deps_for(self, target: str) -> GatewayDeps:
        push = self.workers.get(PUSH.name)
        return push if push is not None and target.startswith(PUSH_MOUNT) else self.workers[GATEWAY.name]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        query = scope["query_string"].decode("latin-1")
        target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        method = scope["method"]
        deps = self.deps_for(target)
        try:
            headers = Headers((name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"])
        except ValueError:
            response, close = reject(BadRequest("malformed header field"), deps, method=method), True
        else:
            if method in KNOWN_METHODS:
                body = _AsgiBody(receive, headers)
                request = EdgeRequest(method, target, headers, body, self._client_ip(scope, headers))
                response = await handle(request, deps)
                # Unread body bytes would be parsed as the next request: close instead.
                close = not body.consumed
            else:
                refused = NotImplementedMethod(f"the method {method} is not supported")
                response, close = reject(refused, deps, method=method), True
        answer_headers = _asgi_headers(response)
        if close:
            answer_headers.append((b"connection", b"close"))  # h11 closes the connection after this answer
        await send_response(send, response.status, answer_headers, response.body)

    def _client_ip(self, scope: Scope, headers: Headers) -> str:
        peer = str(scope["client"][0]) if scope.get("client") else ""
        if not self.trust_cf_connecting_ip:
            # Anyone can send CF-Connecting-IP to this server: only Cloudflare's is worth believing.
            return peer
        offered = headers.get("cf-connecting-ip") or ""
        try:
            return str(ipaddress.ip_address(offered))
        except ValueError:
            return peer

    def refusal(self, error: h11.RemoteProtocolError | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """What a request the HTTP parser refused gets: the gateway's JSON error, headers and log line."""
        response = reject(refusal_error(error), self.workers[GATEWAY.name])
        return response.status, _asgi_headers(response), response.body


def _asgi_headers(response: EdgeResponse) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
        if name not in _HOP_BY_HOP
    ]


class EdgeServer:
    """The edge workers served over HTTP on ``host:port``; KV data under ``data_dir/kv``.

    ``start()`` binds at once (a port in use raises ``OSError`` there) and serves from a background
    thread (``edge_workers.local_server``: uvicorn on h11); ``stop()`` shuts down and closes the KV
    files. ``port=0`` picks a free port. ``trust_cf_connecting_ip`` takes the client address from
    ``CF-Connecting-IP``; only for a server that Cloudflare (or a test standing in for it) fronts:
    anyone else could set the header.
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
        self._own_origin = HttpOriginClient() if origin is None else None
        self._origin: OriginClient = origin or self._own_origin  # type: ignore[assignment]
        self._clock = clock or SystemClock()
        self._log_sink = log_sink or LoggingSink()
        self.kv: dict[str, SqliteKv] = {}
        self.workers: dict[str, GatewayDeps] = {}
        self._server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the edge server is already running")
        self.kv = open_local_kv(self.data_dir / "kv", clock=self._clock)
        try:
            self.workers = self._compose()
            app = EdgeApp(self.workers, trust_cf_connecting_ip=self.trust_cf_connecting_ip)
            # Origin calls wait in the executor's threads: allow many at once.
            server = BackgroundServer(app, self.host, self.port, name="edge-http", refusal=app.refusal)
            server.start()
        except BaseException:
            self._close_kv()
            raise
        self._server = server
        self.port = server.port

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
        server = self._server
        if server is None:
            return
        server.stop()
        if self._own_origin is not None:
            self._own_origin.close()
        self._close_kv()
        self._server = None

    def _close_kv(self) -> None:
        for store in self.kv.values():
            store.close()
        self.kv = {}

    def __enter__(self) -> EdgeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
