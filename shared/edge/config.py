"""The gateway's configuration: one typed object, read once at start from the worker's environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.edge.ports import KV_MIN_EXPIRATION_TTL

SIGNING_SECRET_MIN_LENGTH = 32
DEFAULT_SESSION_TTL_SECONDS = 86400
DEFAULT_ORIGIN_TIMEOUT_SECONDS = 10.0

# Environment variables that name origins, by the origin name routes refer to.
ORIGIN_VARIABLES = {"stepperslife": "STEPPERSLIFE_ORIGIN"}
REQUIRED_ORIGINS = ("stepperslife",)

# Every variable the gateway reads; the Workers adapter copies exactly these out of ``env``.
ENV_VARIABLES = (
    "EDGE_SIGNING_SECRET",
    *ORIGIN_VARIABLES.values(),
    "SESSION_TTL_SECONDS",
    "ORIGIN_TIMEOUT_SECONDS",
)


class ConfigurationError(ValueError):
    pass


def _origin_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must be an http(s) base URL without query or fragment; got {value!r}")
    # The origin path is joined with "/..." paths, so a trailing slash would double it.
    return value.rstrip("/")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number; got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum:g}; got {raw!r}")
    return value


@dataclass(frozen=True)
class GatewayConfig:
    signing_secret: str = field(repr=False)
    origins: Mapping[str, str]
    session_ttl_seconds: int = DEFAULT_SESSION_TTL_SECONDS
    origin_timeout_seconds: float = DEFAULT_ORIGIN_TIMEOUT_SECONDS

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
            origin: _origin_url(variable, env[variable])
            for origin, variable in ORIGIN_VARIABLES.items()
            if env.get(variable)
        }
        ttl = _number(env, "SESSION_TTL_SECONDS", DEFAULT_SESSION_TTL_SECONDS, KV_MIN_EXPIRATION_TTL)
        if ttl != int(ttl):
            raise ConfigurationError("SESSION_TTL_SECONDS must be a whole number of seconds")
        return cls(
            signing_secret=secret,
            origins=origins,
            session_ttl_seconds=int(ttl),
            origin_timeout_seconds=_number(env, "ORIGIN_TIMEOUT_SECONDS", DEFAULT_ORIGIN_TIMEOUT_SECONDS, 0.1),
        )
