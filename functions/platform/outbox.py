"""The transactional outbox: a domain event is written in the same transaction as the change it
announces, so it is never lost and never sent for a change that rolled back. A relay moves rows to the
queue afterwards (and again on a schedule, for anything a crash left behind).

Not a claim (``functions/platform/claims.py``): the outbox is a queue of rows to publish, each one
sent at least once; a repeated ``dedup_key`` is refused by the table's unique index, in the caller's
transaction, and consumers deduplicate what they receive twice. Each product names its own topics.

The row keeps the trace of the request that wrote it (column ``traceparent``; the relay puts it on the
message), so a handler of the event continues that trace even when the scheduled relay, in a trace of
its own, sends it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from psycopg import Connection

from functions.platform import tracing
from functions.platform.ports import Row


class Outbox:
    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)

    def enqueue(self, conn: Connection[Row], topic: str, payload: dict[str, Any], *, dedup_key: str) -> None:
        """Record ``topic`` with ``payload`` inside the caller's transaction; a repeated ``dedup_key`` is a no-op."""
        if topic not in self.topics:
            raise ValueError(f"unknown topic {topic!r}")
        conn.execute(
            "INSERT INTO outbox (topic, payload, dedup_key, traceparent) VALUES (%s, %s::jsonb, %s, %s) "
            "ON CONFLICT (dedup_key) DO NOTHING",
            (topic, json.dumps(payload, default=str), dedup_key, tracing.current_traceparent()),
        )
