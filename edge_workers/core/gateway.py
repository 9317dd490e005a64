"""The edge pipeline: one async function from an edge request to an edge response, whatever the runtime.

normalise path -> route (or CORS preflight) -> declared body size -> flags -> credentials (bearer
JWT or session cookie) -> rate limit -> authentication required? -> body (never past the route's
limit) -> Turnstile -> handler -> headers (rate limit, cache, CORS, security, request id, session
cookie) -> one JSON log line. Errors become ``{"error": {...}}`` bodies here and only here. Both
workers run it; each has its own route table.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from edge_workers.core.cache import storable_ttl
from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeRequest, EdgeResponse, Headers, OutboundRequest
from edge_workers.core.media import handle_image
from edge_workers.core.observability import REQUEST_ID_HEADER, request_id, trace_context
from edge_workers.core.paths import canonical_query, encode_path, normalise_path
from edge_workers.core.ports import Background, OriginUnavailable
from edge_workers.core.preferences import handle_preferences, prefs_key
from edge_workers.core.push import handle_subscription, handle_vapid_key
from edge_workers.core.ratelimit import client_key
from edge_workers.core.routes import Auth, Handler, Route, RouteMethodNotAllowed
from edge_workers.core.security import apply_cors, apply_security_headers, preflight
from edge_workers.core.sessions import COOKIE_NAME, cleared_cookie, session_cookie, session_id_from_cookies
from edge_workers.core.tokens import InvalidToken, verify_hs256
from edge_workers.core.turnstile import check_token, idempotency_key, take_token
from edge_workers.core.upstream import call_origin, client_headers, end_session, relay, within_deadline
from shared import jsonbody
from shared.envelope import Identity, sign
from shared.errors import (
    AppError,
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UpstreamUnavailable,
    internal_error_body,
)
from shared.kv_keys import family

_CONTENT_LENGTH = re.compile(r"^[0-9]{1,15}$")
HEALTH_TIMEOUT_SECONDS = 3.0
_READS = ("GET", "HEAD")

HandlerFunction = Callable[[Exchange, GatewayDeps, bytes], Awaitable[EdgeResponse]]


async def handle(request: EdgeRequest, deps: GatewayDeps, background: Background | None = None) -> EdgeResponse:
    """Answer ``request``. Deferred work (KV writes) goes to ``background`` or, without one, is awaited."""
    started = deps.clock.monotonic()
    trace = trace_context(request.headers, deps.random)
    exchange = Exchange(request=request, request_id=request_id(request.headers, deps.random, trace), trace=trace)
    try:
        response = await _dispatch(exchange, deps)
    except AppError as exc:
        exchange.error = exc.code
        response = _error_response(exc)
    except Exception as exc:
        # The last line of defence: the client learns nothing about the cause, the log learns its type.
        exchange.error = type(exc).__name__
        response = EdgeResponse.json(500, internal_error_body(), Headers({"cache-control": "no-store"}))
    response = _finish(response, exchange, deps, started)
    if exchange.deferred:
        work = _run_deferred(exchange.deferred, exchange, deps)
        if background is None:
            await work
        else:
            background.defer(work)
    return response


def reject(error: AppError, deps: GatewayDeps, *, method: str = "", raw_path: str = "") -> EdgeResponse:
    """The response for a request an adapter could not even parse: same shape, headers and log line."""
    started = deps.clock.monotonic()
    empty = Headers()
    trace = trace_context(empty, deps.random)
    exchange = Exchange(
        request=EdgeRequest(method=method, target=raw_path or "/"),
        request_id=request_id(empty, deps.random, trace),
        trace=trace,
        error=error.code,
    )
    return _finish(_error_response(error), exchange, deps, started)


async def _run_deferred(work: list[Coroutine[Any, Any, None]], exchange: Exchange, deps: GatewayDeps) -> None:
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            # The client already has its answer; the failure is logged, without details that may hold data.
            deps.log.write(
                {"msg": "deferred_failed", "request_id": exchange.request_id, "error": type(result).__name__}
            )


def _error_response(error: AppError) -> EdgeResponse:
    response = EdgeResponse.json(error.status, error.body())
    response.headers.set("cache-control", "no-store")
    if isinstance(error, RouteMethodNotAllowed):
        response.headers.set("allow", error.allow)
    if isinstance(error, Unauthorized) and error.code == "invalid_token":
        response.headers.set("www-authenticate", 'Bearer error="invalid_token"')
    if isinstance(error, RateLimited) and isinstance(error.details, dict):
        response.headers.set("retry-after", str(error.details["retry_after"]))
    return response


def _finish(response: EdgeResponse, exchange: Exchange, deps: GatewayDeps, started: float) -> EdgeResponse:
    headers = response.headers
    if exchange.rate is not None:
        for name, value in exchange.rate.headers():
            headers.set(name, value)
    if exchange.cache is not None:
        headers.set("x-cache", exchange.cache)
    apply_cors(headers, exchange.request.headers.get("origin"), deps.config.cors_allowed_origins)
    apply_security_headers(headers)
    headers.set(REQUEST_ID_HEADER, exchange.request_id)
    if exchange.renew_cookie is not None and "set-cookie" not in headers:
        headers.add("set-cookie", exchange.renew_cookie)
    if exchange.clear_cookie and "set-cookie" not in headers:
        headers.add("set-cookie", cleared_cookie())
    if exchange.request.method == "HEAD":
        response.body = b""
    deps.log.write(
        {
            "msg": "request",
            "worker": deps.worker,
            "method": exchange.request.method,
            # The path only: a query string may carry tokens.
            "path": exchange.path or exchange.request.raw_path[:256],
            "route": exchange.route.path if exchange.route else None,
            "status": response.status,
            "cache": exchange.cache,
            "rate_limit": None
            if exchange.rate is None
            else {
                "policy": exchange.rate.policy,
                "allowed": exchange.rate.allowed,
                "remaining": exchange.rate.remaining,
            },
            "turnstile": exchange.turnstile,
            "duration_ms": round((deps.clock.monotonic() - started) * 1000, 3),
            "request_id": exchange.request_id,
            "trace_id": exchange.trace.trace_id,
            "error": exchange.error,
        }
    )
    return response


async def _dispatch(exchange: Exchange, deps: GatewayDeps) -> EdgeResponse:
    request = exchange.request
    exchange.path = normalise_path(request.raw_path)
    if request.method == "OPTIONS":
        exchange.route = deps.routes.find(exchange.path)
        return preflight(request.headers, exchange.route, deps.config.cors_allowed_origins)
    match = deps.routes.match(exchange.path, request.method)
    route, access = match.route, match.access
    exchange.route = route
    _check_declared_length(request.headers, route.body_limit)
    if request.method not in _READS and (await deps.flags.get()).read_only:
        raise ServiceUnavailable("the service is read-only for maintenance", code="read_only")

    if access.auth is not Auth.ANONYMOUS:
        await _authenticate(exchange, deps)
        identity = exchange.identity
        if identity is not None and route.product is not None and identity.product != route.product:
            # Another product's session: on this product's routes the caller is nobody.
            exchange.identity = None
    if access.rate_limit is not None:
        policy = access.rate_limit
        by_user = policy.keyed_by_user(exchange.identity is not None)
        key = f"user:{exchange.identity.user_id}" if by_user and exchange.identity else client_key(request.client_ip)
        exchange.rate = await deps.limiter.check(key, policy, by_user)
        if not exchange.rate.allowed:
            raise exchange.rate.error()
    if exchange.credential_error is not None:
        raise Unauthorized(exchange.credential_error, code="invalid_token")
    if access.auth is Auth.REQUIRED and exchange.identity is None:
        raise Unauthorized("a valid session or bearer token is required", code="unauthorized")
    # Read only now: a request refused above never costs the edge its body.
    body = await request.body.read(route.body_limit)
    if access.turnstile:
        body = await _turnstile(exchange, deps, body)

    response = await HANDLERS[route.handler](exchange, deps, body)
    session = exchange.session
    if session is not None and route.handler is not Handler.LOGOUT and deps.sessions.needs_renewal(session):
        exchange.defer(_renew(deps, session.id))
        exchange.renew_cookie = session_cookie(session.id, deps.config.session_ttl_seconds)
    return response


async def _renew(deps: GatewayDeps, session_id: str) -> None:
    # Reloaded so that a logout racing with this request is not undone by the renewal.
    session = await deps.sessions.load(session_id)
    if session is not None:
        await deps.sessions.renew(session)


def _check_declared_length(headers: Headers, limit: int) -> None:
    lengths = set(headers.get_all("content-length"))
    if lengths and headers.get("transfer-encoding") is not None:
        raise BadRequest("Content-Length and Transfer-Encoding together are ambiguous", code="bad_framing")
    if len(lengths) > 1 or any(not _CONTENT_LENGTH.match(value) for value in lengths):
        raise BadRequest("Content-Length is malformed", code="bad_framing")
    if lengths and int(next(iter(lengths))) > limit:
        # Refused on the declared length alone: the body is never read.
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")


async def _authenticate(exchange: Exchange, deps: GatewayDeps) -> None:
    """Find the caller's identity; a bad bearer token is remembered (refused after rate limiting)."""
    headers = exchange.request.headers
    authorization = headers.get("authorization")
    if authorization is not None:
        # An API client: the bearer token alone decides, the cookie is not consulted.
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            exchange.credential_error = "the Authorization header must be a bearer token"
        elif deps.config.jwt is None:
            exchange.credential_error = "bearer tokens are not accepted here"
        else:
            try:
                exchange.identity = verify_hs256(token.strip(), deps.config.jwt, deps.clock.now())
            except InvalidToken as exc:
                exchange.credential_error = str(exc)
        return
    cookies = headers.get_all("cookie")
    session_id = session_id_from_cookies(cookies)
    session = await deps.sessions.load(session_id) if session_id is not None else None
    if session is not None:
        exchange.session, exchange.identity = session, session.identity
    elif any(COOKIE_NAME + "=" in header for header in cookies):
        # A stale or forged cookie is removed so the browser stops sending it.
        exchange.clear_cookie = True


async def _turnstile(exchange: Exchange, deps: GatewayDeps, body: bytes) -> bytes:
    token, forwarded = take_token(exchange.request.headers, body)
    exchange.turnstile = "failed"
    await check_token(
        deps.siteverify,
        deps.config.turnstile_secret,
        token,
        exchange.request.client_ip,
        idempotency_key(deps.random),
    )
    exchange.turnstile = "passed"
    return forwarded


# --- handlers --------------------------------------------------------------------------------------


def _target(exchange: Exchange, route: Route) -> str:
    query = canonical_query(exchange.request.raw_query)
    return encode_path(route.upstream_path(exchange.path)) + (f"?{query}" if query else "")


async def _proxy(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    route = exchange.route
    if route is None or route.origin is None:
        raise RuntimeError("a proxied route must name an origin")
    method = exchange.request.method
    resource = family(route.upstream_path(exchange.path))
    cache_key: str | None = None
    cached_version = ""
    if route.cache is not None and method in _READS:
        credentials = "authorization" in exchange.request.headers or exchange.session is not None
        if (credentials and not route.cache.public) or not (await deps.flags.get()).cache:
            exchange.cache = "BYPASS"
        else:
            cache_key = deps.cache.key(resource, method, exchange.path, canonical_query(exchange.request.raw_query))
            lookup = await deps.cache.lookup(resource, cache_key)
            if lookup.response is not None:
                exchange.cache = "HIT"
                lookup.response.headers.set("age", str(lookup.age))
                return _conditional(exchange, lookup.response)
            exchange.cache = "MISS"
            cached_version = lookup.version
    upstream = await call_origin(
        deps,
        exchange,
        origin=route.origin,
        method=method,
        target=_target(exchange, route),
        headers=client_headers(exchange),
        body=b"" if method in _READS else body,
        identity=exchange.identity,
    )
    response = relay(upstream)
    location = response.headers.get("location")
    if location is not None:
        response.headers.set("location", _edge_location(location, deps.config.origins[route.origin], route))
    if cache_key is not None:
        ttl = storable_ttl(upstream)
        if ttl is not None:
            exchange.defer(deps.cache.store(cache_key, cached_version, response, ttl))
    elif route.cache is not None and method not in _READS and response.status < 400:
        exchange.defer(deps.cache.bump(resource))
    return _conditional(exchange, response)


def _conditional(exchange: Exchange, response: EdgeResponse) -> EdgeResponse:
    """304 when the client already holds this representation (If-None-Match against the ETag)."""
    etag = response.headers.get("etag")
    offered = exchange.request.headers.get("if-none-match")
    if response.status != 200 or etag is None or offered is None:
        return response
    # If-None-Match compares weakly: W/"x" and "x" are the same representation here.
    tags = {tag.strip().removeprefix("W/") for tag in offered.split(",")}
    if "*" in tags or etag.removeprefix("W/") in tags:
        kept = Headers([(name, value) for name, value in response.headers.items() if name != "content-type"])
        return EdgeResponse(304, kept)
    return response


def _edge_location(location: str, base: str, route: Route) -> str:
    """A Location from the origin, rewritten to the edge's address space."""
    if location.startswith(base + "/"):
        location = location[len(base) :]
    if location.startswith("/") and not location.startswith("//"):
        return route.strip_prefix + location
    return location


async def _login(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    response = await _proxy(exchange, deps, body)
    if response.status != 200:
        return response
    route = exchange.route
    if route is None or route.product is None:
        raise RuntimeError("a login route must name its product's origin")
    new_session = await deps.sessions.create(_login_identity(response.body, route.product))
    old_session_id = session_id_from_cookies(exchange.request.headers.get_all("cookie"))
    if old_session_id is not None:
        # The pre-login id dies with the login, so a planted cookie is worth nothing.
        await deps.sessions.destroy(old_session_id)
    response.headers.add("set-cookie", session_cookie(new_session.id, deps.config.session_ttl_seconds))
    response.headers.set("cache-control", "no-store")
    return response


async def _end_sessions(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    """Log out everywhere, or a password change: the origin ends every session of the account. This
    one is destroyed at once, and so is the edge's copy of the account's preferences, the one answer a
    session gets without asking the origin: any other session of the account meets the origin, and
    its ``session_revoked``, on its next request."""
    response = await _proxy(exchange, deps, body)
    identity = exchange.identity
    if response.status < 300 and identity is not None:
        exchange.defer(deps.kv.USER_PREFS_KV.delete(prefs_key(identity.user_id)))
        end_session(exchange, deps)
    return response


async def _logout(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    session_id = session_id_from_cookies(exchange.request.headers.get_all("cookie"))
    if session_id is not None:
        await deps.sessions.destroy(session_id)
    return EdgeResponse(204, Headers({"set-cookie": cleared_cookie(), "cache-control": "no-store"}))


def _login_identity(body: bytes, product: str) -> Identity:
    """The identity in the origin's login answer ``{"user": {"id", "email", "name", "role"}, "session":
    {"generation"}}``; the product is the route's, never the origin's word, so one product cannot mint
    another's sessions."""
    try:
        answer = json.loads(body)
        user = answer["user"]
        user_id = user["id"]
        if isinstance(user_id, bool) or not isinstance(user_id, str | int):
            raise TypeError("user id")
        return Identity.from_json(
            json.dumps(
                {
                    "user_id": str(user_id),
                    "role": user["role"],
                    "email": user.get("email") or "",
                    "product": product,
                    "generation": answer.get("session", {}).get("generation", 0),
                }
            )
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UpstreamUnavailable("the origin's login answer is malformed", code="upstream_invalid") from exc


async def _flags(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    flags = await deps.flags.get()
    max_age = int(deps.config.flags_cache_seconds)
    return EdgeResponse.json(200, {"flags": flags.public}, Headers({"cache-control": f"public, max-age={max_age}"}))


async def _health(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    names = sorted(name for name in deps.routes.origins() if name != "media")
    kv_up, *reports = await asyncio.gather(_kv_up(deps), *(_origin_health(deps, name) for name in names))
    origins = dict(zip(names, reports, strict=True))
    # The worst origin's state: "down" (unreachable or no answer we understand) over "degraded" (it
    # serves, but one of its dependencies is down: its own checks say which) over "ok".
    states = [report["status"] for report in reports]
    origin_state = next((state for state in ("down", "degraded") if state in states), "ok")
    checks: dict[str, Any] = {"kv": "ok" if kv_up else "down", "origin": origin_state, "origins": origins}
    healthy = kv_up and origin_state == "ok"
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


async def _origin_health(deps: GatewayDeps, origin: str) -> dict[str, Any]:
    """``{"status": "ok" | "degraded" | "down", "checks": <the origin's own checks, when it said>}``."""
    headers = Headers(
        sign(deps.config.signing_secret, method="GET", path="/healthz", now=int(deps.clock.now()), identity=None)
    )
    timeout = min(HEALTH_TIMEOUT_SECONDS, deps.config.origin_timeout_seconds)
    url = deps.config.origins[origin] + "/healthz"
    try:
        response = await within_deadline(deps, OutboundRequest("GET", url, headers, b"", timeout))
    except OriginUnavailable:
        return {"status": "down"}
    try:
        answer = jsonbody.loads(response.body)
    except (ValueError, AppError):
        answer = None
    checks = answer.get("checks") if isinstance(answer, dict) else None
    if response.status == 200:
        return {"status": "ok", "checks": checks} if isinstance(checks, dict) else {"status": "ok"}
    if response.status == 503 and isinstance(checks, dict):
        # An origin that answers 503 with its checks is up, and says which of its dependencies is not.
        return {"status": "degraded", "checks": checks}
    return {"status": "down"}


HANDLERS: dict[Handler, HandlerFunction] = {
    Handler.PROXY: _proxy,
    Handler.LOGIN: _login,
    Handler.LOGOUT: _logout,
    Handler.END_SESSIONS: _end_sessions,
    Handler.HEALTH: _health,
    Handler.PREFERENCES: handle_preferences,
    Handler.FLAGS: _flags,
    Handler.IMAGE: handle_image,
    Handler.PUSH_SUBSCRIPTION: handle_subscription,
    Handler.VAPID_KEY: handle_vapid_key,
}
