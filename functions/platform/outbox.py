"""The transactional outbox: a domain event is written in the same transaction as the change it
announces, so it is never lost and never sent for a change that rolled back. A relay moves rows to the
queue afterwards (and again on a schedule, for anything a crash left behind)."""

from __future__ import annotations

import json
from typing import Any

from psycopg import Connection

from functions.platform.ports import Row

TOPICS = ("event.published", "event.updated", "event.cancelled", "registration.promoted")


def enqueue(conn: Connection[Row], topic: str, payload: dict[str, Any], *, dedup_key: str) -> None:
    """Record ``topic`` with ``payload`` inside the caller's transaction; a repeated ``dedup_key`` is a no-op."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}")
    conn.execute(
        "INSERT INTO outbox (topic, payload, dedup_key) VALUES (%s, %s::jsonb, %s) ON CONFLICT (dedup_key) DO NOTHING",
        (topic, json.dumps(payload, default=str), dedup_key),
    )
