"""The edge's configuration: one typed object, read once at start from the worker's environment.

Both workers read the same variables; each checks the ones it needs (``require``). Secrets
(``EDGE_SIGNING_SECRET``, ``JWT_SECRET``, ``TURNSTILE_SECRET_KEY``) never appear in ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from edge_workers.core.ports import KV_MIN_EXPIRATION_TTL
from shared.base64url import b64url_decode
from shared.push_subscription import is_p256_point

SIGNING_SECRET_MIN_LENGTH = 32
JWT_SECRET_MIN_LENGTH = 32
DEFAULT_SESSION_TTL_SECONDS = 86400
DEFAULT_ORIGIN_TIMEOUT_SECONDS = 10.0
DEFAULT_JWT_LEEWAY_SECONDS = 30
MAX_JWT_LEEWAY_SECONDS = 300
DEFAULT_FLAGS_CACHE_SECONDS = 30.0
SITEVERIFY_URL = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
RATE_LIMIT_BACKENDS = ("binding", "durable_object", "kv")

# Environment variables that name origins, by the origin name routes refer to. Routes whose origin
# is not configured are left out of the table (AGI Staffers and the media bucket are optional).
ORIGIN_VARIABLES = {
    "stepperslife": "STEPPERSLIFE_ORIGIN",
    "agistaffers": "AGISTAFFERS_ORIGIN",
    "media": "MEDIA_PUBLIC_BASE_URL",
}
REQUIRED_ORIGINS = ("stepperslife",)

# Every variable the edge reads; the Workers adapter copies exactly these out of ``env``.
ENV_VARIABLES = (
    "EDGE_SIGNING_SECRET",
    *ORIGIN_VARIABLES.values(),
    "SESSION_TTL_SECONDS",
    "ORIGIN_TIMEOUT_SECONDS",
    "RATE_LIMIT_BACKEND",
    "JWT_SECRET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_SECONDS",
    "TURNSTILE_SECRET_KEY",
    "TURNSTILE_SITEVERIFY_URL",
    "CORS_ALLOWED_ORIGINS",
    "VAPID_PUBLIC_KEY",
    "FLAGS_CACHE_SECONDS",
)


class ConfigurationError(ValueError):
    pass


def _base_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must be an http(s) base URL without query or fragment; got {value!r}")
    # Paths are joined as base + "/...", so a trailing slash would double it.
    return value.rstrip("/")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float | None = None) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number; got {raw!r}") from exc
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise ConfigurationError(f"{name} must be {bounds}; got {raw!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    value = _number(env, name, default, minimum, maximum)
    if value != int(value):
        raise ConfigurationError(f"{name} must be a whole number")
    return int(value)


def _origins_list(raw: str) -> tuple[str, ...]:
    origins = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigurationError(f"CORS_ALLOWED_ORIGINS entries are scheme://host[:port]; got {item!r}")
        # Browsers send the Origin header in lower case scheme and host.
        origins.append(item.lower())
    return tuple(origins)


def _redacted_repr(name: str, fields: dict[str, Any], secrets: tuple[str, ...]) -> str:
    shown = (
        f"{field}={'<redacted>' if field in secrets and value is not None else repr(value)}"
        for field, value in fields.items()
    )
    return f"{name}({', '.join(shown)})"


class JwtSettings(NamedTuple):
    secret: str
    issuer: str
    audience: str
    leeway_seconds: int = DEFAULT_JWT_LEEWAY_SECONDS

    def __repr__(self) -> str:
        return _redacted_repr("JwtSettings", self._asdict(), ("secret",))


class GatewayConfig(NamedTuple):
    signing_secret: str
    origins: Mapping[str, str]
    session_ttl_seconds: int = DEFAULT_SESSION_TTL_SECONDS
    origin_timeout_seconds: float = DEFAULT_ORIGIN_TIMEOUT_SECONDS
    rate_limit_backend: str = "binding"
    jwt: JwtSettings | None = None
    turnstile_secret: str | None = None
    siteverify_url: str = SITEVERIFY_URL
    cors_allowed_origins: tuple[str, ...] = ()
    vapid_public_key: str | None = None
    flags_cache_seconds: float = DEFAULT_FLAGS_CACHE_SECONDS

    def __repr__(self) -> str:
        return _redacted_repr("GatewayConfig", self._asdict(), ("signing_secret", "turnstile_secret"))

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> GatewayConfig:
        """Read and validate the environment; ``ConfigurationError`` names every missing variable."""
        missing = [
            name
            for name in ("EDGE_SIGNING_SECRET", *(ORIGIN_VARIABLES[origin] for origin in REQUIRED_ORIGINS))
            if not env.get(name)
        ]
        if missing:
            raise ConfigurationError(f"missing configuration: {', '.join(missing)}")
        secret = env["EDGE_SIGNING_SECRET"]
        if len(secret) < SIGNING_SECRET_MIN_LENGTH:
            raise ConfigurationError(f"EDGE_SIGNING_SECRET must be at least {SIGNING_SECRET_MIN_LENGTH} characters")
        origins = {
            origin: _base_url(variable, env[variable])
            for origin, variable in ORIGIN_VARIABLES.items()
            if env.get(variable)
        }
        backend = env.get("RATE_LIMIT_BACKEND") or "binding"
        if backend not in RATE_LIMIT_BACKENDS:
            raise ConfigurationError(f"RATE_LIMIT_BACKEND must be one of {', '.join(RATE_LIMIT_BACKENDS)}")
        return cls(
            signing_secret=secret,
            origins=origins,
            session_ttl_seconds=_whole(env, "SESSION_TTL_SECONDS", DEFAULT_SESSION_TTL_SECONDS, KV_MIN_EXPIRATION_TTL),
            origin_timeout_seconds=_number(env, "ORIGIN_TIMEOUT_SECONDS", DEFAULT_ORIGIN_TIMEOUT_SECONDS, 0.1),
            rate_limit_backend=backend,
            jwt=_jwt_settings(env),
            turnstile_secret=env.get("TURNSTILE_SECRET_KEY") or None,
            siteverify_url=_base_url("TURNSTILE_SITEVERIFY_URL", env.get("TURNSTILE_SITEVERIFY_URL") or SITEVERIFY_URL),
            cors_allowed_origins=_origins_list(env.get("CORS_ALLOWED_ORIGINS") or ""),
            vapid_public_key=_vapid_key(env.get("VAPID_PUBLIC_KEY") or None),
            flags_cache_seconds=_number(env, "FLAGS_CACHE_SECONDS", DEFAULT_FLAGS_CACHE_SECONDS, 0),
        )

    def require(self, *names: str) -> None:
        """Refuse to serve without settings a worker cannot do its job without (e.g. the push router's
        ``VAPID_PUBLIC_KEY``)."""
        present = {"VAPID_PUBLIC_KEY": self.vapid_public_key}
        missing = [name for name in names if not present.get(name)]
        if missing:
            raise ConfigurationError(f"missing configuration: {', '.join(missing)}")


def _jwt_settings(env: Mapping[str, str]) -> JwtSettings | None:
    secret = env.get("JWT_SECRET")
    if not secret:
        return None
    if len(secret) < JWT_SECRET_MIN_LENGTH:
        raise ConfigurationError(f"JWT_SECRET must be at least {JWT_SECRET_MIN_LENGTH} characters")
    missing = [name for name in ("JWT_ISSUER", "JWT_AUDIENCE") if not env.get(name)]
    if missing:
        # Tokens minted for another service must not be accepted here: iss and aud are always checked.
        raise ConfigurationError(f"JWT_SECRET needs {' and '.join(missing)}")
    return JwtSettings(
        secret=secret,
        issuer=env["JWT_ISSUER"],
        audience=env["JWT_AUDIENCE"],
        leeway_seconds=_whole(env, "JWT_LEEWAY_SECONDS", DEFAULT_JWT_LEEWAY_SECONDS, 0, MAX_JWT_LEEWAY_SECONDS),
    )


def _vapid_key(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise ConfigurationError("VAPID_PUBLIC_KEY must be base64url") from exc
    if not is_p256_point(raw):
        raise ConfigurationError("VAPID_PUBLIC_KEY must be an uncompressed P-256 public key (65 bytes, on the curve)")
    return value.rstrip("=")
