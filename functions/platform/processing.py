"""Domain-event processing (the seed's Event_Processing): each topic runs its steps in order.

A step that finished is recorded under the message's ``dedup_key`` once it completes, so a redelivered
message (a retry after a later step failed, or SQS delivering twice) resumes where it stopped instead
of repeating finished work. A crash between a step and its record repeats that one step, which is why
each step is itself safe to repeat. A message that can never be processed (not JSON, unknown topic,
no event id) is a ``PoisonMessage``: dropped with a log line rather than retried into the DLQ.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from functions.platform.ports import EventInvalidator, TransactionalDatabase

log = logging.getLogger("agistack.processing")

STEPS: dict[str, tuple[str, ...]] = {
    "event.published": ("enhance", "invalidate", "notify"),
    "event.updated": ("enhance", "invalidate"),
    "event.cancelled": ("invalidate", "notify"),
    "registration.promoted": ("invalidate", "notify"),
}


class PoisonMessage(Exception):
    """A message that no retry can fix."""


class Enhancer(Protocol):
    def enhance_event(self, event_id: str) -> Any: ...


class Notifier(Protocol):
    def notify(self, topic: str, payload: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class ReceivedEvent:
    topic: str
    dedup_key: str
    payload: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.payload["event_id"])


def parse_message(body: str) -> ReceivedEvent:
    """The outbox envelope, sent to SQS directly or wrapped by EventBridge (its ``detail``)."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise PoisonMessage("the body is not JSON") from exc
    if isinstance(data, dict) and "detail-type" in data and isinstance(data.get("detail"), dict):
        data = data["detail"]
    if not isinstance(data, dict):
        raise PoisonMessage("the body is not an object")
    topic, dedup_key, payload = data.get("topic"), data.get("dedup_key"), data.get("payload")
    if topic not in STEPS:
        raise PoisonMessage(f"unknown topic {topic!r}")
    if not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= 200:
        raise PoisonMessage("dedup_key is missing")
    if not isinstance(payload, dict):
        raise PoisonMessage("payload is missing")
    try:
        UUID(str(payload.get("event_id")))
        if topic == "registration.promoted":
            UUID(str(payload.get("user_id")))
    except ValueError as exc:
        raise PoisonMessage("the payload lacks a valid event_id (or user_id)") from exc
    return ReceivedEvent(topic=str(topic), dedup_key=dedup_key, payload=payload)


class EventProcessor:
    def __init__(
        self, db: TransactionalDatabase, *, enhancer: Enhancer, invalidation: EventInvalidator, notifier: Notifier
    ) -> None:
        self._db = db
        self._enhancer = enhancer
        self._invalidation = invalidation
        self._notifier = notifier

    def handle(self, body: str) -> None:
        """Run the message's remaining steps; raises when a step fails (the message is retried)."""
        event = parse_message(body)
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT step FROM processed_steps WHERE dedup_key = %s", (event.dedup_key,)).fetchall()
        done = {row["step"] for row in rows}
        for step in STEPS[event.topic]:
            if step in done:
                log.info("%s: step %s already done", event.dedup_key, step)
                continue
            self._run(step, event)
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO processed_steps (dedup_key, step) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (event.dedup_key, step),
                )

    def prune(self, retention_days: int) -> int:
        """Forget step records older than ``retention_days``; returns how many."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM processed_steps WHERE completed_at < now() - make_interval(days => %s)", (retention_days,)
            )
            return cursor.rowcount

    def _run(self, step: str, event: ReceivedEvent) -> None:
        if step == "enhance":
            self._enhancer.enhance_event(event.event_id)
        elif step == "invalidate":
            # After "enhance" changed the event's metadata cached reads must miss, here and at the
            # edge; it also covers a writer whose own bump was lost while Redis was down.
            self._invalidation.invalidate_event(event.event_id)
        elif step == "notify":
            self._notifier.notify(event.topic, event.payload)
