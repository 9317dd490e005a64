"""The functions' configuration: one typed object, read once at start from the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from functions.adapters.postgres import url_for_database

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
            )
        except ValueError as exc:
            raise ConfigurationError(f"a numeric setting is not a number: {exc}") from exc

    def database_url_for(self, database: str) -> str:
        return url_for_database(self.database_url, self.database_name_prefix + database)
