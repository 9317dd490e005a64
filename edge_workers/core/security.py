"""Response hardening: security headers on every answer, and CORS from an allow-list.

Cross-origin requests are allowed only from origins listed in ``CORS_ALLOWED_ORIGINS`` (exact
``scheme://host[:port]`` matches, credentials allowed). A preflight is answered at the edge from the
route table: the requested method must exist on the route and every requested header must be one
the gateway accepts; anything else is 403, so the browser never sends the real request.
"""

from __future__ import annotations

from collections.abc import Collection

from edge_workers.core.http import EdgeResponse, Headers
from edge_workers.core.routes import Route
from shared.errors import Forbidden
from shared.status_page import STATUS_PAGE_CSS_HASH

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "permissions-policy": (
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
    ),
}
# HTML may load its own scripts and Turnstile's; API answers (JSON, images) need nothing at all.
HTML_CSP = (
    "default-src 'self'; script-src 'self' https://challenges.cloudflare.com; "
    f"style-src 'self' {STATUS_PAGE_CSS_HASH}; "
    "frame-src https://challenges.cloudflare.com; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"

CORS_ALLOWED_HEADERS = (
    "accept",
    "accept-language",
    "authorization",
    "cf-turnstile-response",
    "content-type",
    "idempotency-key",
    "if-none-match",
    "traceparent",
    "tracestate",
    "x-request-id",
)
CORS_EXPOSED_HEADERS = "X-Request-Id, X-Cache, Age, ETag, RateLimit, RateLimit-Policy, Retry-After"
PREFLIGHT_MAX_AGE_SECONDS = 600


def apply_security_headers(headers: Headers) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers.set(name, value)
    media_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    headers.set("content-security-policy", HTML_CSP if media_type == "text/html" else API_CSP)


def add_vary(headers: Headers, field: str) -> None:
    present = [item.strip().lower() for value in headers.get_all("vary") for item in value.split(",")]
    if field.lower() not in present:
        headers.add("vary", field)


def apply_cors(headers: Headers, request_origin: str | None, allowed: Collection[str]) -> None:
    """CORS fields for an actual (non-preflight) request from an allowed origin."""
    if not allowed:
        return
    # The answer depends on Origin whenever CORS is configured, for every intermediary cache.
    add_vary(headers, "Origin")
    if request_origin is not None and request_origin.lower() in allowed:
        headers.set("access-control-allow-origin", request_origin)
        headers.set("access-control-allow-credentials", "true")
        headers.set("access-control-expose-headers", CORS_EXPOSED_HEADERS)


def preflight(request_headers: Headers, route: Route, allowed: Collection[str]) -> EdgeResponse:
    origin = request_headers.get("origin")
    method = request_headers.get("access-control-request-method")
    if origin is None or method is None:
        # A plain OPTIONS: say what the resource supports.
        return EdgeResponse(204, Headers({"allow": ", ".join(sorted({*route.methods, "OPTIONS"}))}))
    if origin.lower() not in allowed:
        raise Forbidden("this origin may not call the API", code="cors_origin_denied")
    if method not in route.methods:
        raise Forbidden(
            f"{method} is not allowed here", code="cors_method_denied", details={"allow": sorted(route.methods)}
        )
    requested = [
        name.strip().lower()
        for value in request_headers.get_all("access-control-request-headers")
        for name in value.split(",")
        if name.strip()
    ]
    refused = sorted(set(requested) - set(CORS_ALLOWED_HEADERS))
    if refused:
        raise Forbidden(
            "these request headers are not allowed", code="cors_headers_denied", details={"headers": refused}
        )
    headers = Headers(
        {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "access-control-allow-methods": ", ".join(sorted(route.methods)),
            "access-control-max-age": str(PREFLIGHT_MAX_AGE_SECONDS),
            "cache-control": "no-store",
        }
    )
    if requested:
        headers.set("access-control-allow-headers", ", ".join(sorted(set(requested))))
    for field in ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"):
        add_vary(headers, field)
    return EdgeResponse(204, headers)
