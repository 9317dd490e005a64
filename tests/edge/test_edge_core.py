"""The edge core's pure parts, with fake clocks and in-memory ports: the algorithms and parsers that the
conformance table exercises end to end, checked here edge case by edge case."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from edge_workers.core.cache import DEFAULT_TTL_SECONDS, ResponseCache, cache_ttl, storable_ttl
from edge_workers.core.composition import GATEWAY, build, required_rate_limit_bindings, route_table
from edge_workers.core.config import ConfigurationError, GatewayConfig, JwtSettings
from edge_workers.core.flags import FlagSource, parse_flags
from edge_workers.core.gateway import handle
from edge_workers.core.http import EdgeRequest, EdgeResponse, Headers, OutboundRequest
from edge_workers.core.media import choose_format, stored_key
from edge_workers.core.ports import KV_MAX_LIST_LIMIT, KvKey, KvListResult, OriginUnavailable
from edge_workers.core.push import check_endpoint, validate_subscription
from edge_workers.core.ratelimit import KvFixedWindowLimiter, SlidingWindowObject, client_key
from edge_workers.core.routes import Quota, RateLimitPolicy
from edge_workers.core.tokens import InvalidToken, verify_hs256
from edge_workers.core.turnstile import HttpSiteverify, OfflineTestKeys, TurnstileFailed, check_token, take_token
from shared.envelope import Identity
from shared.errors import ValidationFailed
from shared.media import AVIF, JPEG, WEBP
from tests.edge.edge_helpers import FakeClock, run
from tests.shared.keys import p256_point

SECRET = "core-test-secret-" + "c" * 32
JWT = JwtSettings(secret="jwt-core-secret-" + "j" * 32, issuer="https://issuer.example", audience="api")


class MemoryKv:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.ttls: dict[str, int | None] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        return {key: self.values.get(key) for key in keys}

    async def put(self, key: str, value: str, *, expiration_ttl: int | None = None) -> None:
        self.values[key], self.ttls[key] = value, expiration_ttl

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    async def list(
        self, *, prefix: str = "", limit: int = KV_MAX_LIST_LIMIT, cursor: str | None = None
    ) -> KvListResult:
        return KvListResult([KvKey(key) for key in sorted(self.values) if key.startswith(prefix)], True)


class MemoryStorage:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put(self, key: str, value: str) -> None:
        self.values[key] = value


class FixedRandom:
    def token_urlsafe(self, nbytes: int) -> str:
        return "r" * nbytes

    def token_hex(self, nbytes: int) -> str:
        return "ab" * nbytes


# --- configuration ---------------------------------------------------------------------------------


BASE = {"EDGE_SIGNING_SECRET": SECRET, "STEPPERSLIFE_ORIGIN": "https://api.example"}


def test_configuration_names_every_problem() -> None:
    with pytest.raises(ConfigurationError, match="EDGE_SIGNING_SECRET, STEPPERSLIFE_ORIGIN"):
        GatewayConfig.from_mapping({})
    with pytest.raises(ConfigurationError, match="JWT_ISSUER and JWT_AUDIENCE"):
        GatewayConfig.from_mapping({**BASE, "JWT_SECRET": "j" * 32})
    with pytest.raises(ConfigurationError, match="JWT_SECRET must be at least"):
        GatewayConfig.from_mapping({**BASE, "JWT_SECRET": "short", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"})
    with pytest.raises(ConfigurationError, match="RATE_LIMIT_BACKEND"):
        GatewayConfig.from_mapping({**BASE, "RATE_LIMIT_BACKEND": "redis"})
    with pytest.raises(ConfigurationError, match="CORS_ALLOWED_ORIGINS"):
        GatewayConfig.from_mapping({**BASE, "CORS_ALLOWED_ORIGINS": "https://app.example/path"})
    with pytest.raises(ConfigurationError, match="VAPID_PUBLIC_KEY"):
        GatewayConfig.from_mapping({**BASE, "VAPID_PUBLIC_KEY": base64.urlsafe_b64encode(bytes(65)).decode()})
    with pytest.raises(ConfigurationError, match="JWT_LEEWAY_SECONDS"):
        GatewayConfig.from_mapping(
            {**BASE, "JWT_SECRET": "j" * 32, "JWT_ISSUER": "i", "JWT_AUDIENCE": "a", "JWT_LEEWAY_SECONDS": "3600"}
        )
    with pytest.raises(ConfigurationError, match="VAPID_PUBLIC_KEY"):
        GatewayConfig.from_mapping(BASE).require("VAPID_PUBLIC_KEY")


def test_configuration_keeps_secrets_out_of_repr() -> None:
    config = GatewayConfig.from_mapping(
        {
            **BASE,
            "JWT_SECRET": "jwt-secret-" + "z" * 32,
            "JWT_ISSUER": "https://issuer.example",
            "JWT_AUDIENCE": "api",
            "TURNSTILE_SECRET_KEY": "turnstile-secret-value",
            "CORS_ALLOWED_ORIGINS": "https://App.Example, https://admin.example:8443",
        }
    )
    assert config.cors_allowed_origins == ("https://app.example", "https://admin.example:8443")
    for secret in (SECRET, "jwt-secret-", "turnstile-secret-value"):
        assert secret not in repr(config)


# --- bearer tokens ---------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(header: Mapping[str, Any], claims: Mapping[str, Any], secret: str = JWT.secret) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


NOW = 1_800_000_000.0
CLAIMS = {"sub": "u1", "iss": JWT.issuer, "aud": JWT.audience, "exp": NOW + 60}
HS256 = {"alg": "HS256", "typ": "JWT"}


def test_a_valid_token_gives_its_identity() -> None:
    identity = verify_hs256(mint(HS256, {**CLAIMS, "role": "admin", "email": "a@b.c"}), JWT, NOW)
    assert identity == Identity(user_id="u1", role="admin", email="a@b.c")
    assert verify_hs256(mint({"alg": "HS256"}, CLAIMS), JWT, NOW).role == "user"


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"alg": "none"}, CLAIMS, "only HS256"),
        ({"alg": "hs256"}, CLAIMS, "only HS256"),
        ({"alg": "HS256", "crit": ["exp"]}, CLAIMS, "not supported"),
        ({"alg": "HS256", "typ": "JWE"}, CLAIMS, "not supported"),
        (HS256, {**CLAIMS, "exp": NOW - 31}, "expired"),
        (HS256, {key: value for key, value in CLAIMS.items() if key != "exp"}, "no exp"),
        (HS256, {**CLAIMS, "exp": True}, "must be a number"),
        (HS256, {**CLAIMS, "nbf": NOW + 31}, "not valid yet"),
        (HS256, {**CLAIMS, "iat": NOW + 31}, "future"),
        (HS256, {**CLAIMS, "sub": ""}, "subject"),
        (HS256, {**CLAIMS, "role": "root"}, "role"),
        (HS256, {**CLAIMS, "aud": ["x", "y"]}, "audience"),
    ],
)
def test_tokens_are_refused_for_each_reason(header: dict[str, Any], claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verify_hs256(mint(header, claims), JWT, NOW)


def test_malformed_tokens_are_refused() -> None:
    token = mint(HS256, CLAIMS)
    for broken in ("", "a.b", token + ".x", token[:-2] + "!!", "x" * 9000, "e30.e30.", token.replace(".", "..", 1)):
        with pytest.raises(InvalidToken):
            verify_hs256(broken, JWT, NOW)


# --- rate limiting ---------------------------------------------------------------------------------


def test_client_keys() -> None:
    assert client_key("203.0.113.9") == "ip:203.0.113.9"
    assert client_key("::ffff:203.0.113.9") == "ip:203.0.113.9"
    assert client_key("2001:db8:aa:bb:1:2:3:4") == "ip:2001:db8:aa:bb::/64"
    assert client_key("") == client_key("not-an-ip") == "ip:unknown"


def test_the_sliding_window_counts_exactly_and_frees_slots_as_hits_age() -> None:
    clock = FakeClock()
    storage = MemoryStorage()
    window = SlidingWindowObject(storage, clock)

    def hit() -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(run(window.hit(3, 60_000)))
        return answer

    remaining = []
    for _ in range(3):
        remaining.append(hit()["remaining"])
        clock.current += 10
    assert remaining == [2, 1, 0]
    assert hit() == {"allowed": False, "remaining": 0, "reset_ms": 30_000}
    clock.current += 30  # the first hit leaves the window: exactly one slot frees
    assert hit()["allowed"] is True
    assert hit()["allowed"] is False
    # An evicted object resumes from its storage.
    resumed = SlidingWindowObject(storage, clock)
    assert json.loads(run(resumed.hit(3, 60_000)))["allowed"] is False


def test_the_sliding_window_is_safe_under_concurrent_hits() -> None:
    window = SlidingWindowObject(MemoryStorage(), FakeClock())

    async def burst() -> list[str]:
        return list(await asyncio.gather(*(window.hit(10, 60_000) for _ in range(25))))

    outcomes = [json.loads(answer)["allowed"] for answer in run(burst())]
    assert outcomes.count(True) == 10


def test_the_kv_fixed_window_is_anchored_at_the_first_hit() -> None:
    clock, kv = FakeClock(), MemoryKv()
    limiter = KvFixedWindowLimiter(kv, clock)
    policy = RateLimitPolicy("t", Quota(2, 10))
    decisions = [run(limiter.check("ip:1", policy, False)) for _ in range(3)]
    assert [(d.allowed, d.remaining, d.reset) for d in decisions] == [(True, 1, 10), (True, 0, 10), (False, 0, 10)]
    assert kv.ttls["rate:t:ip:ip:1"] == 60  # the KV minimum, though the window is 10 s
    clock.current += 10
    assert run(limiter.check("ip:1", policy, False)).remaining == 1
    kv.values["rate:t:ip:ip:1"] = "garbage"
    assert run(limiter.check("ip:1", policy, False)).allowed


def test_decision_headers_follow_the_ietf_fields() -> None:
    clock = FakeClock()
    decision = run(KvFixedWindowLimiter(MemoryKv(), clock).check("k", RateLimitPolicy("api", Quota(5, 60)), False))
    assert decision.headers() == [("ratelimit-policy", '"api";q=5;w=60'), ("ratelimit", '"api";r=4;t=60')]


# --- Turnstile -------------------------------------------------------------------------------------


def test_the_token_is_taken_from_a_header_form_or_json_body() -> None:
    json_headers = Headers({"content-type": "application/json; charset=utf-8"})
    assert take_token(Headers({"cf-turnstile-response": "h"}), b"{}") == ("h", b"{}")
    assert take_token(json_headers, b'{"a":1,"cf-turnstile-response":"j"}') == ("j", b'{"a":1}')
    form = Headers({"content-type": "application/x-www-form-urlencoded"})
    assert take_token(form, b"a=1&cf-turnstile-response=f&b=2") == ("f", b"a=1&b=2")
    assert take_token(form, b"a=1") == (None, b"a=1")
    assert take_token(json_headers, b"[1]") == (None, b"[1]")
    assert take_token(json_headers, b"{bad") == (None, b"{bad")
    assert take_token(Headers({"content-type": "multipart/form-data; boundary=x"}), b"--x") == (None, b"--x")


class FlakyOrigin:
    """Fails the first ``failures`` calls, then answers like siteverify."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[bytes] = []

    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        self.bodies.append(request.body)
        if len(self.bodies) <= self.failures:
            raise OriginUnavailable("reset")
        return EdgeResponse.json(200, {"success": True, "error-codes": []})


def test_siteverify_is_retried_once_with_the_same_idempotency_key() -> None:
    origin = FlakyOrigin(failures=1)
    run(check_token(HttpSiteverify(origin, "https://sv.example"), "secret", "tok", "203.0.113.1", "key-1"))
    assert len(origin.bodies) == 2 and origin.bodies[0] == origin.bodies[1]
    assert b"idempotency_key=key-1" in origin.bodies[0] and b"remoteip=203.0.113.1" in origin.bodies[0]
    with pytest.raises(Exception, match="unreachable"):
        run(check_token(HttpSiteverify(FlakyOrigin(failures=2), "https://sv.example"), "s", "t", "", "k"))


def test_the_documented_test_secrets_are_answered_offline() -> None:
    offline = OfflineTestKeys(HttpSiteverify(FlakyOrigin(failures=9), "https://unreachable.example"))
    run(check_token(offline, "1x0000000000000000000000000000000AA", "XXXX.DUMMY.TOKEN.XXXX", "", "k"))
    for secret, code in (
        ("2x0000000000000000000000000000000AA", "invalid-input-response"),
        ("3x0000000000000000000000000000000AA", "timeout-or-duplicate"),
    ):
        with pytest.raises(TurnstileFailed) as failed:
            run(check_token(offline, secret, "XXXX.DUMMY.TOKEN.XXXX", "", "k"))
        assert failed.value.details == {"error-codes": [code]}
    with pytest.raises(Exception, match="unreachable"):
        run(check_token(offline, "a-real-secret", "token", "", "k"))


# --- cache -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        (None, DEFAULT_TTL_SECONDS),
        ("public", DEFAULT_TTL_SECONDS),
        ("public, max-age=60, s-maxage=300", 300),
        ("max-age=45", 45),
        ("max-age=0", None),
        ("s-maxage=10000000", 86400),
        ("private, max-age=60", None),
        ("no-store", None),
        ("No-Cache", None),
        ("max-age=abc", None),
        ('max-age="120"', 120),
    ],
)
def test_ttl_comes_from_the_origin_cache_control(cache_control: str | None, ttl: int | None) -> None:
    assert cache_ttl(cache_control) == ttl


def test_only_plain_200_answers_are_storable() -> None:
    ok = EdgeResponse(200, Headers({"cache-control": "max-age=60"}), b"{}")
    assert storable_ttl(ok) == 60
    assert storable_ttl(EdgeResponse(203, ok.headers, b"")) is None
    assert storable_ttl(EdgeResponse(200, Headers({"set-cookie": "a=1"}), b"")) is None
    assert storable_ttl(EdgeResponse(200, Headers(), b"x" * (512 * 1024 + 1))) is None
    assert storable_ttl(EdgeResponse(200, Headers({"vary": "Accept-Encoding"}), b"")) == DEFAULT_TTL_SECONDS
    assert storable_ttl(EdgeResponse(200, Headers({"vary": "Accept-Encoding, Accept-Language"}), b"")) is None


def test_long_requests_are_hashed_into_the_key_and_short_ttls_expire_in_the_entry() -> None:
    key = ResponseCache.key("events", "GET", "/api/events", "q=" + "x" * 400)
    assert key.startswith("cache:events:sha256:") and len(key) < 100
    clock, kv = FakeClock(), MemoryKv()
    cache = ResponseCache(kv, clock, FixedRandom())
    run(cache.store("k", "0", EdgeResponse(200, Headers({"etag": '"1"', "x-secret": "no"}), b"body"), 5))
    assert kv.ttls["k"] == 60
    hit = run(cache.lookup("events", "k"))
    assert hit.response is not None and hit.response.body == b"body"
    assert hit.response.headers.items() == [("etag", '"1"')]
    clock.current += 5
    expired = run(cache.lookup("events", "k"))
    assert expired.response is None and expired.version == "0"


def test_an_entry_of_another_version_of_its_family_is_a_miss() -> None:
    clock, kv = FakeClock(), MemoryKv()
    cache = ResponseCache(kv, clock, FixedRandom())
    run(cache.store("k", "0", EdgeResponse(200, Headers(), b"old"), 300))
    run(cache.bump("events"))
    after_write = run(cache.lookup("events", "k"))
    assert after_write.response is None and after_write.version == "abababababababab"
    # An answer fetched before the write but stored after it carries the old version: still a miss.
    run(cache.store("k", "0", EdgeResponse(200, Headers(), b"raced"), 300))
    assert run(cache.lookup("events", "k")).response is None
    run(cache.store("k", after_write.version, EdgeResponse(200, Headers(), b"new"), 300))
    current = run(cache.lookup("events", "k")).response
    assert current is not None and current.body == b"new"
    assert run(cache.lookup("tickets", "k")).response is None  # another family's version


# --- flags -----------------------------------------------------------------------------------------


def test_flags_parse_and_are_cached_in_the_isolate() -> None:
    assert parse_flags(None).cache is True
    assert parse_flags("not json").read_only is False
    assert parse_flags('{"read_only": "yes", "public": {"a": 1, "b": [1]}}').read_only is False
    assert parse_flags('{"public": {"a": 1, "b": [1]}}').public == {"a": 1}
    clock, kv = FakeClock(), MemoryKv()
    kv.values["flags"] = '{"read_only": true}'
    source = FlagSource(kv, clock, 30)
    assert run(source.get()).read_only
    kv.values["flags"] = '{"read_only": false}'
    assert run(source.get()).read_only  # still cached
    clock.current += 30
    assert not run(source.get()).read_only


# --- media -----------------------------------------------------------------------------------------


# What real clients send when they fetch an <img>: AVIF and WebP only to those that name them.
BROWSER_ACCEPT = [
    ("Chrome 85+, Edge 121+, Opera", "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", AVIF),
    ("Chrome 80-84 (no AVIF)", "image/webp,image/apng,image/*,*/*;q=0.8", WEBP),
    ("Edge 85-120 (Chromium without AVIF)", "image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", WEBP),
    ("Firefox 93+", "image/avif,image/webp,*/*", AVIF),
    ("Firefox 128+", "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5", AVIF),
    ("Firefox 65-92 (no AVIF)", "image/webp,*/*", WEBP),
    ("Firefox 47-64", "*/*", JPEG),
    (
        "Safari 17+ (macOS 14)",
        "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
        "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        AVIF,
    ),
    ("Safari 14-15", "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5", WEBP),
    ("Safari 13 and older", "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5", JPEG),
    ("Edge 18 (EdgeHTML)", "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5", JPEG),
    ("Internet Explorer 11", "image/png, image/svg+xml, image/jxr, image/*;q=0.8, */*;q=0.5", JPEG),
    ("curl, wget, link-preview crawlers", "*/*", JPEG),
    ("a generic image client", "image/*", JPEG),
    ("no Accept at all", None, JPEG),
    ("an empty Accept", "", JPEG),
]


@pytest.mark.parametrize(("client", "accept", "chosen"), BROWSER_ACCEPT, ids=[row[0] for row in BROWSER_ACCEPT])
def test_real_clients_get_a_format_they_named(client: str, accept: str | None, chosen: object) -> None:
    assert choose_format(accept) == chosen


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("image/avif", AVIF),
        ("IMAGE/AVIF", AVIF),
        ("image/webp", WEBP),
        ("image/avif;q=0,image/*", JPEG),  # refused, and a wildcard does not name WebP
        ("image/avif;q=0,image/webp", WEBP),
        ("image/avif;q=0, */*", JPEG),
        ("image/avif;q=0.5,image/webp;q=0.9,image/jpeg", JPEG),  # JPEG weighed above both
        ("image/avif;q=0.5,image/webp;q=0.9,image/jpeg;q=0.8", WEBP),
        ("image/avif;q=0.9,image/webp", WEBP),  # the highest q among the named
        ("image/webp;q=0.7,image/avif;q=0.7,*/*;q=0.7", AVIF),  # ties go to AVIF
        ("image/avif;q=0.1,image/webp;q=0.2,image/jpeg;q=0.3", JPEG),
        ("image/webp;q=0.5,*/*", JPEG),  # */* weighs JPEG at 1
        ("image/avif,image/jpeg;q=0", AVIF),
        ("image/avif;q=1.000", AVIF),
        ("image/avif;q=0.000,image/webp", WEBP),
        ("image/avif;q=abc,image/webp;q=0.4", WEBP),  # a malformed q is a refusal, not a guess
        ("image/avif;q=2,image/webp;q=nan", JPEG),
        ("image/avif;q=1e0", JPEG),
        ("image/avif, image/avif;q=0", JPEG),  # a repeated range keeps its refusal
        ("image/avif;level=1;q=0.8,image/webp;q=0.5", AVIF),  # other parameters are ignored
        ("text/html", JPEG),
        ("image/webp;q=abc,image/jpeg", JPEG),
        (",,;,image/webp", WEBP),
    ],
)
def test_q_values_are_honoured(accept: str, chosen: object) -> None:
    assert choose_format(accept) == chosen


def test_variant_keys() -> None:
    event, image = "6f1c2f8e-3b7a-4c1e-9d2a-0b5e8f7a6c41", "0d9e3c55-1f2a-4b6c-8e7d-9a0b1c2d3e4f"
    assert stored_key(f"/img/{event}/{image}/1920", WEBP) == f"public/{event}/{image}/1920.webp"
    assert stored_key(f"/img/{event.upper()}/{image}/320", JPEG) == f"public/{event}/{image}/320.jpg"


# --- push subscriptions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://updates.push.services.mozilla.com/wpush/v2/abc",
        "https://web.push.apple.com/QG9",
        "https://wns2-by3p.notify.windows.com/w/?token=abc",
        "https://[2606:4700::1111]/push",
        "https://8.8.8.8:443/push",
    ],
)
def test_public_push_endpoints_are_accepted(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://192.168.1.10/x",
        "https://100.64.0.1/x",
        "https://[fe80::1]/x",
        "https://[fd00::1]/x",
        "https://0.0.0.0/x",
        "https://router.lan/x",
        "https://nas.home.arpa/x",
        "https://example.internal/x",
        "https://intranet/x",
        "https://-bad-.example/x",
        "https://a..b.example/x",
        "https://host.example:0/x",
        "https://host.example:99999/x",
        "ftp://host.example/x",
        "https://" + "a" * 2100 + ".example/",
        42,
    ],
)
def test_private_or_malformed_push_endpoints_are_refused(endpoint: Any) -> None:
    with pytest.raises(ValidationFailed):
        check_endpoint(endpoint)


def test_a_browser_subscription_is_reduced_to_endpoint_and_keys() -> None:
    p256dh = _b64(p256_point(2))
    auth = _b64(bytes(16)) + "=="
    document = {
        "endpoint": "https://fcm.googleapis.com/x",
        "expirationTime": 1.7e12,
        "keys": {"p256dh": p256dh, "auth": auth},
    }
    assert validate_subscription(document) == {
        "endpoint": "https://fcm.googleapis.com/x",
        "keys": {"p256dh": p256dh, "auth": auth},
    }
    with pytest.raises(ValidationFailed):
        validate_subscription({**document, "expirationTime": "soon"})


# --- composition and the pipeline ------------------------------------------------------------------


class FailingWrites(MemoryKv):
    async def put(self, key: str, value: str, *, expiration_ttl: int | None = None) -> None:
        raise RuntimeError("KV PUT failed: 429 Too Many Requests")


class CacheableOrigin:
    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        return EdgeResponse.json(200, {"ok": True}, Headers({"cache-control": "public, max-age=60"}))


class Records:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def write(self, record: Mapping[str, object]) -> None:
        self.records.append(dict(record))


class AlwaysAllow:
    async def limit(self, key: str) -> bool:
        return True


def _deps(stores: Mapping[str, Any], log: Records | None = None, **env: str) -> Any:
    config = GatewayConfig.from_mapping({**BASE, **env})
    bindings = {name: AlwaysAllow() for name in required_rate_limit_bindings(route_table(GATEWAY, config))}
    origin = CacheableOrigin()
    return build(
        GATEWAY,
        config,
        stores=stores,
        origin=origin,
        siteverify=HttpSiteverify(origin, config.siteverify_url),
        bindings=bindings,
        objects=None,
        clock=FakeClock(),
        log=log or Records(),
    )


GATEWAY_STORES = {"SESSION_KV": MemoryKv(), "API_CACHE_KV": MemoryKv(), "USER_PREFS_KV": MemoryKv()}


def test_a_failed_deferred_write_is_logged_and_the_answer_stands() -> None:
    log = Records()
    deps = _deps({**GATEWAY_STORES, "API_CACHE_KV": FailingWrites()}, log)
    response = run(handle(EdgeRequest("GET", "/api/events", client_ip="203.0.113.1"), deps))
    assert response.status == 200 and json.loads(response.body) == {"ok": True}
    assert [record["msg"] for record in log.records] == ["request", "deferred_failed"]
    assert log.records[1]["error"] == "RuntimeError"


def test_composition_names_missing_bindings_and_settings() -> None:
    with pytest.raises(ConfigurationError, match="API_CACHE_KV, USER_PREFS_KV"):
        _deps({"SESSION_KV": MemoryKv()})
    with pytest.raises(ConfigurationError, match="RATE_LIMIT_KV"):
        _deps(GATEWAY_STORES, RATE_LIMIT_BACKEND="kv")
    with pytest.raises(ConfigurationError, match="RATE_LIMITER"):
        _deps(GATEWAY_STORES, RATE_LIMIT_BACKEND="durable_object")
    config = GatewayConfig.from_mapping(BASE)
    with pytest.raises(ConfigurationError, match="missing rate limiting bindings: RL_API_IP"):
        build(
            GATEWAY,
            config,
            stores=GATEWAY_STORES,
            origin=CacheableOrigin(),
            siteverify=HttpSiteverify(CacheableOrigin(), config.siteverify_url),
            bindings={},
            objects=None,
        )
    # Routes of unconfigured optional origins (AGI Staffers, media) are simply absent.
    assert {route.path for route in route_table(GATEWAY, config).routes} & {"/img/", "/api/agi/"} == set()
