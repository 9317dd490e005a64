"""The API response cache in API_CACHE_KV, for GET and HEAD on routes that allow it.

Keys: ``cache:{family}:{METHOD} {path}?{sorted query}`` (the request part hashed when long). Each
entry records the version of its family, the value of ``ver:{family}``, when it was stored; a read
fetches the version and the entry in one bulk KV read and serves the entry only when the two agree.
A write through the gateway replaces the family's version with a new random value, so every cached
read of that family misses from then on (the seed's versioned keys; the next miss overwrites the
stale entry). Writers at the origin, such as the image pipeline, invalidate the same way: the
version key and the family are the contract of ``shared.kv_keys``.

TTL: the origin's ``s-maxage``, else ``max-age``, else 300 s (the seed's default). Never stored: a
status other than 200, ``Set-Cookie``, ``private``/``no-store``/``no-cache``, ``Vary`` on a request
field. Requests carrying a
session or Authorization bypass the cache unless the route declares its answers public. Entries
shorter-lived than KV's 60 s minimum TTL are stored for 60 s and treated as expired after their TTL.
KV is eventually consistent: another location may serve the previous version for up to ~60 s.
"""

from __future__ import annotations

import base64
import hashlib
import json

from edge_workers.core.http import EdgeResponse, Headers
from edge_workers.core.ports import KV_MIN_EXPIRATION_TTL, Clock, KeyValueStore, RandomSource
from shared.kv_keys import VERSION_TOKEN_BYTES, version_key

CACHE_PREFIX = "cache:"
DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 86400
MAX_BODY_BYTES = 512 * 1024
MAX_PLAIN_KEY_BYTES = 256
STORED_HEADERS = ("content-type", "etag", "last-modified", "cache-control", "content-language")
_UNCACHEABLE = ("private", "no-store", "no-cache")


def cache_ttl(cache_control: str | None) -> int | None:
    """Seconds an origin answer may be kept, or None when it must not be stored."""
    directives: dict[str, str] = {}
    for part in (cache_control or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"')
    if any(name in directives for name in _UNCACHEABLE):
        return None
    raw = directives.get("s-maxage", directives.get("max-age"))
    if raw is None:
        return DEFAULT_TTL_SECONDS
    if not raw.isdigit():
        return None
    ttl = int(raw)
    return min(ttl, MAX_TTL_SECONDS) if ttl > 0 else None


def storable_ttl(response: EdgeResponse) -> int | None:
    if response.status != 200 or "set-cookie" in response.headers or len(response.body) > MAX_BODY_BYTES:
        return None
    # The key holds no request header fields, so an answer that varies on one (but the encoding, which
    # the runtime handles) cannot be shared.
    varies = {item.strip().lower() for value in response.headers.get_all("vary") for item in value.split(",")}
    if varies - {"", "accept-encoding"}:
        return None
    return cache_ttl(response.headers.get("cache-control"))


NO_VERSION = "0"  # the version of a family that was never written


class CacheLookup:
    """A family's current version, and the cached answer when there is one of that version."""

    __slots__ = ("age", "response", "version")

    def __init__(self, version: str, response: EdgeResponse | None = None, age: int = 0) -> None:
        self.version = version
        self.response = response
        self.age = age


class ResponseCache:
    def __init__(self, kv: KeyValueStore, clock: Clock, random: RandomSource) -> None:
        self._kv = kv
        self._clock = clock
        self._random = random

    @staticmethod
    def key(family: str, method: str, path: str, query: str) -> str:
        request = f"{method} {path}" + (f"?{query}" if query else "")
        if len(request.encode("utf-8")) > MAX_PLAIN_KEY_BYTES:
            request = "sha256:" + hashlib.sha256(request.encode("utf-8")).hexdigest()
        return f"{CACHE_PREFIX}{family}:{request}"

    async def lookup(self, family: str, key: str) -> CacheLookup:
        current = version_key(family)
        values = await self._kv.get_many([current, key])
        version = values[current] or NO_VERSION
        raw = values[key]
        if raw is None:
            return CacheLookup(version)
        try:
            entry = json.loads(raw)
            stored_at, ttl = float(entry["stored_at"]), int(entry["ttl"])
            if entry["version"] != version:
                return CacheLookup(version)
            response = EdgeResponse(
                status=int(entry["status"]),
                headers=Headers([(str(name), str(value)) for name, value in entry["headers"]]),
                body=base64.b64decode(entry["body"]),
            )
        except (ValueError, KeyError, TypeError):
            # Not an entry this code wrote: a miss, and the next store replaces it.
            return CacheLookup(version)
        age = self._clock.now() - stored_at
        if age >= ttl:
            return CacheLookup(version)
        return CacheLookup(version, response, max(0, int(age)))

    async def store(self, key: str, version: str, response: EdgeResponse, ttl: int) -> None:
        """Keep ``response`` as of ``version``: the family's version read before the origin was asked,
        so that an answer racing with a write is stored as already stale."""
        headers = [[name, value] for name, value in response.headers.items() if name in STORED_HEADERS]
        entry = {
            "version": version,
            "status": response.status,
            "headers": headers,
            "body": base64.b64encode(response.body).decode("ascii"),
            "stored_at": self._clock.now(),
            "ttl": ttl,
        }
        await self._kv.put(key, json.dumps(entry), expiration_ttl=max(ttl, KV_MIN_EXPIRATION_TTL))

    async def bump(self, family: str) -> None:
        await self._kv.put(version_key(family), self._random.token_hex(VERSION_TOKEN_BYTES))
