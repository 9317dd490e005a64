"""Rate limiting: one interface, three backends, IETF ``RateLimit``/``RateLimit-Policy`` fields.

- ``BindingLimiter``: the Workers Rate Limiting binding (the production default). Cheap and local to
  each Cloudflare location; it answers only allowed/refused, so ``RateLimit`` (remaining, reset) is
  sent on refusals only, while ``RateLimit-Policy`` is always sent.
- ``DurableObjectLimiter``: a sliding-window log in one Durable Object per key, strongly consistent,
  so counts are exact across locations (``SlidingWindowObject`` is the object's logic).
- ``KvFixedWindowLimiter``: the seed's KV counter. Approximate by construction: KV is eventually
  consistent (about 60 s between locations), the read-then-write races under concurrency, a key
  takes one write per second, and the Free plan allows 1,000 writes a day. For low traffic only.

The client key is the user id for signed-in requests on policies that have a per-user quota, else
the client address from ``CF-Connecting-IP`` (the adapter sets ``EdgeRequest.client_ip``; headers a
client can write, such as ``X-Forwarded-For``, are never consulted).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from edge_workers.core.ports import (
    KV_MIN_EXPIRATION_TTL,
    Clock,
    KeyValueStore,
    LimiterObjects,
    MissingBinding,
    ObjectStorage,
    RateLimitBinding,
)
from edge_workers.core.routes import RateLimitPolicy
from shared.errors import RateLimited

KV_KEY_PREFIX = "rate:"
_IPV4 = re.compile(r"^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$")
_STORAGE_KEY = "hits"


class Decision(NamedTuple):
    policy: str
    limit: int
    period: int
    allowed: bool
    remaining: int | None  # None: the backend cannot tell (the Rate Limiting binding)
    reset: int | None  # seconds until quota frees up again

    def headers(self) -> list[tuple[str, str]]:
        fields = [("ratelimit-policy", f'"{self.policy}";q={self.limit};w={self.period}')]
        if self.remaining is not None:
            reset = f";t={self.reset}" if self.reset is not None else ""
            fields.append(("ratelimit", f'"{self.policy}";r={self.remaining}{reset}'))
        return fields

    @property
    def retry_after(self) -> int:
        return self.reset if self.reset is not None else self.period

    def error(self) -> RateLimited:
        return RateLimited(
            "too many requests", details={"policy": self.policy, "retry_after": self.retry_after}, code="rate_limited"
        )


class RateLimiter(Protocol):
    async def check(self, key: str, policy: RateLimitPolicy, by_user: bool) -> Decision: ...


def client_key(client_ip: str) -> str:
    """``ip:<address>``; IPv6 clients are keyed by their /64, which one subscriber usually holds whole."""
    if _IPV4.match(client_ip) and all(int(part) <= 255 for part in client_ip.split(".")):
        # The common case, without ipaddress's (comparatively slow, under Pyodide) parsing.
        return f"ip:{client_ip}"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        # Only an adapter bug or a request that bypassed Cloudflare gets here: share one bucket.
        return "ip:unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False).network_address}/64"
    return f"ip:{address}"


def _tier(by_user: bool) -> str:
    return "user" if by_user else "ip"


class BindingLimiter:
    def __init__(self, bindings: Mapping[str, RateLimitBinding]) -> None:
        self._bindings = bindings

    async def check(self, key: str, policy: RateLimitPolicy, by_user: bool) -> Decision:
        name = policy.binding(by_user)
        binding = self._bindings.get(name)
        if binding is None:
            raise MissingBinding(f"the rate limiting binding {name} is not configured")
        quota = policy.quota(by_user)
        allowed = await binding.limit(key)
        return Decision(
            policy=policy.name,
            limit=quota.limit,
            period=quota.period,
            allowed=allowed,
            remaining=None if allowed else 0,
            reset=None if allowed else quota.period,
        )


class DurableObjectLimiter:
    def __init__(self, objects: LimiterObjects) -> None:
        self._objects = objects

    async def check(self, key: str, policy: RateLimitPolicy, by_user: bool) -> Decision:
        quota = policy.quota(by_user)
        answer = json.loads(
            await self._objects.hit(f"{policy.name}:{_tier(by_user)}:{key}", quota.limit, quota.period * 1000)
        )
        return Decision(
            policy=policy.name,
            limit=quota.limit,
            period=quota.period,
            allowed=bool(answer["allowed"]),
            remaining=int(answer["remaining"]),
            reset=max(1, math.ceil(int(answer["reset_ms"]) / 1000)),
        )


class KvFixedWindowLimiter:
    """A fixed window per key, anchored at the key's first hit: ``rate:{policy}:{tier}:{key}`` holds
    ``{"start", "count"}`` and expires with its window."""

    def __init__(self, kv: KeyValueStore, clock: Clock) -> None:
        self._kv = kv
        self._clock = clock

    async def check(self, key: str, policy: RateLimitPolicy, by_user: bool) -> Decision:
        quota = policy.quota(by_user)
        now = self._clock.now()
        kv_key = f"{KV_KEY_PREFIX}{policy.name}:{_tier(by_user)}:{key}"
        start, count = now, 0
        try:
            window = json.loads(await self._kv.get(kv_key) or "null")
            if window is not None and now < float(window["start"]) + quota.period:
                start, count = float(window["start"]), int(window["count"])
        except (ValueError, KeyError, TypeError):
            pass  # not a window this code wrote: start a new one
        ends_in = start + quota.period - now
        reset = max(1, math.ceil(ends_in))
        if count >= quota.limit:
            return Decision(policy.name, quota.limit, quota.period, False, 0, reset)
        # The key lives as long as its window; 60 s is the KV minimum TTL.
        window_left = max(KV_MIN_EXPIRATION_TTL, math.ceil(ends_in))
        await self._kv.put(kv_key, json.dumps({"start": start, "count": count + 1}), expiration_ttl=window_left)
        return Decision(policy.name, quota.limit, quota.period, True, quota.limit - count - 1, reset)


class SlidingWindowObject:
    """The rate-limit Durable Object's logic: an exact sliding-window log of one key's hits.

    The hit times (ms) live in the object's storage so that an evicted object resumes its window;
    the lock keeps concurrent hits on one object from interleaving between read and write.
    """

    def __init__(self, storage: ObjectStorage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        self._hits: list[int] | None = None
        self._lock = asyncio.Lock()

    async def hit(self, limit: int, window_ms: int) -> str:
        async with self._lock:
            if self._hits is None:
                raw = await self._storage.get(_STORAGE_KEY)
                self._hits = [int(value) for value in json.loads(raw)] if raw else []
            now = int(self._clock.now() * 1000)
            hits = [at for at in self._hits if at > now - window_ms]
            if len(hits) >= limit:
                self._hits = hits
                # A slot frees when enough of the oldest hits have left the window.
                frees_at = hits[len(hits) - limit] + window_ms
                return json.dumps({"allowed": False, "remaining": 0, "reset_ms": frees_at - now})
            hits.append(now)
            self._hits = hits
            await self._storage.put(_STORAGE_KEY, json.dumps(hits))
            return json.dumps({"allowed": True, "remaining": limit - len(hits), "reset_ms": hits[0] + window_ms - now})
