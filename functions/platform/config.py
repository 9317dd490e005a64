"""The functions' configuration: typed groups, one per integration, read once at start from the environment.

Each group reads its own variables (``from_env``); ``Settings`` composes them. A wrong or missing
value fails the start with a ``ConfigurationError`` that names every missing variable at once, rather
than the first request that happens to need it. Secrets come from ``NAME`` (locally) or from the
Secrets Manager secret that ``NAME_SECRET_ARN`` names (how Lambda gets them: the environment holds
only ARNs; see ``secret_arn_variable``). Each Lambda function's environment holds the ARNs of only
the secrets its code path reads (``SECRETS_OF_GROUP``; each product's ``lambda_functions`` module),
so a function reads no other secret: optional groups default to "not configured", and the edge
group (the API's alone) is absent where neither its value nor its ARN is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from functions.platform import topology
from functions.platform.adapters.postgres import url_for_database

SecretReader = Callable[[str], str]


class ConfigurationError(RuntimeError):
    pass


class MissingConfiguration(ConfigurationError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"missing configuration: {', '.join(names)}")
        self.names = names


# The secret settings each group reads (tests/deploy/test_secrets.py checks them against ``from_env``):
# the one list that per-function grants are made from.
SECRETS_OF_GROUP: Mapping[str, tuple[str, ...]] = {
    "database": ("DATABASE_URL",),
    "edge": ("EDGE_SIGNING_SECRET",),
    "redis": ("REDIS_URL",),
    "flowise": ("FLOWISE_API_KEY",),
    "push": ("VAPID_PRIVATE_KEY",),
    "cloudflare": ("CLOUDFLARE_API_TOKEN",),
    "portainer": ("PORTAINER_API_KEY",),
}


def secrets_of(groups: tuple[str, ...]) -> tuple[str, ...]:
    """The secret settings that the named settings groups read, in the groups' order."""
    return tuple(dict.fromkeys(name for group in groups for name in SECRETS_OF_GROUP.get(group, ())))


def secret_arn_variable(name: str) -> str:
    """The variable naming the Secrets Manager secret that holds setting ``name``: ``NAME_SECRET_ARN``,
    or ``NAME_ARN`` when the name already ends in ``_SECRET`` (``EDGE_SIGNING_SECRET_ARN``)."""
    return f"{name}_ARN" if name.endswith("_SECRET") else f"{name}_SECRET_ARN"


def _secret(env: Mapping[str, str], name: str, read_secret: SecretReader | None) -> str | None:
    """A value from ``NAME``, or from the secret that its ARN variable names (how Lambda gets it)."""
    value = env.get(name)
    if value:
        return value
    arn = env.get(secret_arn_variable(name))
    if arn and read_secret is not None:
        return read_secret(arn)
    return None


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError as exc:
        raise ConfigurationError(f"a numeric setting is not a number: {name}: {exc}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError as exc:
        raise ConfigurationError(f"a numeric setting is not a number: {name}: {exc}") from exc


def _required(name: str, value: str | None) -> str:
    if not value:
        raise MissingConfiguration([name])
    return value


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    # Prefixed to every database name (lets a test run share a server).
    name_prefix: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> DatabaseSettings:
        return cls(
            url=_required("DATABASE_URL", _secret(env, "DATABASE_URL", read_secret)),
            name_prefix=env.get("DATABASE_NAME_PREFIX", ""),
        )


@dataclass(frozen=True)
class EdgeSettings:
    """The signed envelope from the gateway worker."""

    signing_secret: str
    max_skew_seconds: int = 60
    max_request_bytes: int = 1024 * 1024
    # How long a request that died holds its Idempotency-Key before a retry may take it over: longer
    # than any request runs (Lambda's 30 s), short enough that a client's retries succeed in minutes.
    idempotency_lease_seconds: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> EdgeSettings:
        secret = _required("EDGE_SIGNING_SECRET", _secret(env, "EDGE_SIGNING_SECRET", read_secret))
        if len(secret) < 32:
            raise ConfigurationError("EDGE_SIGNING_SECRET must be at least 32 characters")
        return cls(
            signing_secret=secret,
            max_skew_seconds=_int(env, "EDGE_MAX_SKEW_SECONDS", cls.max_skew_seconds),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", cls.max_request_bytes),
            idempotency_lease_seconds=_int(env, "IDEMPOTENCY_LEASE_SECONDS", cls.idempotency_lease_seconds),
        )


@dataclass(frozen=True)
class RedisSettings:
    # None: no cache, no rate of anything kept in Redis (the functions still work).
    url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> RedisSettings:
        return cls(url=_secret(env, "REDIS_URL", read_secret))


@dataclass(frozen=True)
class AwsSettings:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    media_bucket: str = topology.MEDIA_BUCKET
    backup_bucket: str = topology.BACKUP_BUCKET
    event_bus_name: str = topology.EVENT_BUS_NAME
    # "sqs": the relay sends domain events straight to the queue; "eventbridge": to the bus, whose
    # rules fan them out (the queue being one target).
    domain_events_via: str = "sqs"

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> AwsSettings:
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or cls.region,
            media_bucket=env.get("MEDIA_BUCKET", cls.media_bucket),
            backup_bucket=env.get("BACKUP_BUCKET", cls.backup_bucket),
            event_bus_name=env.get("EVENT_BUS_NAME", cls.event_bus_name),
            domain_events_via=_choice(env, "DOMAIN_EVENTS_VIA", ("sqs", "eventbridge"), cls.domain_events_via),
        )


@dataclass(frozen=True)
class SiteSettings:
    # The public site, for links in generated content and notifications.
    url: str = "https://stepperslife.com"

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> SiteSettings:
        return cls(url=env.get("SITE_URL", cls.url).rstrip("/"))


@dataclass(frozen=True)
class FlowiseSettings:
    # url and chatflow_id unset: the offline enhancer.
    url: str | None = None
    chatflow_id: str | None = None
    api_key: str | None = None
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> FlowiseSettings:
        return cls(
            url=(env.get("FLOWISE_URL") or "").rstrip("/") or None,
            chatflow_id=env.get("FLOWISE_CHATFLOW_ID") or None,
            api_key=_secret(env, "FLOWISE_API_KEY", read_secret),
            timeout_seconds=_float(env, "FLOWISE_TIMEOUT_SECONDS", cls.timeout_seconds),
        )


@dataclass(frozen=True)
class PushSettings:
    # vapid_private_key or vapid_subject unset: no push is sent.
    vapid_private_key: str | None = None
    vapid_public_key: str | None = None
    vapid_subject: str | None = None
    # Hosts accepted as push endpoints without the public-address check: tests and dev only.
    allow_hosts: tuple[str, ...] = ()
    concurrency: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> PushSettings:
        return cls(
            vapid_private_key=_secret(env, "VAPID_PRIVATE_KEY", read_secret),
            vapid_public_key=env.get("VAPID_PUBLIC_KEY") or None,
            vapid_subject=env.get("VAPID_SUBJECT") or None,
            allow_hosts=tuple(
                host.strip().lower() for host in env.get("PUSH_ALLOW_HOSTS", "").split(",") if host.strip()
            ),
            concurrency=max(1, _int(env, "PUSH_CONCURRENCY", cls.concurrency)),
        )


@dataclass(frozen=True)
class CloudflareSettings:
    """Workers KV through Cloudflare's API: pruning push subscriptions, invalidating edge-cached reads."""

    api_base: str = "https://api.cloudflare.com/client/v4"
    account_id: str | None = None
    api_token: str | None = None
    push_subs_kv_id: str | None = None
    api_cache_kv_id: str | None = None
    # DNS for AGI Staffers' sites: the zone their records go in and the address they point at.
    dns_zone_id: str | None = None
    dns_target: str | None = None
    # Calls per token per 5 minutes that the platform allows itself (Cloudflare's limit is 1,200 and
    # going over locks the token out for 5 minutes): the rest is headroom for people and other tools.
    requests_per_5_minutes: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> CloudflareSettings:
        budget = _int(env, "CLOUDFLARE_REQUESTS_PER_5_MINUTES", cls.requests_per_5_minutes)
        if not 1 <= budget <= 1200:
            raise ConfigurationError("CLOUDFLARE_REQUESTS_PER_5_MINUTES must be 1 to 1200 (Cloudflare's limit)")
        return cls(
            api_base=env.get("CLOUDFLARE_API_BASE", cls.api_base).rstrip("/"),
            account_id=env.get("CLOUDFLARE_ACCOUNT_ID") or None,
            api_token=_secret(env, "CLOUDFLARE_API_TOKEN", read_secret),
            push_subs_kv_id=env.get("PUSH_SUBS_KV_ID") or None,
            api_cache_kv_id=env.get("API_CACHE_KV_ID") or None,
            dns_zone_id=env.get("CLOUDFLARE_ZONE_ID") or None,
            dns_target=env.get("CLOUDFLARE_DNS_TARGET") or None,
            requests_per_5_minutes=budget,
        )


@dataclass(frozen=True)
class PortainerSettings:
    """The Portainer that runs customers' site containers (a standalone Docker environment)."""

    # url or api_key unset: provisioning steps wait (and retry) until it is configured.
    url: str | None = None
    api_key: str | None = None
    endpoint_id: int = 1
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> PortainerSettings:
        return cls(
            url=(env.get("PORTAINER_URL") or "").rstrip("/") or None,
            api_key=_secret(env, "PORTAINER_API_KEY", read_secret),
            endpoint_id=_int(env, "PORTAINER_ENDPOINT_ID", cls.endpoint_id),
            timeout_seconds=_float(env, "PORTAINER_TIMEOUT_SECONDS", cls.timeout_seconds),
        )


@dataclass(frozen=True)
class MailSettings:
    # The verified SES identity transactional mail comes from; unset: no mail is sent (it waits).
    sender: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> MailSettings:
        return cls(sender=env.get("MAIL_SENDER") or None)


@dataclass(frozen=True)
class SiteProbeSettings:
    """How provisioning checks that a new site answers over HTTPS with a valid certificate."""

    # host:port to connect to instead of the site's own address (curl's --connect-to): the dev stack's
    # fake Portainer serves every site there. Unset: the site's domain, port 443.
    connect_to: str | None = None
    # Extra CA certificates to trust (the fake's CA); unset: the system's.
    ca_file: str | None = None
    # Hosts whose non-public addresses are accepted: tests and local development only.
    allow_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> SiteProbeSettings:
        return cls(
            connect_to=env.get("SITE_PROBE_CONNECT_TO") or None,
            ca_file=env.get("SITE_PROBE_CA_FILE") or None,
            allow_hosts=tuple(
                host.strip().lower() for host in env.get("SITE_PROBE_ALLOW_HOSTS", "").split(",") if host.strip()
            ),
            timeout_seconds=_float(env, "SITE_PROBE_TIMEOUT_SECONDS", cls.timeout_seconds),
        )


@dataclass(frozen=True)
class UptimeSettings:
    """AGI Staffers' uptime checks (where sites are reached in dev is ``SiteProbeSettings``')."""

    failures_to_down: int = 3  # consecutive failed checks before a site is down
    successes_to_up: int = 2  # consecutive good checks before a down site is up again
    concurrency: int = 64  # checks in flight at once per run (benchmarks/uptime_checks.py)
    run_seconds: float = 60.0  # a scheduled run's budget: its whole minute (overlapping runs are safe)
    timeout_seconds: float = 10.0
    # The longest a site waits between checks (its plan's interval when shorter); dev: a few seconds.
    max_interval_seconds: int = 86400

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> UptimeSettings:
        return cls(
            failures_to_down=max(1, _int(env, "UPTIME_FAILURES_TO_DOWN", cls.failures_to_down)),
            successes_to_up=max(1, _int(env, "UPTIME_SUCCESSES_TO_UP", cls.successes_to_up)),
            concurrency=max(1, _int(env, "UPTIME_CONCURRENCY", cls.concurrency)),
            run_seconds=max(0.0, _float(env, "UPTIME_RUN_SECONDS", cls.run_seconds)),
            timeout_seconds=max(0.1, _float(env, "UPTIME_TIMEOUT_SECONDS", cls.timeout_seconds)),
            max_interval_seconds=max(1, _int(env, "UPTIME_MAX_INTERVAL_SECONDS", cls.max_interval_seconds)),
        )


@dataclass(frozen=True)
class BackupSettings:
    """Database backups and restore drills (functions/platform/backups)."""

    # Where pg_dump and pg_restore live; unset: the directory whose tools match the server's major
    # version is found among the usual places (functions/platform/backups/tools.py).
    pg_bin_dir: str | None = None
    # pg_restore --jobs: parallel restore of the dump's tables and indexes.
    restore_jobs: int = 2
    # Where dumps are downloaded for a restore (Lambda: /tmp, up to 10 GB of ephemeral storage).
    work_dir: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> BackupSettings:
        return cls(
            pg_bin_dir=env.get("PG_BIN_DIR") or None,
            restore_jobs=max(1, _int(env, "BACKUP_RESTORE_JOBS", cls.restore_jobs)),
            work_dir=env.get("BACKUP_WORK_DIR") or None,
        )


class _Group(Protocol):
    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> object: ...


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    # None: a function that serves no HTTP (a queue or schedule handler) is not given the edge's key.
    edge: EdgeSettings | None = None
    redis: RedisSettings = field(default_factory=RedisSettings)
    aws: AwsSettings = field(default_factory=AwsSettings)
    site: SiteSettings = field(default_factory=SiteSettings)
    flowise: FlowiseSettings = field(default_factory=FlowiseSettings)
    push: PushSettings = field(default_factory=PushSettings)
    cloudflare: CloudflareSettings = field(default_factory=CloudflareSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    portainer: PortainerSettings = field(default_factory=PortainerSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    site_probe: SiteProbeSettings = field(default_factory=SiteProbeSettings)
    uptime: UptimeSettings = field(default_factory=UptimeSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str], read_secret: SecretReader | None = None) -> Settings:
        """Every group (the edge's only where its value or ARN is set), or one error: all missing
        variables by name, else the first invalid value."""
        groups: dict[str, type[_Group]] = {
            "database": DatabaseSettings,
            "edge": EdgeSettings,
            "redis": RedisSettings,
            "aws": AwsSettings,
            "site": SiteSettings,
            "flowise": FlowiseSettings,
            "push": PushSettings,
            "cloudflare": CloudflareSettings,
            "backup": BackupSettings,
            "portainer": PortainerSettings,
            "mail": MailSettings,
            "site_probe": SiteProbeSettings,
            "uptime": UptimeSettings,
        }
        read: dict[str, Any] = {}
        errors: list[ConfigurationError] = []
        if not (env.get("EDGE_SIGNING_SECRET") or env.get(secret_arn_variable("EDGE_SIGNING_SECRET"))):
            del groups["edge"]
        for name, group in groups.items():
            try:
                read[name] = group.from_env(env, read_secret)
            except ConfigurationError as exc:
                errors.append(exc)
        missing = [name for error in errors if isinstance(error, MissingConfiguration) for name in error.names]
        if missing:
            raise MissingConfiguration(missing)
        if errors:
            raise errors[0]
        return cls(**read)

    def require_edge(self) -> EdgeSettings:
        """The edge group, which serving HTTP needs: its absence is a deploy's mistake, named."""
        if self.edge is None:
            raise MissingConfiguration(["EDGE_SIGNING_SECRET"])
        return self.edge

    def database_url_for(self, database: str) -> str:
        return url_for_database(self.database.url, self.database.name_prefix + database)
