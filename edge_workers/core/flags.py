"""Feature flags: one JSON document in FLAGS_KV (key ``flags``), cached inside the isolate.

    {"read_only": false, "cache": true, "public": {"new_checkout": true}}

``read_only`` refuses writes with 503 (maintenance); ``cache`` switches the API cache off; ``public``
is served to the front end at ``GET /api/flags``. The isolate re-reads the document at most every
``FLAGS_CACHE_SECONDS``, so a change reaches every isolate within that time plus KV's own
propagation (about 60 s). A missing or malformed document means the defaults below.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from edge_workers.core.ports import Clock, KeyValueStore

FLAGS_KEY = "flags"


class Flags(NamedTuple):
    read_only: bool = False
    cache: bool = True
    public: dict[str, bool | int | float | str] = {}  # shared by default instances: never mutated


def parse_flags(raw: str | None) -> Flags:
    try:
        document: Any = json.loads(raw) if raw else {}
    except ValueError:
        return Flags()
    if not isinstance(document, dict):
        return Flags()
    public = document.get("public")
    scalars = (
        {str(name): value for name, value in public.items() if isinstance(value, bool | int | float | str)}
        if isinstance(public, dict)
        else {}
    )
    return Flags(
        read_only=document.get("read_only") is True,
        cache=document.get("cache") is not False,
        public=scalars,
    )


class FlagSource:
    """The flags document, read from KV at most once per ``ttl_seconds`` per isolate."""

    def __init__(self, kv: KeyValueStore | None, clock: Clock, ttl_seconds: float) -> None:
        self._kv = kv
        self._clock = clock
        self._ttl = ttl_seconds
        self._flags: Flags | None = None
        self._expires = 0.0

    async def get(self) -> Flags:
        now = self._clock.monotonic()
        if self._flags is not None and now < self._expires:
            return self._flags
        flags = Flags()
        if self._kv is not None:
            try:
                flags = parse_flags(await self._kv.get(FLAGS_KEY))
            except Exception:
                # KV trouble must not take the gateway down: keep the last known flags for another period.
                flags = self._flags or Flags()
        self._flags, self._expires = flags, now + self._ttl
        return flags
