"""Ports: what the runtime provides to the core, as protocols with Workers semantics.

Two adapter sets implement them: the Workers FFI adapters (``edge_workers/workers_adapters.py``) and
the local CPython adapters (``edge_workers/local.py``). The core never learns which one it has.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from edge_workers.core.http import EdgeResponse, OutboundRequest

# Workers KV limits that the local adapter enforces too, so that code passing locally passes in production.
KV_MIN_EXPIRATION_TTL = 60
KV_MAX_KEY_BYTES = 512
KV_MAX_VALUE_BYTES = 25 * 1024 * 1024
KV_MAX_LIST_LIMIT = 1000
KV_MAX_BULK_KEYS = 100  # keys per bulk read (``get`` with an array of keys)

# Every KV binding either worker may have (the seed's five, plus feature flags).
KV_BINDINGS = ("SESSION_KV", "RATE_LIMIT_KV", "API_CACHE_KV", "PUSH_SUBS_KV", "USER_PREFS_KV", "FLAGS_KV")


class KvError(ValueError):
    """A KV call that Workers KV would refuse (bad key, TTL below the minimum, oversize value)."""


class MissingBinding(LookupError):
    """The worker was deployed without a binding that the code path in use needs."""


class KvKey(NamedTuple):
    name: str
    expiration: int | None = None  # seconds since the epoch, as Workers KV reports it


class KvListResult(NamedTuple):
    keys: list[KvKey]
    list_complete: bool
    cursor: str | None = None


class KeyValueStore(Protocol):
    """One Workers KV namespace. Expired keys are invisible; ``list`` is sorted by key bytes."""

    async def get(self, key: str) -> str | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Several keys in one read (Workers KV's bulk read): every key maps to its value or None."""
        ...

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


def check_kv_keys(keys: Sequence[str]) -> None:
    if not 1 <= len(keys) <= KV_MAX_BULK_KEYS:
        raise KvError(f"a bulk read takes 1 to {KV_MAX_BULK_KEYS} keys; got {len(keys)}")
    for key in keys:
        check_kv_key(key)


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


class KvNamespaces:
    """A worker's KV bindings by binding name; each worker binds only the namespaces it uses."""

    def __init__(self, stores: Mapping[str, KeyValueStore]) -> None:
        unknown = set(stores) - set(KV_BINDINGS)
        if unknown:
            raise KvError(f"unknown KV bindings: {', '.join(sorted(unknown))}")
        self._stores = dict(stores)

    def _get(self, name: str) -> KeyValueStore:
        try:
            return self._stores[name]
        except KeyError:
            raise MissingBinding(f"the KV binding {name} is not configured for this worker") from None

    @property
    def SESSION_KV(self) -> KeyValueStore:
        return self._get("SESSION_KV")

    @property
    def RATE_LIMIT_KV(self) -> KeyValueStore:
        return self._get("RATE_LIMIT_KV")

    @property
    def API_CACHE_KV(self) -> KeyValueStore:
        return self._get("API_CACHE_KV")

    @property
    def PUSH_SUBS_KV(self) -> KeyValueStore:
        return self._get("PUSH_SUBS_KV")

    @property
    def USER_PREFS_KV(self) -> KeyValueStore:
        return self._get("USER_PREFS_KV")

    @property
    def FLAGS_KV(self) -> KeyValueStore:
        return self._get("FLAGS_KV")


class OriginUnavailable(Exception):
    """The origin could not be reached (connection refused, reset, DNS)."""


class OriginTimeout(OriginUnavailable):
    """The origin did not answer within the request's timeout."""


class OriginClient(Protocol):
    """Outbound HTTP. Never follows redirects: a 3xx comes back as a response."""

    async def fetch(self, request: OutboundRequest) -> EdgeResponse: ...


class RateLimitBinding(Protocol):
    """A Workers Rate Limiting binding: ``limit({key})`` -> ``{success}``; limit and period are set in
    wrangler.toml, counted per Cloudflare location."""

    async def limit(self, key: str) -> bool: ...


class LimiterObjects(Protocol):
    """The sliding-window Durable Object namespace: one strongly consistent object per key.

    ``hit`` runs ``SlidingWindowObject.hit`` inside the object named ``name`` and returns its JSON answer.
    """

    async def hit(self, name: str, limit: int, window_ms: int) -> str: ...


class ObjectStorage(Protocol):
    """A Durable Object's own transactional storage (string values)."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> None: ...


class Background(Protocol):
    """Work that may finish after the response is sent (``ctx.waitUntil`` on Workers)."""

    def defer(self, work: Coroutine[Any, Any, None]) -> None: ...


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
    """The runtime's CSPRNG (``os.urandom`` on CPython, ``crypto.getRandomValues`` on Pyodide).

    What ``secrets.token_*`` do, without importing ``secrets`` (and ``random``) into every isolate.
    """

    def token_urlsafe(self, nbytes: int) -> str:
        return base64.urlsafe_b64encode(os.urandom(nbytes)).rstrip(b"=").decode("ascii")

    def token_hex(self, nbytes: int) -> str:
        return os.urandom(nbytes).hex()


class PrintLog:
    """One JSON line per record on stdout; on Workers, stdout is the worker's log stream."""

    def write(self, record: Mapping[str, object]) -> None:
        sys.stdout.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
