"""The edge's conformance table: requests in; status, headers, body fields, origin calls and KV effects out.

Written once, run unchanged on the CPython adapter and inside real Pyodide (``tests/edge/test_edge_conformance.py``).
Each case starts from an empty edge (KV, limiters, isolate) and fresh fakes (``fakes.py``); ``env``
overrides the base configuration (``base_env``), ``seed`` writes KV first, ``steps`` run in order with
a cookie jar, and ``kv`` is checked at the end. Step keys: ``method``, ``path`` (sent exactly as
written), ``headers``, ``json``/``form``/``body``, ``stream`` (send the body without a declared length),
``client`` (CF-Connecting-IP), ``session`` (send the jar's cookie), ``jwt`` (minted at run time),
``turnstile`` (token header), ``repeat``, ``expect``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from tests.edge.conformance.execute import ABSENT, DEFAULT_CLIENT, Now, Re
from tests.edge.conformance.fakes import (
    EVENT_ID,
    IMAGE_BYTES,
    IMAGE_ID,
    PASSWORD,
    REVOKED_USER,
    SIGNING_SECRET,
    TURNSTILE_SECRET,
    user_for,
)
from tests.shared.keys import b64url, p256_point

JWT_SECRET = "conformance-jwt-secret-" + "j" * 32
JWT_ISSUER = "https://auth.stepperslife.example"
JWT_AUDIENCE = "agistack-api"
APP_ORIGIN = "https://app.stepperslife.example"
VAPID_PUBLIC_KEY = b64url(p256_point(1))
P256DH = b64url(p256_point(2))
AUTH_SECRET = base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()
ENDPOINT = "https://fcm.googleapis.com/fcm/send/dZ3x-conformance"
ADA = "ada@example.com"
ADA_ID = user_for(ADA)["id"]
SESSION_ID = "S" * 43  # well-formed: 43 base64url characters
COOKIE_ATTRIBUTES = "Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=86400"
UUID_V4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
SECURITY = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "permissions-policy": Re(r".*camera=\(\).*geolocation=\(\).*microphone=\(\).*"),
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-request-id": Re(r"[A-Za-z0-9._-]{8,128}"),
}
_TOKENS = itertools.count(1)


def base_env(fakes_url: str) -> dict[str, str]:
    return {
        "EDGE_SIGNING_SECRET": SIGNING_SECRET,
        "STEPPERSLIFE_ORIGIN": f"{fakes_url}/origin",
        "MEDIA_PUBLIC_BASE_URL": f"{fakes_url}/media",
        "TURNSTILE_SECRET_KEY": TURNSTILE_SECRET,
        "TURNSTILE_SITEVERIFY_URL": f"{fakes_url}/siteverify",
        "JWT_SECRET": JWT_SECRET,
        "JWT_ISSUER": JWT_ISSUER,
        "JWT_AUDIENCE": JWT_AUDIENCE,
        "CORS_ALLOWED_ORIGINS": APP_ORIGIN,
        "VAPID_PUBLIC_KEY": VAPID_PUBLIC_KEY,
        "RATE_LIMIT_BACKEND": "binding",
        "ORIGIN_TIMEOUT_SECONDS": "5",
    }


def token() -> str:
    return f"valid-{next(_TOKENS)}"


def later_than(offset: float) -> Callable[[Any], bool]:
    def later(value: Any) -> bool:
        return isinstance(value, int | float) and value > time.time() + offset

    return later


def error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": Re(r".+")}}


def login(email: str = ADA, client: str = DEFAULT_CLIENT, **expect: Any) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/api/auth/login",
        "json": {"email": email, "password": PASSWORD},
        "turnstile": token(),
        "client": client,
        "expect": {"status": 200, **expect},
    }


def jwt(claims: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    base = {
        "sub": "api-client-7",
        "role": "user",
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "exp": Now(600),
        "iat": Now(),
    }
    return {"secret": JWT_SECRET, "claims": {**base, **(claims or {})}, **spec}


def session_record(expires_in: float, created_ago: float = 80000) -> dict[str, Any]:
    return {
        "identity": {"user_id": "seeded-user", "role": "user", "email": "seed@example.com"},
        "created_at": Now(-created_ago),
        "expires_at": Now(expires_in),
    }


def cache_entry(body: bytes, stored_ago: float, ttl: int) -> dict[str, Any]:
    return {
        "version": "0",
        "status": 200,
        "headers": [["content-type", "application/json"], ["etag", '"seeded"']],
        "body": base64.b64encode(body).decode(),
        "stored_at": Now(-stored_ago),
        "ttl": ttl,
    }


def subscription(endpoint: str = ENDPOINT, p256dh: str = P256DH, auth: str = AUTH_SECRET) -> dict[str, Any]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}}


def push_key(endpoint: str = ENDPOINT) -> str:
    return "push:" + hashlib.sha256(endpoint.encode()).hexdigest()


def _unsafe_endpoint(endpoint: str) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/push/subscriptions",
        "session": True,
        "turnstile": token(),
        "json": subscription(endpoint),
        "expect": {"status": 422, "json": error("invalid_subscription"), "origin_calls": 0},
    }


def _login_attempts(
    backend: str,
    allowed_headers: dict[str, Any] | Callable[[int], dict[str, Any]],
    refused_headers: dict[str, Any],
) -> dict[str, Any]:
    """Five logins from one address pass (wrong password: still counted), whatever X-Forwarded-For says;
    the sixth is refused before siteverify or the origin is asked."""
    attempts = [
        {
            "method": "POST",
            "path": "/api/auth/login",
            "json": {"email": ADA, "password": "wrong"},
            "turnstile": token(),
            "headers": {
                "X-Forwarded-For": f"10.0.0.{number}",
                "X-Real-IP": f"10.1.0.{number}",
                "True-Client-IP": "1.2.3.4",
            },
            "expect": {
                "status": 401,
                "headers": allowed_headers(number) if callable(allowed_headers) else allowed_headers,
            },
        }
        for number in range(1, 6)
    ]
    return {
        "id": f"login_rate_limit_{backend}_ignores_spoofed_forwarding_headers",
        "env": {"RATE_LIMIT_BACKEND": backend},
        "steps": [
            *attempts,
            {
                "method": "POST",
                "path": "/api/auth/login",
                "json": {"email": ADA, "password": PASSWORD},
                "turnstile": token(),
                "headers": {"X-Forwarded-For": "198.51.100.99", "CF-Connecting-IP-Spoof": "198.51.100.99"},
                "expect": {
                    "status": 429,
                    "json": error("rate_limited"),
                    "headers": {**refused_headers, **SECURITY},
                    "origin_calls": 0,
                    "siteverify_calls": 0,
                    "log": {"status": 429, "rate_limit": {"policy": "login", "allowed": False}},
                },
            },
            # Another client address has its own budget.
            {**login(client="203.0.113.77")},
        ],
    }


CASES: list[dict[str, Any]] = [
    # --- routing, paths, framing ------------------------------------------------------------------
    {
        "id": "proxied_read_is_signed_with_canonical_query_and_prefix_stripped",
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo?b=2&a=first+one",
                "expect": {
                    "status": 200,
                    "json": {"path": "/echo?a=first%20one&b=2", "identity": None},
                    "headers": {**SECURITY, "x-cache": "MISS", "set-cookie": ABSENT},
                    "origin_calls": 1,
                    "origin": {
                        "headers": {
                            "x-agistack-signature": Re(r"v1=[0-9a-f]{64}"),
                            "x-agistack-identity": "",
                            "cookie": ABSENT,
                            "traceparent": Re(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]"),
                        }
                    },
                    "log": {"route": "/api/", "status": 200, "cache": "MISS", "worker": "gateway", "path": "/api/echo"},
                },
            }
        ],
    },
    {
        "id": "health_reports_kv_and_origin",
        "steps": [
            {
                "method": "GET",
                "path": "/healthz",
                "expect": {
                    "status": 200,
                    "json": {
                        "status": "ok",
                        "checks": {"kv": "ok", "origin": "ok", "origins": {"stepperslife": {"status": "ok"}}},
                    },
                },
            }
        ],
    },
    {
        "id": "health_says_degraded_with_the_origins_own_checks",
        "env": {"STEPPERSLIFE_ORIGIN": "{FAKES_URL}/degraded-origin"},
        "steps": [
            {
                "method": "GET",
                "path": "/healthz",
                "expect": {
                    "status": 503,
                    "json": {
                        "status": "degraded",
                        "checks": {
                            "origin": "degraded",
                            "origins": {"stepperslife": {"status": "degraded", "checks": {"redis": "down"}}},
                        },
                    },
                },
            }
        ],
    },
    {
        "id": "health_says_down_when_the_origin_does_not_answer",
        "env": {"STEPPERSLIFE_ORIGIN": "{CLOSED_URL}"},
        "steps": [
            {
                "method": "GET",
                "path": "/healthz",
                "expect": {
                    "status": 503,
                    "json": {"checks": {"origin": "down", "origins": {"stepperslife": {"status": "down"}}}},
                },
            }
        ],
    },
    {
        "id": "a_replayed_answer_keeps_idempotent_replayed",
        "steps": [
            login(),
            {
                "method": "POST",
                "path": "/api/events",
                "session": True,
                "headers": {"Idempotency-Key": "k-1"},
                "json": {"title": "x"},
                "expect": {"status": 201, "headers": {"idempotent-replayed": ABSENT}},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "session": True,
                "headers": {"Idempotency-Key": "k-1"},
                "json": {"title": "x"},
                "expect": {"status": 201, "headers": {"idempotent-replayed": "true"}},
            },
        ],
    },
    {
        "id": "dot_segments_and_duplicate_slashes_are_normalised_before_routing",
        "steps": [
            {"method": "GET", "path": "/api/../healthz", "expect": {"status": 200, "json": {"status": "ok"}}},
            {"method": "GET", "path": "/api/%2e%2e/healthz", "expect": {"status": 200, "json": {"status": "ok"}}},
            {"method": "GET", "path": "//api//echo///42", "expect": {"status": 200, "json": {"path": "/echo/42"}}},
        ],
    },
    {
        "id": "encoded_traversal_cannot_reach_other_routes",
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo/%2e%2e/%2e%2e/admin",
                "expect": {"status": 404, "json": error("not_found"), "origin_calls": 0},
            },
            {"method": "GET", "path": "/api/%252e%252e/healthz", "expect": {"status": 400, "json": error("bad_path")}},
            {"method": "GET", "path": "/api/echo%2Fsecret", "expect": {"status": 400, "json": error("bad_path")}},
            {"method": "GET", "path": "/api/echo%5C..%5Csecret", "expect": {"status": 400, "json": error("bad_path")}},
            {"method": "GET", "path": "/api/echo%00", "expect": {"status": 400, "json": error("bad_path")}},
            # Sign-up needs no session; a path through it to another route does.
            {
                "method": "POST",
                "path": "/api/users/../events",
                "json": {},
                "expect": {"status": 401, "origin_calls": 0},
            },
        ],
    },
    {
        "id": "crlf_never_reaches_the_origin_as_a_header",
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo/%0d%0aX-Injected:%201",
                "expect": {"status": 400, "json": error("bad_path"), "origin_calls": 0},
            },
            {
                "method": "GET",
                "path": "/api/echo?q=%0d%0aX-Injected:%201",
                "expect": {
                    "status": 200,
                    "json": {"path": "/echo?q=%0D%0AX-Injected%3A%201"},
                    "origin": {"headers": {"x-injected": ABSENT}},
                },
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"X-Request-Id": "bad id with spaces"},
                "request_id": "-",
                "expect": {"status": 200, "headers": {"x-request-id": Re(r"[0-9a-f]{32}")}},
            },
        ],
    },
    {
        "id": "unknown_paths_and_methods",
        "steps": [
            {
                "method": "GET",
                "path": "/nope",
                "expect": {"status": 404, "json": error("not_found"), "headers": SECURITY},
            },
            {"method": "GET", "path": "/api", "expect": {"status": 404}},
            {
                "method": "PUT",
                "path": "/healthz",
                "body": b"",
                "expect": {"status": 405, "json": error("method_not_allowed"), "headers": {"allow": "GET, HEAD"}},
            },
        ],
    },
    {
        "id": "oversize_bodies_are_refused_without_reaching_the_origin",
        "steps": [
            login(),
            {
                "method": "POST",
                "path": "/api/events",
                "session": True,
                "headers": {"Content-Length": str(5 * 1024 * 1024)},
                "body": b"{}",
                "expect": {"status": 413, "json": error("payload_too_large"), "origin_calls": 0},
            },
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": token(),
                "body": b" " * 20000,
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 413, "origin_calls": 0, "siteverify_calls": 0},
            },
        ],
    },
    {
        "id": "streamed_bodies_are_read_up_to_the_limit_only",
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": token(),
                "json": {"email": "streamed@example.com"},
                "stream": True,
                "expect": {"status": 201, "json": {"received": {"email": "streamed@example.com"}}},
            },
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": token(),
                "body": b"x" * 40000,
                "stream": True,
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 413, "json": error("payload_too_large"), "origin_calls": 0, "siteverify_calls": 0},
            },
        ],
    },
    # --- security headers and CORS -----------------------------------------------------------------
    {
        "id": "cors_preflight_from_an_allowed_origin",
        "steps": [
            {
                "method": "OPTIONS",
                "path": "/api/events",
                "headers": {
                    "Origin": APP_ORIGIN,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, cf-turnstile-response, idempotency-key",
                },
                "expect": {
                    "status": 204,
                    "origin_calls": 0,
                    "headers": {
                        "access-control-allow-origin": APP_ORIGIN,
                        "access-control-allow-credentials": "true",
                        "access-control-allow-methods": Re(r".*\bPOST\b.*"),
                        "access-control-allow-headers": "cf-turnstile-response, content-type, idempotency-key",
                        "access-control-max-age": "600",
                        "vary": Re(r"(?i).*origin.*access-control-request-method.*"),
                        **SECURITY,
                    },
                },
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"Origin": APP_ORIGIN},
                "expect": {
                    "status": 200,
                    "headers": {
                        "access-control-allow-origin": APP_ORIGIN,
                        "access-control-expose-headers": Re(r".*X-Request-Id.*RateLimit.*Retry-After.*"),
                        "vary": Re(r"(?i).*origin.*"),
                    },
                },
            },
        ],
    },
    {
        "id": "cors_refuses_other_origins_methods_and_headers",
        "steps": [
            {
                "method": "OPTIONS",
                "path": "/api/events",
                "headers": {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
                "expect": {
                    "status": 403,
                    "json": error("cors_origin_denied"),
                    "headers": {"access-control-allow-origin": ABSENT},
                },
            },
            {
                "method": "OPTIONS",
                "path": "/healthz",
                "headers": {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "DELETE"},
                "expect": {"status": 403, "json": error("cors_method_denied")},
            },
            {
                "method": "OPTIONS",
                "path": "/api/events",
                "headers": {
                    "Origin": APP_ORIGIN,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "x-evil",
                },
                "expect": {"status": 403, "json": error("cors_headers_denied")},
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"Origin": "https://evil.example"},
                "expect": {
                    "status": 200,
                    "headers": {"access-control-allow-origin": ABSENT, "vary": Re(r"(?i).*origin.*")},
                },
            },
        ],
    },
    # --- rate limiting -------------------------------------------------------------------------------
    _login_attempts(
        "binding",
        {"ratelimit-policy": '"login";q=5;w=60', "ratelimit": ABSENT},
        {"ratelimit-policy": '"login";q=5;w=60', "ratelimit": '"login";r=0;t=60', "retry-after": "60"},
    ),
    _login_attempts(
        "durable_object",
        lambda number: {"ratelimit-policy": '"login";q=5;w=60', "ratelimit": Re(rf'"login";r={5 - number};t=(60|59)')},
        {"ratelimit": Re(r'"login";r=0;t=\d+'), "retry-after": Re(r"[1-9]\d*")},
    ),
    _login_attempts(
        "kv",
        lambda number: {"ratelimit-policy": '"login";q=5;w=60', "ratelimit": Re(rf'"login";r={5 - number};t=\d+')},
        {"ratelimit": Re(r'"login";r=0;t=\d+'), "retry-after": Re(r"[1-9]\d*")},
    ),
    {
        "id": "kv_fixed_window_counts_in_rate_limit_kv",
        "env": {"RATE_LIMIT_BACKEND": "kv"},
        "steps": [{"method": "GET", "path": "/api/echo", "repeat": 3, "expect": {"status": 200}}],
        "kv": [{"ns": "RATE_LIMIT_KV", "key": f"rate:api:ip:ip:{DEFAULT_CLIENT}", "value": {"count": 3}}],
    },
    {
        "id": "signed_in_users_get_the_per_user_quota",
        "env": {"RATE_LIMIT_BACKEND": "durable_object"},
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo",
                "expect": {"headers": {"ratelimit-policy": '"api";q=100;w=60', "ratelimit": Re(r'"api";r=99;t=\d+')}},
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "jwt": jwt(),
                "expect": {"headers": {"ratelimit-policy": '"api";q=300;w=60', "ratelimit": Re(r'"api";r=299;t=\d+')}},
            },
            # The per-user budget follows the user, not the address.
            {
                "method": "GET",
                "path": "/api/echo",
                "jwt": jwt(),
                "client": "198.51.100.1",
                "expect": {"headers": {"ratelimit": Re(r'"api";r=298;t=\d+')}},
            },
        ],
    },
    {
        "id": "ipv6_clients_share_their_64",
        "env": {"RATE_LIMIT_BACKEND": "durable_object"},
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo",
                "client": "2001:db8:1:2::a",
                "expect": {"headers": {"ratelimit": Re(r'"api";r=99;t=\d+')}},
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "client": "2001:db8:1:2:ffff::b",
                "expect": {"headers": {"ratelimit": Re(r'"api";r=98;t=\d+')}},
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "client": "2001:db8:1:3::a",
                "expect": {"headers": {"ratelimit": Re(r'"api";r=99;t=\d+')}},
            },
        ],
    },
    # --- sessions ------------------------------------------------------------------------------------
    {
        "id": "login_creates_a_host_cookie_session_and_drops_the_origin_cookie",
        "steps": [
            {
                **login(),
                "expect": {
                    "status": 200,
                    "json": {"user": {"id": ADA_ID}},
                    "headers": {
                        "set-cookie": Re(
                            r"__Host-session=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=86400"
                        ),
                        "cache-control": "no-store",
                    },
                    "siteverify": {
                        "secret": TURNSTILE_SECRET,
                        "remoteip": DEFAULT_CLIENT,
                        "idempotency_key": Re(UUID_V4),
                    },
                    "origin": {"body": json.dumps({"email": ADA, "password": PASSWORD})},
                },
            },
            {
                "method": "POST",
                "path": "/api/events",
                "session": True,
                "json": {"title": "x"},
                "expect": {"status": 200, "origin": {"identity": {"user_id": ADA_ID, "role": "user"}}},
            },
        ],
        "kv": [
            {
                "ns": "SESSION_KV",
                "prefix": "session:",
                "count": 1,
                "value": {"identity": {"user_id": ADA_ID, "email": ADA}, "expires_at": later_than(86000)},
            },
        ],
    },
    {
        "id": "session_fixation_a_planted_id_is_never_adopted",
        "seed": [
            {"ns": "SESSION_KV", "key": f"session:{SESSION_ID}", "value": session_record(80000, 10), "ttl": 86400}
        ],
        "steps": [
            {
                **login(),
                "headers": {"Cookie": f"__Host-session={SESSION_ID}"},
                "expect": {
                    "status": 200,
                    "headers": {"set-cookie": Re(r"__Host-session=(?!S{43})[A-Za-z0-9_-]{43};.*")},
                },
            },
            {
                "method": "POST",
                "path": "/api/events",
                "headers": {"Cookie": f"__Host-session={SESSION_ID}"},
                "json": {},
                "expect": {"status": 401, "origin_calls": 0},
            },
        ],
        "kv": [
            {"ns": "SESSION_KV", "key": f"session:{SESSION_ID}", "count": 0},
            {"ns": "SESSION_KV", "prefix": "session:", "count": 1},
        ],
    },
    {
        "id": "logout_deletes_the_session",
        "steps": [
            login(),
            {
                "method": "POST",
                "path": "/api/auth/logout",
                "session": True,
                "body": b"",
                "expect": {"status": 204, "headers": {"set-cookie": Re(r"__Host-session=; .*Max-Age=0")}},
            },
        ],
        "kv": [{"ns": "SESSION_KV", "prefix": "session:", "count": 0}],
    },
    {
        "id": "logout_everywhere_ends_this_session_and_the_edge_copy_of_preferences",
        "steps": [
            login(),
            # Fills the edge's copy of the preferences, the one answer a session gets without the origin.
            {"method": "GET", "path": "/api/me/preferences", "session": True, "expect": {"status": 200}},
            {
                "method": "POST",
                "path": "/api/auth/logout-all",
                "session": True,
                "body": b"",
                "expect": {
                    "status": 204,
                    "origin": {"method": "POST", "path": "/auth/logout-all", "identity": {"user_id": ADA_ID}},
                    "headers": {"set-cookie": Re(r"__Host-session=; .*Max-Age=0")},
                },
            },
        ],
        "kv": [
            {"ns": "SESSION_KV", "prefix": "session:", "count": 0},
            {"ns": "USER_PREFS_KV", "prefix": "prefs:", "count": 0},
        ],
    },
    {
        # The origin's word on a session (its account gone, demoted or logged out everywhere) ends it.
        "id": "a_session_the_origin_revoked_is_destroyed",
        "seed": [
            {
                "ns": "SESSION_KV",
                "key": f"session:{SESSION_ID}",
                "value": {**session_record(80000, 6000), "identity": {"user_id": REVOKED_USER, "role": "admin"}},
                "ttl": 80000,
            },
        ],
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"Cookie": f"__Host-session={SESSION_ID}"},
                "expect": {
                    "status": 401,
                    "json": {"error": {"code": "session_revoked"}},
                    "headers": {"set-cookie": Re(r"__Host-session=; .*Max-Age=0")},
                },
            },
        ],
        "kv": [{"ns": "SESSION_KV", "prefix": "session:", "count": 0}],
    },
    {
        "id": "sessions_past_half_life_are_renewed_not_before",
        "seed": [
            {"ns": "SESSION_KV", "key": f"session:{SESSION_ID}", "value": session_record(3600), "ttl": 3600},
            {"ns": "SESSION_KV", "key": f"session:{'F' * 43}", "value": session_record(80000, 6000), "ttl": 80000},
        ],
        "steps": [
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"Cookie": f"__Host-session={SESSION_ID}"},
                "expect": {
                    "status": 200,
                    "json": {"identity": {"user_id": "seeded-user"}},
                    "headers": {"set-cookie": f"__Host-session={SESSION_ID}; {COOKIE_ATTRIBUTES}"},
                },
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"Cookie": f"__Host-session={'F' * 43}"},
                "expect": {"status": 200, "headers": {"set-cookie": ABSENT}},
            },
        ],
        "kv": [{"ns": "SESSION_KV", "key": f"session:{SESSION_ID}", "value": {"expires_at": later_than(86000)}}],
    },
    {
        "id": "expired_or_unknown_sessions_are_refused_and_cleared",
        "seed": [{"ns": "SESSION_KV", "key": f"session:{SESSION_ID}", "value": session_record(-10), "ttl": 600}],
        "steps": [
            {
                "method": "POST",
                "path": "/api/events",
                "headers": {"Cookie": f"__Host-session={SESSION_ID}"},
                "json": {},
                "expect": {
                    "status": 401,
                    "json": error("unauthorized"),
                    "headers": {"set-cookie": Re(r"__Host-session=; .*Max-Age=0")},
                },
            },
            {
                "method": "POST",
                "path": "/api/events",
                "headers": {"Cookie": "__Host-session=short"},
                "json": {},
                "expect": {"status": 401},
            },
            {"method": "DELETE", "path": "/api/events/1", "expect": {"status": 401, "origin_calls": 0}},
        ],
    },
    # --- bearer JWTs ---------------------------------------------------------------------------------
    {
        "id": "valid_bearer_token_identity_reaches_the_origin",
        "steps": [
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"role": "admin", "email": "ops@example.com"}),
                "json": {},
                "expect": {
                    "status": 200,
                    "origin": {
                        "identity": {
                            "user_id": "api-client-7",
                            "role": "admin",
                            "email": "ops@example.com",
                            "product": "stepperslife",
                        }
                    },
                },
            },
            # Within the leeway: expired 10 s ago, not before 10 s from now.
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"exp": Now(-10), "nbf": Now(10)}),
                "json": {},
                "expect": {"status": 200},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"aud": ["other", JWT_AUDIENCE]}),
                "json": {},
                "expect": {"status": 200},
            },
        ],
    },
    {
        "id": "forged_and_stale_tokens_are_401_before_the_origin",
        "steps": [
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt(header={"alg": "none", "typ": "JWT"}, signature=""),
                "json": {},
                "expect": {
                    "status": 401,
                    "json": error("invalid_token"),
                    "headers": {"www-authenticate": 'Bearer error="invalid_token"'},
                    "origin_calls": 0,
                },
            },
            # Algorithm confusion: an RS256 header with an HMAC made from the shared secret.
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt(header={"alg": "RS256", "typ": "JWT"}),
                "json": {},
                "expect": {"status": 401, "json": error("invalid_token")},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt(header={"alg": "HS512", "typ": "JWT"}, digest="sha512"),
                "json": {},
                "expect": {"status": 401},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"exp": Now(-120)}),
                "json": {},
                "expect": {"status": 401, "json": {"error": {"message": Re(".*expired.*")}}},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"nbf": Now(600)}),
                "json": {},
                "expect": {"status": 401, "json": {"error": {"message": Re(".*not valid yet.*")}}},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"iat": Now(600)}),
                "json": {},
                "expect": {"status": 401, "json": {"error": {"message": Re(".*future.*")}}},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"aud": "someone-else"}),
                "json": {},
                "expect": {"status": 401},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"iss": "https://evil.example"}),
                "json": {},
                "expect": {"status": 401},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt(secret="not-the-secret-" + "x" * 32),
                "json": {},
                "expect": {"status": 401},
            },
            {
                "method": "POST",
                "path": "/api/events",
                "jwt": jwt({"exp": "tomorrow"}),
                "json": {},
                "expect": {"status": 401},
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "headers": {"Authorization": "Basic YWRhOnB3"},
                "expect": {"status": 401, "json": error("invalid_token"), "origin_calls": 0},
            },
        ],
    },
    # --- Turnstile -----------------------------------------------------------------------------------
    {
        "id": "turnstile_token_in_a_header_form_field_or_json_field",
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "valid-header",
                "json": {"email": "new@example.com"},
                "expect": {
                    "status": 201,
                    "siteverify_calls": 1,
                    "siteverify": {"response": "valid-header", "remoteip": DEFAULT_CLIENT},
                    "log": {"turnstile": "passed"},
                },
            },
            {
                "method": "POST",
                "path": "/api/users",
                "form": {"email": "form@example.com", "cf-turnstile-response": "valid-form"},
                "expect": {
                    "status": 201,
                    "json": {"received": "email=form%40example.com"},
                    "siteverify": {"response": "valid-form"},
                },
            },
            {
                "method": "POST",
                "path": "/api/users",
                "json": {"email": "json@example.com", "cf-turnstile-response": "valid-json"},
                "expect": {
                    "status": 201,
                    "json": {"received": {"email": "json@example.com", "cf-turnstile-response": ABSENT}},
                },
            },
        ],
    },
    {
        "id": "turnstile_missing_invalid_duplicate_expired_are_403",
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "json": {},
                "expect": {
                    "status": 403,
                    "json": {
                        "error": {"code": "turnstile_failed", "details": {"error-codes": ["missing-input-response"]}}
                    },
                    "siteverify_calls": 0,
                    "origin_calls": 0,
                },
            },
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "forged",
                "json": {},
                "expect": {
                    "status": 403,
                    "json": {"error": {"details": {"error-codes": ["invalid-input-response"]}}},
                    "origin_calls": 0,
                },
            },
            {"method": "POST", "path": "/api/users", "turnstile": "valid-once", "json": {}, "expect": {"status": 201}},
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "valid-once",
                "json": {},
                "expect": {"status": 403, "json": {"error": {"details": {"error-codes": ["timeout-or-duplicate"]}}}},
            },
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "expired-1",
                "json": {},
                "expect": {
                    "status": 403,
                    "json": {"error": {"details": {"error-codes": ["timeout-or-duplicate"]}}},
                    "log": {"turnstile": "failed"},
                },
            },
        ],
    },
    {
        "id": "turnstile_test_secret_always_passes",
        "env": {"TURNSTILE_SECRET_KEY": "1x0000000000000000000000000000000AA"},
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "XXXX.DUMMY.TOKEN.XXXX",
                "json": {},
                "expect": {"status": 201},
            }
        ],
    },
    {
        "id": "turnstile_test_secret_always_fails",
        "env": {"TURNSTILE_SECRET_KEY": "2x0000000000000000000000000000000AA"},
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "XXXX.DUMMY.TOKEN.XXXX",
                "json": {},
                "expect": {"status": 403, "json": {"error": {"details": {"error-codes": ["invalid-input-response"]}}}},
            }
        ],
    },
    {
        "id": "turnstile_test_secret_token_already_spent",
        "env": {"TURNSTILE_SECRET_KEY": "3x0000000000000000000000000000000AA"},
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "XXXX.DUMMY.TOKEN.XXXX",
                "json": {},
                "expect": {"status": 403, "json": {"error": {"details": {"error-codes": ["timeout-or-duplicate"]}}}},
            }
        ],
    },
    {
        "id": "turnstile_fails_closed_when_siteverify_is_unreachable",
        "env": {"TURNSTILE_SITEVERIFY_URL": "{CLOSED_URL}"},
        "steps": [
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "valid-1",
                "json": {},
                "expect": {"status": 503, "json": error("turnstile_unavailable"), "origin_calls": 0},
            }
        ],
    },
    # --- the API cache -------------------------------------------------------------------------------
    {
        "id": "anonymous_reads_miss_then_hit_with_age_and_any_query_order",
        "steps": [
            {
                "method": "GET",
                "path": "/api/events?b=2&a=1",
                "expect": {
                    "status": 200,
                    "headers": {
                        "x-cache": "MISS",
                        "etag": Re(r'"[0-9a-f]{32}"'),
                        "cache-control": "public, max-age=60, s-maxage=300",
                        "age": ABSENT,
                    },
                    "json": {"served": 1},
                    "origin_calls": 1,
                },
            },
            {
                "method": "GET",
                "path": "/api/events?a=1&b=2",
                "expect": {
                    "status": 200,
                    "headers": {"x-cache": "HIT", "age": Re(r"\d+"), "etag": Re(r'"[0-9a-f]{32}"')},
                    "json": {"served": 1},
                    "origin_calls": 0,
                    "log": {"cache": "HIT"},
                },
            },
            {
                "method": "HEAD",
                "path": "/api/events?a=1&b=2",
                "expect": {"status": 200, "body": b"", "headers": {"x-cache": "MISS"}},
            },
            {
                "method": "HEAD",
                "path": "/api/events?a=1&b=2",
                "expect": {"status": 200, "body": b"", "headers": {"x-cache": "HIT"}, "origin_calls": 0},
            },
        ],
        "kv": [
            {
                "ns": "API_CACHE_KV",
                "key": "cache:events:GET /api/events?a=1&b=2",
                "value": {"status": 200, "ttl": 300},
            },
            {"ns": "API_CACHE_KV", "prefix": "cache:", "count": 2},
        ],
    },
    {
        "id": "cached_etag_answers_if_none_match_with_304",
        "steps": [
            {"method": "GET", "path": "/api/events", "expect": {"headers": {"x-cache": "MISS"}}},
            {
                "method": "GET",
                "path": "/api/events",
                "headers": {"If-None-Match": '"nope", *'},
                "expect": {"status": 304, "body": b"", "headers": {"x-cache": "HIT", "etag": Re(r'"[0-9a-f]{32}"')}},
            },
        ],
    },
    {
        "id": "credentials_bypass_the_cache",
        "steps": [
            login(),
            {
                "method": "GET",
                "path": "/api/events",
                "session": True,
                "expect": {
                    "status": 200,
                    "headers": {"x-cache": "BYPASS", "cache-control": "private, no-store"},
                    "origin_calls": 1,
                },
            },
            {
                "method": "GET",
                "path": "/api/events",
                "jwt": jwt(),
                "expect": {"status": 200, "headers": {"x-cache": "BYPASS"}, "origin_calls": 1},
            },
        ],
        "kv": [{"ns": "API_CACHE_KV", "prefix": "cache:", "count": 0}],
    },
    {
        "id": "private_cookie_setting_and_error_answers_are_never_stored",
        "steps": [
            {
                "method": "GET",
                "path": "/api/private",
                "repeat": 2,
                "expect": {"status": 200, "headers": {"x-cache": "MISS"}, "origin_calls": 1},
            },
            {
                "method": "GET",
                "path": "/api/cookie",
                "repeat": 2,
                "expect": {"status": 200, "headers": {"x-cache": "MISS", "set-cookie": ABSENT}, "origin_calls": 1},
            },
            {
                "method": "GET",
                "path": "/api/missing",
                "repeat": 2,
                "expect": {"status": 404, "headers": {"x-cache": "MISS"}, "origin_calls": 1},
            },
            {
                "method": "GET",
                "path": "/api/echo",
                "repeat": 2,
                "expect": {"status": 200, "headers": {"x-cache": "MISS"}, "origin_calls": 1},
            },
        ],
        "kv": [{"ns": "API_CACHE_KV", "prefix": "cache:", "count": 0}],
    },
    {
        "id": "writes_bump_the_family_version_so_reads_miss",
        "steps": [
            login(),
            {"method": "GET", "path": "/api/events/1", "expect": {"headers": {"x-cache": "MISS"}}},
            {"method": "GET", "path": "/api/events/1", "expect": {"headers": {"x-cache": "HIT"}}},
            {
                "method": "PATCH",
                "path": "/api/events/1",
                "session": True,
                "json": {"status": "published"},
                "expect": {"status": 200},
            },
            {"method": "GET", "path": "/api/events/1", "expect": {"headers": {"x-cache": "MISS"}, "origin_calls": 1}},
            {"method": "GET", "path": "/api/events/1", "expect": {"headers": {"x-cache": "HIT"}}},
        ],
        "kv": [
            {"ns": "API_CACHE_KV", "key": "ver:events", "value": Re(r"[0-9a-f]{16}")},
            # The entry stored before the write was replaced by one of the new version.
            {"ns": "API_CACHE_KV", "prefix": "cache:events:", "count": 1},
            {"ns": "API_CACHE_KV", "key": "cache:events:GET /api/events/1", "value": {"version": Re(r"[0-9a-f]{16}")}},
        ],
    },
    {
        "id": "cache_entries_are_read_from_kv_and_expire_by_their_ttl",
        "seed": [
            {
                "ns": "API_CACHE_KV",
                "key": "cache:events:GET /api/events/fresh",
                "value": cache_entry(b'{"seeded":"fresh"}', 10, 300),
                "ttl": 300,
            },
            {
                "ns": "API_CACHE_KV",
                "key": "cache:events:GET /api/events/stale",
                "value": cache_entry(b'{"seeded":"stale"}', 400, 300),
                "ttl": 300,
            },
        ],
        "steps": [
            {
                "method": "GET",
                "path": "/api/events/fresh",
                "expect": {
                    "status": 200,
                    "json": {"seeded": "fresh"},
                    "headers": {"x-cache": "HIT", "age": Re(r"1[0-9]")},
                    "origin_calls": 0,
                },
            },
            {
                "method": "GET",
                "path": "/api/events/stale",
                "expect": {"status": 200, "json": {"served": 1}, "headers": {"x-cache": "MISS"}, "origin_calls": 1},
            },
        ],
    },
    {
        "id": "the_cache_flag_switches_the_cache_off",
        "seed": [{"ns": "FLAGS_KV", "key": "flags", "value": {"cache": False}}],
        "steps": [
            {
                "method": "GET",
                "path": "/api/events",
                "repeat": 2,
                "expect": {"headers": {"x-cache": "BYPASS"}, "origin_calls": 1},
            }
        ],
    },
    # --- preferences ---------------------------------------------------------------------------------
    {
        "id": "preferences_are_read_through_from_the_origin_then_served_from_kv",
        "steps": [
            login(),
            {
                "method": "GET",
                "path": "/api/me/preferences",
                "session": True,
                "expect": {
                    "status": 200,
                    "json": {"preferences": {"categories": [], "notify": False}},
                    "origin_calls": 1,
                    "origin": {"method": "GET", "path": "/me/preferences", "identity": {"user_id": ADA_ID}},
                    "headers": {"cache-control": "private, no-store"},
                },
            },
            {
                "method": "GET",
                "path": "/api/me/preferences",
                "session": True,
                "expect": {"status": 200, "json": {"preferences": {"locations": []}}, "origin_calls": 0},
            },
        ],
        "kv": [
            {
                "ns": "USER_PREFS_KV",
                "key": f"prefs:{ADA_ID}",
                "value": {"categories": [], "locations": [], "notify": False, "digest": False},
            }
        ],
    },
    {
        "id": "preferences_are_validated_and_written_through",
        "steps": [
            login(),
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "json": {"categories": ["social", "line-dance"], "locations": ["Chicago"], "notify": True},
                "expect": {
                    "status": 200,
                    "json": {"preferences": {"categories": ["social", "line-dance"], "digest": False}},
                    "origin": {
                        "method": "PUT",
                        "path": "/me/preferences",
                        "body": json.dumps(
                            {
                                "categories": ["social", "line-dance"],
                                "locations": ["Chicago"],
                                "notify": True,
                                "digest": False,
                            },
                            separators=(",", ":"),
                        ),
                    },
                },
            },
            {
                "method": "GET",
                "path": "/api/me/preferences",
                "session": True,
                "expect": {"json": {"preferences": {"notify": True, "locations": ["Chicago"]}}, "origin_calls": 0},
            },
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "json": {"categories": ["Not A Slug"], "colour": "red"},
                "expect": {
                    "status": 422,
                    "json": {
                        "error": {
                            "code": "validation_failed",
                            "details": [{"loc": ["colour"]}, {"loc": ["categories"]}],
                        }
                    },
                    "origin_calls": 0,
                },
            },
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "json": {"locations": ["x"] * 11, "digest": "yes"},
                "expect": {"status": 422, "origin_calls": 0},
            },
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "body": b"{not json",
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 400, "json": error("malformed_json")},
            },
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "json": {"locations": ["y" * 100] * 50},
                "expect": {"status": 413},
            },
            {"method": "PUT", "path": "/api/me/preferences", "json": {}, "expect": {"status": 401}},
        ],
        "kv": [
            {
                "ns": "USER_PREFS_KV",
                "key": f"prefs:{ADA_ID}",
                "value": {"categories": ["social", "line-dance"], "notify": True},
            }
        ],
    },
    {
        "id": "deeply_nested_json_is_refused_with_400_everywhere_the_edge_reads_json",
        "steps": [
            login(),
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "body": b"[" * 2000 + b"]" * 2000,
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 400, "json": error("json_too_deep"), "origin_calls": 0},
            },
            {
                "method": "POST",
                "path": "/api/users",
                "body": b'{"a":' * 2000 + b"1" + b"}" * 2000,
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 400, "json": error("json_too_deep"), "origin_calls": 0, "siteverify_calls": 0},
            },
            {
                "method": "POST",
                "path": "/push/subscriptions",
                "session": True,
                "body": b"[" * 3000,
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 400, "json": error("json_too_deep"), "origin_calls": 0},
            },
            {
                "method": "PUT",
                "path": "/api/me/preferences",
                "session": True,
                "json": {"categories": ["[[[[" * 20], "notify": True},
                "expect": {"status": 422, "origin_calls": 0},
            },
        ],
    },
    # --- flags ---------------------------------------------------------------------------------------
    {
        "id": "feature_flags_from_kv",
        "seed": [
            {
                "ns": "FLAGS_KV",
                "key": "flags",
                "value": {"read_only": True, "public": {"new_checkout": True, "banner": "Hi"}},
            }
        ],
        "steps": [
            {
                "method": "GET",
                "path": "/api/flags",
                "expect": {
                    "status": 200,
                    "json": {"flags": {"new_checkout": True, "banner": "Hi"}},
                    "headers": {"cache-control": "public, max-age=30"},
                },
            },
            {
                "method": "POST",
                "path": "/api/users",
                "turnstile": "valid-1",
                "json": {},
                "expect": {"status": 503, "json": error("read_only"), "origin_calls": 0},
            },
            {"method": "GET", "path": "/api/events", "expect": {"status": 200}},
        ],
    },
    # --- observability -------------------------------------------------------------------------------
    {
        "id": "request_id_and_trace_context_are_propagated_and_logged_without_secrets",
        "steps": [
            {
                **login(),
                "headers": {
                    "X-Request-Id": "client-req.0001_ok",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "tracestate": "vendor=1",
                },
                "request_id": "client-req.0001_ok",
                "expect": {
                    "status": 200,
                    "headers": {"x-request-id": "client-req.0001_ok"},
                    "origin": {
                        "headers": {
                            "x-request-id": "client-req.0001_ok",
                            "traceparent": Re(
                                r"00-4bf92f3577b34da6a3ce929d0e0e4736-(?!00f067aa0ba902b7)[0-9a-f]{16}-01"
                            ),
                            "tracestate": "vendor=1",
                        }
                    },
                    "log": {
                        "request_id": "client-req.0001_ok",
                        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                        "route": "/api/auth/login",
                        "status": 200,
                        "duration_ms": lambda value: isinstance(value, int | float),
                        "rate_limit": {"policy": "login", "allowed": True},
                    },
                    "log_lacks": [PASSWORD, SIGNING_SECRET, TURNSTILE_SECRET],
                },
            },
            {
                "method": "GET",
                "path": "/api/echo?token=very-secret-query",
                "session": True,
                "jwt": jwt(),
                "headers": {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
                "expect": {
                    "status": 200,
                    "log": {"path": "/api/echo", "trace_id": Re(r"(?!0{32})[0-9a-f]{32}")},
                    "log_lacks": ["very-secret-query", JWT_SECRET],
                },
            },
        ],
    },
    # --- push router ---------------------------------------------------------------------------------
    {
        "id": "push_vapid_public_key",
        "steps": [
            {
                "method": "GET",
                "path": "/push/vapid-public-key",
                "expect": {
                    "status": 200,
                    "json": {"publicKey": VAPID_PUBLIC_KEY},
                    "headers": {**SECURITY, "cache-control": "public, max-age=3600"},
                    "log": {"worker": "push"},
                },
            }
        ],
    },
    {
        "id": "push_subscribe_stores_at_the_edge_and_the_origin_then_unsubscribe_removes_both",
        "steps": [
            login(),
            {
                "method": "POST",
                "path": "/push/subscriptions",
                "session": True,
                "turnstile": token(),
                "json": subscription(),
                "expect": {
                    "status": 201,
                    "json": {"subscription": {"endpoint": ENDPOINT}},
                    "origin": {
                        "method": "POST",
                        "path": "/push/subscriptions",
                        "identity": {"user_id": ADA_ID},
                        "body": json.dumps(
                            {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": AUTH_SECRET}},
                            separators=(",", ":"),
                        ),
                    },
                    "headers": {"ratelimit-policy": '"push";q=10;w=60'},
                },
            },
            {
                "method": "DELETE",
                "path": "/push/subscriptions",
                "session": True,
                "json": {"endpoint": "https://other.example/x"},
                "expect": {"status": 404, "origin": {"method": "DELETE"}},
            },
        ],
        "kv": [
            {
                "ns": "PUSH_SUBS_KV",
                "key": push_key(),
                "value": {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": AUTH_SECRET}, "user_id": ADA_ID},
            }
        ],
    },
    {
        "id": "push_unsubscribe_removes_the_edge_copy",
        "steps": [
            login(),
            {
                "method": "POST",
                "path": "/push/subscriptions",
                "session": True,
                "turnstile": token(),
                "json": subscription(),
                "expect": {"status": 201},
            },
            {
                "method": "DELETE",
                "path": "/push/subscriptions",
                "session": True,
                "json": {"endpoint": ENDPOINT},
                "expect": {
                    "status": 204,
                    "origin": {"method": "DELETE", "body": json.dumps({"endpoint": ENDPOINT}, separators=(",", ":"))},
                },
            },
        ],
        "kv": [{"ns": "PUSH_SUBS_KV", "prefix": "push:", "count": 0}],
    },
    {
        "id": "push_subscribe_needs_a_session_and_turnstile",
        "steps": [
            {
                "method": "POST",
                "path": "/push/subscriptions",
                "turnstile": token(),
                "json": subscription(),
                "expect": {"status": 401, "origin_calls": 0},
            },
            login(),
            {
                "method": "POST",
                "path": "/push/subscriptions",
                "session": True,
                "json": subscription(),
                "expect": {"status": 403, "json": error("turnstile_failed"), "origin_calls": 0},
            },
            {
                "method": "POST",
                "path": "/push/subscriptions",
                "session": True,
                "turnstile": token(),
                "body": b"{oops",
                "headers": {"Content-Type": "application/json"},
                "expect": {"status": 400, "json": error("malformed_json")},
            },
        ],
        "kv": [{"ns": "PUSH_SUBS_KV", "prefix": "push:", "count": 0}],
    },
    {
        "id": "push_endpoints_on_private_hosts_are_refused",
        # Two users: each may try ten subscriptions a minute.
        "steps": [
            login(),
            *(
                _unsafe_endpoint(endpoint)
                for endpoint in (
                    "https://169.254.169.254/latest/meta-data",
                    "https://127.0.0.1/push",
                    "https://[::1]/push",
                    "https://[::ffff:127.0.0.1]/push",
                    "https://10.0.0.5/push",
                    "https://localhost/push",
                    "https://push.localhost/x",
                    "https://metadata.google.internal/computeMetadata/v1",
                )
            ),
            login("bob@example.com"),
            *(
                _unsafe_endpoint(endpoint)
                for endpoint in (
                    "https://2130706433/push",
                    "https://127.1/push",
                    "https://0x7f.1/push",
                    "http://fcm.googleapis.com/fcm/send/x",
                    "https://fcm.googleapis.com:8443/fcm/send/x",
                    "https://user:pw@fcm.googleapis.com/fcm/send/x",
                    "https://printer.local/x",
                )
            ),
        ],
        "kv": [{"ns": "PUSH_SUBS_KV", "prefix": "push:", "count": 0}],
    },
    {
        "id": "push_keys_must_be_base64url_of_the_right_lengths",
        "steps": [
            login(),
            *(
                {
                    "method": "POST",
                    "path": "/push/subscriptions",
                    "session": True,
                    "turnstile": token(),
                    "json": document,
                    "expect": {"status": 422, "json": error("invalid_subscription"), "origin_calls": 0},
                }
                for document in (
                    subscription(p256dh=P256DH[:-4]),
                    subscription(p256dh="C" + P256DH[1:]),  # not an uncompressed point
                    subscription(auth=base64.urlsafe_b64encode(bytes(15)).decode()),
                    subscription(auth="not base64!"),
                    {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH}},
                    {**subscription(), "extra": 1},
                    [ENDPOINT],
                )
            ),
        ],
    },
    # --- images --------------------------------------------------------------------------------------
    {
        "id": "images_are_negotiated_from_accept_with_q_values",
        "steps": [
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/320",
                "headers": {"Accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"},
                "expect": {
                    "status": 200,
                    "body": IMAGE_BYTES["avif"],
                    "headers": {
                        "content-type": "image/avif",
                        "vary": Re(r"(?i).*accept.*"),
                        "cache-control": "public, max-age=31536000, immutable",
                        "etag": '"320-avif"',
                    },
                },
            },
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/640",
                "headers": {"Accept": "image/webp,image/*;q=0.8"},
                "expect": {"status": 200, "body": IMAGE_BYTES["webp"], "headers": {"content-type": "image/webp"}},
            },
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/640",
                "headers": {"Accept": "image/avif;q=0.5, image/webp;q=0.9, image/jpeg"},
                "expect": {"status": 200, "body": IMAGE_BYTES["jpg"], "headers": {"content-type": "image/jpeg"}},
            },
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/640",
                "headers": {"Accept": "image/avif;q=0, image/webp;q=0.5, */*;q=0.1"},
                "expect": {"status": 200, "headers": {"content-type": "image/webp"}},
            },
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/320",
                "expect": {"status": 200, "headers": {"content-type": "image/jpeg"}},
            },
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID.upper()}/{IMAGE_ID}/320",
                "headers": {"Accept": "image/avif"},
                "expect": {"status": 200, "headers": {"content-type": "image/avif"}},
            },
        ],
    },
    {
        # Wildcards do not name a format: browsers that cannot decode AVIF or WebP send them too.
        "id": "images_avif_and_webp_only_to_clients_that_name_them",
        "steps": [
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/320",
                "headers": {"Accept": accept},
                "expect": {
                    "status": 200,
                    "body": IMAGE_BYTES[extension],
                    "headers": {"content-type": f"image/{media_type}", "vary": Re(r"(?i).*accept.*")},
                },
            }
            for accept, media_type, extension in (
                ("image/webp,*/*", "webp", "webp"),  # Firefox 65-92
                ("image/webp,image/apng,image/*,*/*;q=0.8", "webp", "webp"),  # Chrome 80-84
                ("*/*", "jpeg", "jpg"),  # curl, link-preview crawlers
                ("image/*", "jpeg", "jpg"),
                ("image/avif;q=0,image/*", "jpeg", "jpg"),
                ("image/avif;q=0.8,image/webp", "webp", "webp"),
                ("image/webp;q=0.6,image/avif;q=0.6", "avif", "avif"),
                ("image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5", "jpeg", "jpg"),  # Safari 13
            )
        ],
    },
    {
        "id": "only_real_variants_exist",
        "steps": [
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/800",
                "expect": {"status": 404, "json": error("not_found"), "origin_calls": 0},
            },
            {"method": "GET", "path": f"/img/{EVENT_ID}/{IMAGE_ID}/0320", "expect": {"status": 404}},
            {"method": "GET", "path": f"/img/not-a-uuid/{IMAGE_ID}/320", "expect": {"status": 404}},
            {"method": "GET", "path": f"/img/{EVENT_ID}/{IMAGE_ID}/320/extra", "expect": {"status": 404}},
            {
                "method": "GET",
                "path": f"/img/{EVENT_ID}/{IMAGE_ID}/1920",
                "headers": {"Accept": "image/webp"},
                "expect": {
                    "status": 404,
                    "headers": {"vary": Re(r"(?i).*accept.*"), "cache-control": "no-store"},
                },
            },
        ],
    },
]
