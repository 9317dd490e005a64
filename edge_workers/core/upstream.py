"""Calls to an origin: the signed envelope, request id and trace context added, the answer filtered.

The origin re-derives every identified caller from its database and answers 401 ``session_revoked``
for a session whose account is gone or whose sessions were all ended (``functions/platform/sessions.py``);
every origin call passes here, so this is where the edge destroys such a session and clears its cookie.
"""

from __future__ import annotations

import asyncio
import json

from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeResponse, Headers, OutboundRequest
from edge_workers.core.observability import REQUEST_ID_HEADER
from edge_workers.core.ports import OriginTimeout, OriginUnavailable
from shared.envelope import Identity, sign
from shared.errors import AppError, UpstreamUnavailable

SESSION_REVOKED = "session_revoked"
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
    "vary",
    # The origin's word that this is the stored answer to an earlier request with the same key.
    "idempotent-replayed",
)


class GatewayTimeout(AppError):
    status = 504
    code = "upstream_timeout"


def client_headers(exchange: Exchange) -> Headers:
    headers = Headers()
    extra = exchange.route.forwarded_headers if exchange.route is not None else ()
    for name in (*FORWARDED_REQUEST_HEADERS, *extra):
        for value in exchange.request.headers.get_all(name):
            headers.add(name, value)
    return headers


async def within_deadline(deps: GatewayDeps, request: OutboundRequest) -> EdgeResponse:
    """The runtime's fetch, bounded as a whole by ``request.timeout``: connect, send, wait and read.

    Runtimes bound what they can (a socket timeout bounds each operation, not their sum); this bound is
    the one that holds everywhere, so a slow or trickling origin never holds a request longer.
    """
    try:
        return await asyncio.wait_for(deps.origin.fetch(request), request.timeout)
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError since Python 3.11
        raise OriginTimeout(f"no complete answer within {request.timeout} s") from exc


async def fetch(deps: GatewayDeps, request: OutboundRequest) -> EdgeResponse:
    """Outbound fetch within its deadline, with the runtime's failures mapped to 502/504."""
    try:
        return await within_deadline(deps, request)
    except OriginTimeout as exc:
        raise GatewayTimeout("the origin did not answer in time") from exc
    except OriginUnavailable as exc:
        raise UpstreamUnavailable("the origin is unavailable") from exc


async def call_origin(
    deps: GatewayDeps,
    exchange: Exchange,
    *,
    origin: str,
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    identity: Identity | None,
) -> EdgeResponse:
    """Send a signed request to ``origin``; ``target`` is the encoded path and query relative to its base.

    The origin verifies the signature over the target it sees, so ``target`` must already be in the
    canonical form (``edge_workers.core.paths.encode_path`` and ``canonical_query``). The answer comes back
    unfiltered (the cache must see its Set-Cookie); ``relay`` it before it leaves the edge.
    """
    outgoing = headers.copy()
    outgoing.set(REQUEST_ID_HEADER, exchange.request_id)
    outgoing.set("traceparent", exchange.trace.traceparent)
    if exchange.trace.state is not None:
        outgoing.set("tracestate", exchange.trace.state)
    envelope = sign(
        deps.config.signing_secret, method=method, path=target, now=int(deps.clock.now()), identity=identity, body=body
    )
    for name, value in envelope.items():
        outgoing.set(name, value)
    request = OutboundRequest(
        method, deps.config.origins[origin] + target, outgoing, body, deps.config.origin_timeout_seconds
    )
    response = await fetch(deps, request)
    if exchange.session is not None and _session_revoked(response):
        end_session(exchange, deps)
    return response


def end_session(exchange: Exchange, deps: GatewayDeps) -> None:
    """Destroy the caller's session (after the answer) and clear its cookie; it is not renewed."""
    if exchange.session is not None:
        exchange.defer(deps.sessions.destroy(exchange.session.id))
        exchange.session = None
    exchange.clear_cookie = True


def _session_revoked(response: EdgeResponse) -> bool:
    if response.status != 401:
        return False
    try:
        return bool(json.loads(response.body)["error"]["code"] == SESSION_REVOKED)
    except (ValueError, KeyError, TypeError):
        return False


def relay(upstream: EdgeResponse) -> EdgeResponse:
    """The origin's answer with only the header fields a client may see."""
    relayed = Headers()
    for name in RELAYED_RESPONSE_HEADERS:
        for value in upstream.headers.get_all(name):
            relayed.add(name, value)
    return EdgeResponse(upstream.status, relayed, upstream.body)
