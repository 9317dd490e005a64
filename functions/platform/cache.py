"""The seed's Redis cache strategy in one place.

Keys follow ``{service}:{type}:{identifier}:{version}``. A family of keys (say every listing of
events) shares a version counter; a write bumps it, so later reads miss without scanning for keys.
A miss is loaded by one caller while the others wait briefly (single-flight), so an expiry under load
does not become a stampede on PostgreSQL. Redis being down is never an error: reads go to the loader.
How long each kind of value lives is the product's choice (its ``cache_policy`` module).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger("agistack.cache")

T = TypeVar("T")

_LOCK_MS = 5000
_WAIT_SECONDS = 2.0


class RedisLike(Protocol):
    def get(self, name: str) -> Any: ...
    def set(self, name: str, value: str, ex: int | None = None, px: int | None = None, nx: bool = False) -> Any: ...
    def incr(self, name: str) -> Any: ...
    def delete(self, *names: str) -> Any: ...
    def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any: ...


# Deletes the lock only if we still hold it (it may have expired and been taken by another loader).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def cache_key(service: str, type_: str, identifier: str, version: str | int = 1) -> str:
    return f"{service}:{type_}:{identifier}:v{version}"


def digest(value: Any) -> str:
    """A short stable identifier for a query (its parameters as sorted JSON)."""
    raw = json.dumps(value, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:32]


class Cache:
    def __init__(self, redis: RedisLike | None) -> None:
        self._redis = redis

    def _degraded(self, action: str, exc: Exception) -> None:
        log.warning("redis unavailable during %s, serving without cache: %s", action, type(exc).__name__)

    def version(self, service: str, family: str) -> int:
        """The current version of a family of keys (1 until the first bump)."""
        if self._redis is None:
            return 1
        try:
            value = self._redis.get(cache_key(service, "version", family, 1))
        except Exception as exc:
            self._degraded("version", exc)
            return 1
        return int(value) + 1 if value is not None else 1

    def bump(self, service: str, family: str) -> int:
        """Invalidate a family of keys by moving it to a new version. Returns the new version."""
        if self._redis is None:
            return 1
        try:
            return int(self._redis.incr(cache_key(service, "version", family, 1))) + 1
        except Exception as exc:
            self._degraded("bump", exc)
            return 1

    def delete(self, key: str) -> None:
        if self._redis is None:
            return
        try:
            self._redis.delete(key)
        except Exception as exc:
            self._degraded("delete", exc)

    def get_or_load(self, key: str, ttl: int, load: Callable[[], T]) -> tuple[T, bool]:
        """The cached value for ``key`` or ``load()``'s, stored for ``ttl`` seconds. Returns (value, hit)."""
        if self._redis is None:
            return load(), False
        try:
            cached = self._redis.get(key)
            if cached is not None:
                return json.loads(cached), True
            token = secrets.token_hex(8)
            lock = f"{key}:lock"
            if not self._redis.set(lock, token, px=_LOCK_MS, nx=True):
                deadline = time.monotonic() + _WAIT_SECONDS
                while time.monotonic() < deadline:
                    time.sleep(0.02)
                    cached = self._redis.get(key)
                    if cached is not None:
                        return json.loads(cached), True
                # The loader is slow or died: load ourselves rather than fail the request.
                return load(), False
            try:
                value = load()
                self._redis.set(key, json.dumps(value, default=str), ex=ttl)
            finally:
                self._redis.eval(_RELEASE, 1, lock, token)
            return value, False
        except (ConnectionError, TimeoutError, OSError) as exc:
            self._degraded("get_or_load", exc)
            return load(), False
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                self._degraded("get_or_load", exc)
                return load(), False
            raise
