"""The gateway: one async function from an edge request to an edge response, whatever the runtime.

normalise path -> route -> body limit -> session -> handler (proxy with a signed envelope, login,
logout, health) -> security headers and request id -> one JSON log line. Errors become
``{"error": {...}}`` bodies here and only here.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from functools import cached_property

from shared.edge.config import ConfigurationError, GatewayConfig
from shared.edge.http import EdgeRequest, EdgeResponse, Headers, OutboundRequest
from shared.edge.paths import canonical_query, encode_path, normalise_path
from shared.edge.ports import (
    Clock,
    KvNamespaces,
    LogSink,
    OriginClient,
    OriginTimeout,
    OriginUnavailable,
    PrintLog,
    RandomSource,
    SystemClock,
    SystemRandom,
)
from shared.edge.routes import Auth, Handler, Route, RouteMethodNotAllowed, RouteTable
from shared.edge.sessions import (
    COOKIE_NAME,
    Session,
    SessionStore,
    cleared_cookie,
    session_cookie,
    session_id_from_cookies,
)
from shared.envelope import Identity, sign
from shared.errors import AppError, BadRequest, PayloadTooLarge, Unauthorized, UpstreamUnavailable, internal_error_body

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
}
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
_CONTENT_LENGTH = re.compile(r"^[0-9]{1,15}$")
# An allow-list: cookies, credentials, hop-by-hop fields and client-sent x-agistack-* never pass.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "accept-language", "idempotency-key")
# Set-Cookie from the origin is dropped: the edge alone owns the session cookie.
RELAYED_RESPONSE_HEADERS = (
    "content-type",
    "cache-control",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "content-language",
)
HEALTH_TIMEOUT_SECONDS = 3.0
_NO_BODY_METHODS = ("GET", "HEAD")


class GatewayTimeout(AppError):
    status = 504
    code = "upstream_timeout"


@dataclass(frozen=True)
class GatewayDeps:
    """Everything ``handle`` needs, chosen once by the runtime's composition root."""

    config: GatewayConfig
    kv: KvNamespaces
    origin: OriginClient
    clock: Clock = field(default_factory=SystemClock)
    random: RandomSource = field(default_factory=SystemRandom)
    log: LogSink = field(default_factory=PrintLog)
    routes: RouteTable = field(default_factory=RouteTable)

    def __post_init__(self) -> None:
        unknown = self.routes.origins() - set(self.config.origins)
        if unknown:
            raise ConfigurationError(f"routes refer to unconfigured origins: {', '.join(sorted(unknown))}")

    @cached_property
    def sessions(self) -> SessionStore:
        return SessionStore(
            self.kv.SESSION_KV, clock=self.clock, random=self.random, ttl_seconds=self.config.session_ttl_seconds
        )


@dataclass
class _Exchange:
    """What is known about the request in flight, for the handlers and the log line."""

    request: EdgeRequest
    request_id: str
    path: str = ""
    route: Route | None = None
    clear_cookie: bool = False
    error: str | None = None


async def handle(request: EdgeRequest, deps: GatewayDeps) -> EdgeResponse:
    started = deps.clock.monotonic()
    exchange = _Exchange(request=request, request_id=_request_id(request.headers, deps.random))
    try:
        response = await _dispatch(exchange, deps)
    except AppError as exc:
        exchange.error = exc.code
        response = _error_response(exc)
    except Exception as exc:
        # The last line of defence: the client learns nothing about the cause, the log learns its type.
        exchange.error = type(exc).__name__
        response = EdgeResponse.json(500, internal_error_body(), Headers({"cache-control": "no-store"}))
    return _finish(response, exchange, deps, started)


def reject(error: AppError, deps: GatewayDeps, *, method: str = "", raw_path: str = "") -> EdgeResponse:
    """The response for a request an adapter could not even parse: same shape, headers and log line."""
    started = deps.clock.monotonic()
    exchange = _Exchange(
        request=EdgeRequest(method=method, target=raw_path or "/"),
        request_id=deps.random.token_hex(16),
        error=error.code,
    )
    return _finish(_error_response(error), exchange, deps, started)


def _request_id(headers: Headers, random: RandomSource) -> str:
    offered = headers.get(REQUEST_ID_HEADER)
    if offered is not None and _REQUEST_ID.match(offered):
        return offered
    return random.token_hex(16)


def _error_response(error: AppError) -> EdgeResponse:
    response = EdgeResponse.json(error.status, error.body())
    response.headers.set("cache-control", "no-store")
    if isinstance(error, RouteMethodNotAllowed):
        response.headers.set("allow", error.allow)
    return response


def _finish(response: EdgeResponse, exchange: _Exchange, deps: GatewayDeps, started: float) -> EdgeResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.set(name, value)
    response.headers.set(REQUEST_ID_HEADER, exchange.request_id)
    if exchange.clear_cookie and "set-cookie" not in response.headers:
        response.headers.add("set-cookie", cleared_cookie())
    if exchange.request.method == "HEAD":
        response.body = b""
    deps.log.write(
        {
            "msg": "request",
            "method": exchange.request.method,
            # The path only: a query string may carry tokens.
            "path": exchange.path or exchange.request.raw_path[:256],
            "route": exchange.route.path if exchange.route else None,
            "status": response.status,
            "duration_ms": round((deps.clock.monotonic() - started) * 1000, 3),
            "request_id": exchange.request_id,
            "error": exchange.error,
        }
    )
    return response


async def _dispatch(exchange: _Exchange, deps: GatewayDeps) -> EdgeResponse:
    request = exchange.request
    exchange.path = normalise_path(request.raw_path)
    match = deps.routes.match(exchange.path, request.method)
    route = exchange.route = match.route
    _check_declared_length(request.headers, route.body_limit)

    cookies = request.headers.get_all("cookie")
    session_id = session_id_from_cookies(cookies)
    session: Session | None = None
    if session_id is not None and match.auth is not Auth.ANONYMOUS:
        session = await deps.sessions.load(session_id)
    if match.auth is Auth.REQUIRED and session is None:
        # A stale cookie is removed so the browser stops sending it.
        exchange.clear_cookie = any(COOKIE_NAME + "=" in header for header in cookies)
        raise Unauthorized("a valid session is required", code="unauthorized")
    # Read only now: a request refused above never costs the edge its body.
    body = await request.body.read(route.body_limit)

    if route.handler is Handler.HEALTH:
        return await _health(deps)
    if route.handler is Handler.LOGOUT:
        if session_id is not None:
            await deps.sessions.destroy(session_id)
        return EdgeResponse(204, Headers({"set-cookie": cleared_cookie(), "cache-control": "no-store"}))
    response = await _forward(exchange, deps, route, body, session.identity if session else None)
    if route.handler is Handler.LOGIN and response.status == 200:
        new_session = await deps.sessions.create(_login_identity(response.body))
        if session_id is not None:
            # The pre-login id dies with the login, so a planted cookie is worth nothing.
            await deps.sessions.destroy(session_id)
        response.headers.add("set-cookie", session_cookie(new_session.id, deps.config.session_ttl_seconds))
        response.headers.set("cache-control", "no-store")
    return response


def _check_declared_length(headers: Headers, limit: int) -> None:
    lengths = set(headers.get_all("content-length"))
    if lengths and headers.get("transfer-encoding") is not None:
        raise BadRequest("Content-Length and Transfer-Encoding together are ambiguous", code="bad_framing")
    if len(lengths) > 1 or any(not _CONTENT_LENGTH.match(value) for value in lengths):
        raise BadRequest("Content-Length is malformed", code="bad_framing")
    if lengths and int(next(iter(lengths))) > limit:
        # Refused on the declared length alone: the body is never read.
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")


async def _forward(
    exchange: _Exchange, deps: GatewayDeps, route: Route, body: bytes, identity: Identity | None
) -> EdgeResponse:
    if route.origin is None:
        raise RuntimeError(f"route {route.path} forwards but names no origin")
    base = deps.config.origins[route.origin]
    method = exchange.request.method
    query = canonical_query(exchange.request.raw_query)
    # The origin verifies the signature over the target it sees, relative to its base URL.
    target = encode_path(route.upstream_path(exchange.path)) + (f"?{query}" if query else "")
    if method in _NO_BODY_METHODS:
        body = b""
    headers = Headers()
    for name in FORWARDED_REQUEST_HEADERS:
        for value in exchange.request.headers.get_all(name):
            headers.add(name, value)
    headers.set(REQUEST_ID_HEADER, exchange.request_id)
    envelope = sign(
        deps.config.signing_secret,
        method=method,
        path=target,
        now=int(deps.clock.now()),
        identity=identity,
        body=body,
    )
    for name, value in envelope.items():
        headers.set(name, value)
    outbound = OutboundRequest(method, base + target, headers, body, deps.config.origin_timeout_seconds)
    try:
        upstream = await deps.origin.fetch(outbound)
    except OriginTimeout as exc:
        raise GatewayTimeout("the origin did not answer in time") from exc
    except OriginUnavailable as exc:
        raise UpstreamUnavailable("the origin is unavailable") from exc
    relayed = Headers()
    for name in RELAYED_RESPONSE_HEADERS:
        for value in upstream.headers.get_all(name):
            relayed.add(name, _edge_location(value, base, route) if name == "location" else value)
    return EdgeResponse(upstream.status, relayed, upstream.body)


def _edge_location(location: str, base: str, route: Route) -> str:
    """A Location from the origin, rewritten to the edge's address space."""
    if location.startswith(base + "/"):
        location = location[len(base) :]
    if location.startswith("/") and not location.startswith("//"):
        return route.strip_prefix + location
    return location


def _login_identity(body: bytes) -> Identity:
    """The identity in the origin's login answer ``{"user": {"id", "email", "name", "role"}}``."""
    try:
        user = json.loads(body)["user"]
        user_id = user["id"]
        if isinstance(user_id, bool) or not isinstance(user_id, str | int):
            raise TypeError("user id")
        return Identity.from_json(
            json.dumps({"user_id": str(user_id), "role": user["role"], "email": user.get("email") or ""})
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UpstreamUnavailable("the origin's login answer is malformed", code="upstream_invalid") from exc


async def _health(deps: GatewayDeps) -> EdgeResponse:
    kv_up, *origins_up = await asyncio.gather(
        _kv_up(deps), *(_origin_up(deps, base) for base in deps.config.origins.values())
    )
    checks = {"kv": "ok" if kv_up else "down", "origin": "ok" if all(origins_up) else "down"}
    healthy = kv_up and all(origins_up)
    return EdgeResponse.json(
        200 if healthy else 503,
        {"status": "ok" if healthy else "degraded", "checks": checks},
        Headers({"cache-control": "no-store"}),
    )


async def _kv_up(deps: GatewayDeps) -> bool:
    try:
        # A read: KV writes are metered (1,000 a day on the Free plan) and a probe must not spend them.
        await deps.kv.SESSION_KV.get("health:probe")
    except Exception:
        # Each runtime's KV raises its own error types; any of them means "down".
        return False
    return True


async def _origin_up(deps: GatewayDeps, base: str) -> bool:
    headers = Headers(
        sign(deps.config.signing_secret, method="GET", path="/healthz", now=int(deps.clock.now()), identity=None)
    )
    timeout = min(HEALTH_TIMEOUT_SECONDS, deps.config.origin_timeout_seconds)
    try:
        response = await deps.origin.fetch(OutboundRequest("GET", base + "/healthz", headers, b"", timeout))
    except OriginUnavailable:
        return False
    return response.status == 200
