"""The composition root of the functions: configuration in, concrete adapters and services out.

Nothing below this module reads the environment or constructs a client. Heavy clients (boto3) are
built on first use so that a handler that does not need them does not pay for them at cold start.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from functions.adapters.postgres import Database
from functions.config import Settings
from functions.services.cache import Cache
from functions.services.events import EventService
from functions.services.idempotency import IdempotencyStore
from functions.services.recommendations import RecommendationService
from functions.services.registrations import RegistrationService
from functions.services.uploads import UploadService
from functions.services.users import UserService


def _read_secret_from_aws(arn: str) -> str:
    import boto3  # lazily: only Lambda, where secrets come from Secrets Manager, needs it

    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return str(value)


@dataclass
class Container:
    settings: Settings

    @cached_property
    def stepperslife_db(self) -> Database:
        return Database(self.settings.database_url_for("stepperslife"), name="stepperslife")

    @cached_property
    def redis(self) -> Any:
        import redis

        if not self.settings.redis_url:
            return None
        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    @cached_property
    def cache(self) -> Cache:
        return Cache(self.redis)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        return IdempotencyStore(self.stepperslife_db)

    @cached_property
    def recommendations(self) -> RecommendationService:
        return RecommendationService(self.stepperslife_db, self.cache)

    @cached_property
    def users(self) -> UserService:
        return UserService(self.stepperslife_db)

    @cached_property
    def events(self) -> EventService:
        return EventService(self.stepperslife_db, self.cache)

    @cached_property
    def registrations(self) -> RegistrationService:
        return RegistrationService(self.stepperslife_db)

    @cached_property
    def uploads(self) -> UploadService:
        return UploadService(self.stepperslife_db)

    def health(self) -> dict[str, str]:
        """Each dependency's state; a failure is named, never explained (no internals to clients)."""
        checks: dict[str, str] = {}
        try:
            self.stepperslife_db.ping()
            checks["postgres"] = "up"
        except Exception:
            checks["postgres"] = "down"
        if self.redis is None:
            checks["redis"] = "not configured"
        else:
            try:
                self.redis.ping()
                checks["redis"] = "up"
            except Exception:
                checks["redis"] = "down"
        return checks

    def close(self) -> None:
        if "stepperslife_db" in self.__dict__:
            self.stepperslife_db.close()


class _Installed:
    """The process-wide container (one per Lambda execution environment or dev-stack process)."""

    lock = threading.Lock()
    current: Container | None = None


def configure(settings: Settings) -> Container:
    """Install the container built from ``settings`` (the dev stack and tests call this)."""
    with _Installed.lock:
        if _Installed.current is not None:
            _Installed.current.close()
        _Installed.current = Container(settings)
        return _Installed.current


def container() -> Container:
    """The process-wide container, built from the environment on first use (how Lambda starts)."""
    with _Installed.lock:
        if _Installed.current is None:
            _Installed.current = Container(Settings.from_env(os.environ, read_secret=_read_secret_from_aws))
        return _Installed.current
