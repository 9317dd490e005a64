"""The Workers KV keys that the functions write and the edge reads, laid out in one place.

- ``PUSH_SUBS_KV``: ``push:{sha256(endpoint)}``, the edge's copy of a push subscription. The push
  router writes it; the origin deletes it when a push service reports the subscription gone.
- ``API_CACHE_KV``: ``ver:{family}``, the current version of a resource family's cached reads
  (``edge_workers/core/cache.py``). A write through the gateway and any origin writer that changes the
  family (the image pipeline, the processing steps) replace it with a new random token, so every
  cached read of the family misses from then on.

A family is the first segment of the path at the origin (``/events/1/registrations`` -> ``events``),
so the origin names the family of what it changed exactly as the edge derives it from a request.
Standard library only: both sides import it.
"""

from __future__ import annotations

import hashlib

PUSH_PREFIX = "push:"
VERSION_PREFIX = "ver:"
# A family's version is this many random bytes, hex: random rather than a counter, so concurrent
# writers need no read-modify-write.
VERSION_TOKEN_BYTES = 8


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode("utf-8")).hexdigest()


def push_subscription_key(endpoint_digest: str) -> str:
    """The edge copy of the subscription whose endpoint hashes to ``endpoint_digest``."""
    return PUSH_PREFIX + endpoint_digest


def family(upstream_path: str) -> str:
    """The resource family a path at the origin belongs to (``/events/1/registrations`` -> ``events``):
    writes to a family invalidate every cached read of it."""
    return upstream_path.strip("/").split("/", 1)[0] or "root"


def version_key(family_name: str) -> str:
    return VERSION_PREFIX + family_name
