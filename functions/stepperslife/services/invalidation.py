"""Invalidating an event: afterwards every cached read of it, at the origin and at the edge, misses.

Two caches keep reads of events. Redis, at the origin, keeps anonymous reads under two versioned
families (``functions/platform/cache.py``): ``events`` for the listings and ``event:{id}`` for the
event itself. API_CACHE_KV, at the edge, keeps the answers of ``/api/events...`` under the family
``events`` (``shared.kv_keys``), whose version a write through the gateway replaces; a change that
does not come through the gateway (an image processed, a processing step) must replace it here.

Every writer of an event calls ``invalidate_event`` once its transaction has committed: the event
service, the image pipeline and the processing steps. Failure model: neither cache may fail the
write that already committed. A Redis outage is logged by ``Cache`` (reads are then served uncached
anyway); a failed edge write is logged and the edge copy expires by its ``s-maxage`` (300 s) instead.
"""

from __future__ import annotations

import logging

from functions.platform.cache import Cache
from functions.platform.ports import EdgeCache
from shared.kv_keys import family

log = logging.getLogger("agistack.invalidation")

CACHE_SERVICE = "stepperslife"
LIST_FAMILY = "events"
EDGE_FAMILY = family("/events")


def event_family(event_id: str) -> str:
    """The Redis family of one event's cached reads."""
    return f"event:{event_id}"


class EventInvalidation:
    def __init__(self, cache: Cache, edge_cache: EdgeCache) -> None:
        self._cache = cache
        self._edge_cache = edge_cache

    def invalidate_event(self, event_id: str) -> None:
        self._cache.bump(CACHE_SERVICE, LIST_FAMILY)
        self._cache.bump(CACHE_SERVICE, event_family(event_id))
        try:
            self._edge_cache.invalidate(EDGE_FAMILY)
        except OSError:
            log.warning("could not invalidate the edge cache of %s", EDGE_FAMILY, exc_info=True)
