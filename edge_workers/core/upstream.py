"""Calls to an origin: the signed envelope, request id and trace context added, the answer filtered."""

from __future__ import annotations

from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeResponse, Headers, OutboundRequest
from edge_workers.core.observability import REQUEST_ID_HEADER
from edge_workers.core.ports import OriginTimeout, OriginUnavailable
from shared.envelope import Identity, sign
from shared.errors import AppError, UpstreamUnavailable

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


async def fetch(deps: GatewayDeps, request: OutboundRequest) -> EdgeResponse:
    """Outbound fetch with the runtime's failures mapped to 502/504."""
    try:
        return await deps.origin.fetch(request)
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
    return await fetch(deps, request)


def relay(upstream: EdgeResponse) -> EdgeResponse:
    """The origin's answer with only the header fields a client may see."""
    relayed = Headers()
    for name in RELAYED_RESPONSE_HEADERS:
        for value in upstream.headers.get_all(name):
            relayed.add(name, value)
    return EdgeResponse(upstream.status, relayed, upstream.body)
