"""The functions' configuration: one typed object, read once at start from the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from functions.platform.adapters.postgres import url_for_database

SecretReader = Callable[[str], str]

# Queue names are deploy-time constants: Chalice's decorators and the CDK stack both refer to them.
DOMAIN_EVENTS_QUEUE = "agistack-domain-events"
IMAGE_UPLOADS_QUEUE = "agistack-image-uploads"


class ConfigurationError(RuntimeError):
    pass


def _read(env: Mapping[str, str], name: str, read_secret: SecretReader | None) -> str | None:
    """A value from ``NAME``, or from the secret that ``NAME_SECRET_ARN`` names (how Lambda gets it)."""
    value = env.get(name)
    if value:
        return value
    arn = env.get(f"{name}_SECRET_ARN")
    if arn and read_secret is not None:
        return read_secret(arn)
    return None


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str
    edge_signing_secret: str
    redis_url: str | None = None
    database_name_prefix: str = ""
    edge_max_skew_seconds: int = 60
    max_request_bytes: int = 1024 * 1024
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    media_bucket: str = "agistack-media"
    backup_bucket: str = "agistack-backups"
    domain_events_queue: str = DOMAIN_EVENTS_QUEUE
    image_uploads_queue: str = IMAGE_UPLOADS_QUEUE
    event_bus_name: str = "agistack"
    # "sqs": the relay sends domain events straight to the queue; "eventbridge": to the bus, whose
    # rules fan them out (the queue being one target).
    domain_events_via: str = "sqs"
    site_url: str = "https://stepperslife.com"
    flowise_url: str | None = None
    flowise_chatflow_id: str | None = None
    flowise_api_key: str | None = None
    flowise_timeout_seconds: float = 10.0
    vapid_private_key: str | None = None
    vapid_public_key: str | None = None
    vapid_subject: str | None = None
    # Hosts accepted as push endpoints without the public-address check: tests and dev only.
    push_allow_hosts: tuple[str, ...] = ()
    push_concurrency: int = 8
    cloudflare_api_base: str = "https://api.cloudflare.com/client/v4"
    cloudflare_account_id: str | None = None
    cloudflare_api_token: str | None = None
    push_subs_kv_id: str | None = None
    api_cache_kv_id: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> Settings:
        database_url = _read(env, "DATABASE_URL", read_secret)
        signing_secret = _read(env, "EDGE_SIGNING_SECRET", read_secret)
        missing = [
            name
            for name, value in (("DATABASE_URL", database_url), ("EDGE_SIGNING_SECRET", signing_secret))
            if not value
        ]
        if missing or database_url is None or signing_secret is None:
            raise ConfigurationError(f"missing configuration: {', '.join(missing)}")
        if len(signing_secret) < 32:
            raise ConfigurationError("EDGE_SIGNING_SECRET must be at least 32 characters")
        defaults = cls(database_url=database_url, edge_signing_secret=signing_secret)
        try:
            return cls(
                database_url=database_url,
                edge_signing_secret=signing_secret,
                redis_url=_read(env, "REDIS_URL", read_secret),
                database_name_prefix=env.get("DATABASE_NAME_PREFIX", ""),
                edge_max_skew_seconds=int(env.get("EDGE_MAX_SKEW_SECONDS", defaults.edge_max_skew_seconds)),
                max_request_bytes=int(env.get("MAX_REQUEST_BYTES", defaults.max_request_bytes)),
                aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
                aws_region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or defaults.aws_region,
                media_bucket=env.get("MEDIA_BUCKET", defaults.media_bucket),
                backup_bucket=env.get("BACKUP_BUCKET", defaults.backup_bucket),
                event_bus_name=env.get("EVENT_BUS_NAME", defaults.event_bus_name),
                domain_events_via=_choice(env, "DOMAIN_EVENTS_VIA", ("sqs", "eventbridge"), defaults.domain_events_via),
                site_url=env.get("SITE_URL", defaults.site_url).rstrip("/"),
                flowise_url=(env.get("FLOWISE_URL") or "").rstrip("/") or None,
                flowise_chatflow_id=env.get("FLOWISE_CHATFLOW_ID") or None,
                flowise_api_key=_read(env, "FLOWISE_API_KEY", read_secret),
                flowise_timeout_seconds=float(env.get("FLOWISE_TIMEOUT_SECONDS", defaults.flowise_timeout_seconds)),
                vapid_private_key=_read(env, "VAPID_PRIVATE_KEY", read_secret),
                vapid_public_key=env.get("VAPID_PUBLIC_KEY") or None,
                vapid_subject=env.get("VAPID_SUBJECT") or None,
                push_allow_hosts=tuple(
                    host.strip().lower() for host in env.get("PUSH_ALLOW_HOSTS", "").split(",") if host.strip()
                ),
                push_concurrency=max(1, int(env.get("PUSH_CONCURRENCY", defaults.push_concurrency))),
                cloudflare_api_base=env.get("CLOUDFLARE_API_BASE", defaults.cloudflare_api_base).rstrip("/"),
                cloudflare_account_id=env.get("CLOUDFLARE_ACCOUNT_ID") or None,
                cloudflare_api_token=_read(env, "CLOUDFLARE_API_TOKEN", read_secret),
                push_subs_kv_id=env.get("PUSH_SUBS_KV_ID") or None,
                api_cache_kv_id=env.get("API_CACHE_KV_ID") or None,
            )
        except ValueError as exc:
            raise ConfigurationError(f"a numeric setting is not a number: {exc}") from exc

    def database_url_for(self, database: str) -> str:
        return url_for_database(self.database_url, self.database_name_prefix + database)
