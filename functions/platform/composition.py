"""Composition helpers every product's root uses: secrets, AWS clients, Redis, health, the installed
container. Each product's ``composition.py`` is still the one place where it picks its adapters.

Heavy clients (boto3, redis) are imported on first use so a handler that does not need them does not
pay for them at cold start.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from functions.platform.adapters.postgres import Database
from functions.platform.cache import Cache
from functions.platform.claims import Claims
from functions.platform.config import Settings
from functions.platform.idempotency import STALE_AFTER, IdempotencyKeys


def read_secret_from_aws(arn: str) -> str:
    import boto3  # lazily: only Lambda, where secrets come from Secrets Manager, needs it

    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return str(value)


def aws_client(settings: Settings, service: str, config: Any = None) -> Any:
    """``config``: a ``botocore.config.Config`` (timeouts, retries), botocore's defaults otherwise."""
    import boto3  # lazily: built on first use, not at cold start

    session = boto3.session.Session(region_name=settings.aws.region)
    return session.client(service, endpoint_url=settings.aws.endpoint_url, config=config)  # type: ignore[call-overload]


def redis_client(settings: Settings) -> Any:
    """A Redis client with short timeouts (a cache that is down must not stall requests), or None."""
    if not settings.redis.url:
        return None
    import redis

    return redis.Redis.from_url(settings.redis.url, socket_timeout=1.0, socket_connect_timeout=1.0)


class Pingable(Protocol):
    def ping(self) -> Any: ...


def health(dependencies: Mapping[str, Pingable | None]) -> dict[str, str]:
    """Each dependency's state; a failure is named, never explained (no internals to clients)."""
    checks: dict[str, str] = {}
    for name, dependency in dependencies.items():
        if dependency is None:
            checks[name] = "not configured"
            continue
        try:
            dependency.ping()
            checks[name] = "up"
        except Exception:
            checks[name] = "down"
    return checks


@dataclass
class ProductContainer:
    """What every product's container holds: its own database, Redis, the cache, claims and
    Idempotency-Key on that database. A product subclasses it, names its database and adds its
    services; ``settings`` is all it is built from."""

    settings: Settings
    database_name: ClassVar[str]

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url_for(self.database_name), name=self.database_name)

    @cached_property
    def redis(self) -> Any:
        return redis_client(self.settings)

    @cached_property
    def cache(self) -> Cache:
        return Cache(self.redis)

    @cached_property
    def claims(self) -> Claims:
        return Claims(self.db)

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        # A schedule that only prunes keys is not given the edge's group: the default lease then.
        edge = self.settings.edge
        lease = timedelta(seconds=edge.idempotency_lease_seconds) if edge else STALE_AFTER
        return IdempotencyKeys(self.claims, lease=lease)

    def health(self) -> dict[str, str]:
        return health({"postgres": self.db, "redis": self.redis})

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()
        if self.__dict__.get("redis") is not None:
            self.redis.close()


class Closeable(Protocol):
    def close(self) -> None: ...


ContainerT = TypeVar("ContainerT", bound=Closeable)


class Installed(Generic[ContainerT]):
    """The process-wide container of one product (one per Lambda execution environment or dev-stack
    process): built from the environment on first use, as Lambda starts, or installed by the dev
    stack and tests with ``configure``. Every instance is listed in ``Installed.every`` so that the
    SnapStart hooks (functions/platform/snapstart.py) can reopen all of a process's connections."""

    every: ClassVar[weakref.WeakSet[Installed[Any]]] = weakref.WeakSet()

    def __init__(self, build: Callable[[Settings], ContainerT]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._current: ContainerT | None = None
        self._settings: Settings | None = None
        Installed.every.add(self)

    def configure(self, settings: Settings) -> ContainerT:
        with self._lock:
            if self._current is not None:
                self._current.close()
            self._settings = settings
            self._current = self._build(settings)
            return self._current

    def get(self) -> ContainerT:
        with self._lock:
            if self._current is None:
                if self._settings is None:
                    self._settings = Settings.from_env(os.environ, read_secret=read_secret_from_aws)
                self._current = self._build(self._settings)
            return self._current

    def reopen(self) -> None:
        """Close the container's connections (database pool, Redis client); the next ``get`` builds a
        fresh container from the same settings, which connects anew on first use."""
        with self._lock:
            if self._current is not None:
                self._current.close()
                self._current = None
