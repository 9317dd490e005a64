"""Ports: what the runtime provides to the core, as protocols with Workers semantics.

Two adapter sets implement them: the Workers FFI adapters (``edge_workers/workers_adapters.py``) and
the local CPython adapters (``devstack/edge_server.py``). The core never learns which one it has.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from shared.edge.http import EdgeResponse, OutboundRequest

# Workers KV limits that the local adapter enforces too, so that code passing locally passes in production.
KV_MIN_EXPIRATION_TTL = 60
KV_MAX_KEY_BYTES = 512
KV_MAX_VALUE_BYTES = 25 * 1024 * 1024
KV_MAX_LIST_LIMIT = 1000

KV_BINDINGS = ("SESSION_KV", "RATE_LIMIT_KV", "API_CACHE_KV", "PUSH_SUBS_KV", "USER_PREFS_KV")


class KvError(ValueError):
    """A KV call that Workers KV would refuse (bad key, TTL below the minimum, oversize value)."""


@dataclass(frozen=True)
class KvKey:
    name: str
    expiration: int | None = None  # seconds since the epoch, as Workers KV reports it


@dataclass(frozen=True)
class KvListResult:
    keys: list[KvKey]
    list_complete: bool
    cursor: str | None = None


class KeyValueStore(Protocol):
    """One Workers KV namespace. Expired keys are invisible; ``list`` is sorted by key bytes."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, *, expiration_ttl: int | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list(
        self, *, prefix: str = "", limit: int = KV_MAX_LIST_LIMIT, cursor: str | None = None
    ) -> KvListResult: ...


def check_kv_key(key: str) -> None:
    if not key or key in (".", ".."):
        raise KvError(f"invalid KV key {key!r}")
    if len(key.encode("utf-8")) > KV_MAX_KEY_BYTES:
        raise KvError(f"KV keys are at most {KV_MAX_KEY_BYTES} bytes")


def check_kv_put(key: str, value: str, expiration_ttl: int | None) -> None:
    check_kv_key(key)
    if len(value.encode("utf-8")) > KV_MAX_VALUE_BYTES:
        raise KvError(f"KV values are at most {KV_MAX_VALUE_BYTES} bytes")
    if expiration_ttl is not None and (
        isinstance(expiration_ttl, bool)
        or not isinstance(expiration_ttl, int)
        or expiration_ttl < KV_MIN_EXPIRATION_TTL
    ):
        raise KvError(
            f"expirationTtl must be an integer of at least {KV_MIN_EXPIRATION_TTL} seconds "
            f"(the Workers KV minimum); got {expiration_ttl!r}"
        )


def check_kv_list_limit(limit: int) -> None:
    if not 1 <= limit <= KV_MAX_LIST_LIMIT:
        raise KvError(f"list limit must be between 1 and {KV_MAX_LIST_LIMIT}; got {limit}")


@dataclass(frozen=True)
class KvNamespaces:
    """The gateway worker's KV bindings, by their binding names."""

    SESSION_KV: KeyValueStore
    RATE_LIMIT_KV: KeyValueStore
    API_CACHE_KV: KeyValueStore
    PUSH_SUBS_KV: KeyValueStore
    USER_PREFS_KV: KeyValueStore

    @classmethod
    def from_mapping(cls, stores: Mapping[str, KeyValueStore]) -> KvNamespaces:
        missing = [name for name in KV_BINDINGS if name not in stores]
        if missing:
            raise KvError(f"missing KV bindings: {', '.join(missing)}")
        return cls(**{name: stores[name] for name in KV_BINDINGS})


class OriginUnavailable(Exception):
    """The origin could not be reached (connection refused, reset, DNS)."""


class OriginTimeout(OriginUnavailable):
    """The origin did not answer within the request's timeout."""


class OriginClient(Protocol):
    """Outbound HTTP. Never follows redirects: a 3xx comes back as a response."""

    async def fetch(self, request: OutboundRequest) -> EdgeResponse: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (timestamps, expiry)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations)."""
        ...


class RandomSource(Protocol):
    def token_urlsafe(self, nbytes: int) -> str: ...

    def token_hex(self, nbytes: int) -> str: ...


class LogSink(Protocol):
    def write(self, record: Mapping[str, object]) -> None:
        """Emit one structured log record."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class SystemRandom:
    """The runtime's CSPRNG (``os.urandom`` on CPython, ``crypto.getRandomValues`` on Pyodide)."""

    def token_urlsafe(self, nbytes: int) -> str:
        return secrets.token_urlsafe(nbytes)

    def token_hex(self, nbytes: int) -> str:
        return secrets.token_hex(nbytes)


class PrintLog:
    """One JSON line per record on stdout; on Workers, stdout is the worker's log stream."""

    def write(self, record: Mapping[str, object]) -> None:
        sys.stdout.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
