"""The outbox relay: moves committed domain events from the ``outbox`` table to the message transport.

Delivery is at least once: a row is marked published in the transaction that read it, after the send,
so a crash between the two sends it again. Consumers deduplicate by ``dedup_key``, which every message
carries in its body (standard queues have no MessageDeduplicationId).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from functions.platform import tracing
from functions.platform.ports import Row, TransactionalDatabase

log = logging.getLogger("agistack.outbox")


@dataclass(frozen=True)
class DomainMessage:
    """One domain event as it travels: the same envelope on SQS and on EventBridge."""

    id: int
    topic: str
    dedup_key: str
    payload: dict[str, Any]
    created_at: str
    # The trace of the request that wrote the row (functions/platform/tracing.py), so that the
    # handlers continue it; None for rows written outside a trace.
    traceparent: str | None = None

    def envelope(self) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "id": self.id,
            "topic": self.topic,
            "dedup_key": self.dedup_key,
            "payload": self.payload,
            "created_at": self.created_at,
        }
        if self.traceparent is not None:
            envelope[tracing.HEADER] = self.traceparent
        return envelope


class MessagePublisher(Protocol):
    def publish(self, message: DomainMessage) -> None:
        """Hand ``message`` to the transport; raise if it was not accepted."""
        ...


class OutboxRelay:
    def __init__(self, db: TransactionalDatabase, publisher: MessagePublisher) -> None:
        self._db = db
        self._publisher = publisher

    def flush(self, limit: int = 100) -> int:
        """Send up to ``limit`` unpublished rows in id order; returns how many were sent.

        SKIP LOCKED lets a request's flush and the scheduled relay run at once without sending a row
        twice or waiting for each other. A transport failure stops the batch (the rest would fail too)
        and is logged, not raised: the rows stay unpublished and the next flush retries them."""
        sent: list[int] = []
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, topic, payload, dedup_key, created_at, traceparent FROM outbox WHERE published_at IS NULL "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
            for row in rows:
                try:
                    self._publisher.publish(_message(row))
                except Exception:
                    log.exception("outbox %s (%s) not sent; it stays for the next flush", row["id"], row["topic"])
                    break
                sent.append(row["id"])
            if sent:
                conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", (sent,))
        return len(sent)

    def flush_after_commit(self) -> None:
        """A use case's own flush: the rows it just committed go now rather than at the next relay tick.
        Never raises (the database may be briefly gone too): the scheduled relay sends them later."""
        try:
            self.flush()
        except Exception:
            log.warning("outbox relay failed; the scheduled relay will retry", exc_info=True)

    def flush_all(self, limit: int = 100, max_batches: int = 50) -> int:
        """Flush batch after batch until the outbox is empty (or a batch comes up short)."""
        total = 0
        for _ in range(max_batches):
            count = self.flush(limit)
            total += count
            if count < limit:
                break
        return total

    def prune(self, retention_days: int) -> int:
        """Delete rows published more than ``retention_days`` ago; returns how many."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE published_at < now() - make_interval(days => %s)", (retention_days,)
            )
            return cursor.rowcount


def _message(row: Row) -> DomainMessage:
    return DomainMessage(
        id=int(row["id"]),
        topic=str(row["topic"]),
        dedup_key=str(row["dedup_key"]),
        payload=dict(row["payload"]),
        created_at=row["created_at"].isoformat(),
        traceparent=row["traceparent"],
    )
