"""SQS batches with partial failure: only the messages that failed go back to the queue.

Handlers receive the whole message, not only its body: its id for the log lines, and its receive
count, which tells a handler which delivery this is (the one that reaches the queue's maxReceiveCount
is the last before the DLQ).

Each message runs in the trace that enqueued it (functions/platform/tracing.py): from its
``traceparent`` message attribute (SQS), or the envelope's field of the same name (a message that came
through EventBridge, which carries no SQS attributes); a message without one starts a new trace.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from functions.platform import telemetry, tracing

log = logging.getLogger("agistack.queues")


class QueueMessage(NamedTuple):
    body: str
    message_id: str
    receive_count: int  # 1 on the first delivery
    attributes: Mapping[str, str]  # SQS system attributes (SentTimestamp, ApproximateReceiveCount, ...)
    message_attributes: Mapping[str, Any]  # the sender's own attributes

    @classmethod
    def from_record(cls, record: Any) -> QueueMessage:
        """From a Chalice ``SQSRecord`` (Lambda's event record, as ``to_dict()`` gives it)."""
        raw = record.to_dict()
        attributes = raw.get("attributes") or {}
        try:
            receive_count = int(attributes.get("ApproximateReceiveCount", 1))
        except (TypeError, ValueError):
            receive_count = 1
        return cls(
            body=str(raw.get("body", "")),
            message_id=str(raw.get("messageId", "")),
            receive_count=receive_count,
            attributes=attributes,
            message_attributes=raw.get("messageAttributes") or {},
        )

    @property
    def traceparent(self) -> str | None:
        """The enqueuer's trace, unchecked (``tracing.traced`` checks it)."""
        attribute = self.message_attributes.get(tracing.MESSAGE_ATTRIBUTE)
        if isinstance(attribute, Mapping) and isinstance(attribute.get("stringValue"), str):
            return str(attribute["stringValue"])
        if '"traceparent"' not in self.body:  # most bodies without one are not worth parsing
            return None
        try:
            envelope = json.loads(self.body)
        except ValueError:
            return None
        found = envelope.get(tracing.HEADER) if isinstance(envelope, dict) else None
        return found if isinstance(found, str) else None


def process_batch(
    records: Iterable[Any],
    handle: Callable[[QueueMessage], None],
    *,
    permanent: type[Exception],
    service: str,
    queue: str,
) -> dict[str, Any]:
    """Run ``handle`` on each record's message, in its trace, and report the failures in Lambda's
    batchItemFailures form. ``service`` (the product) and ``queue`` label the metric records.

    A ``permanent`` error (a message that can never succeed) is logged and dropped rather than retried.
    """
    failures: list[dict[str, str]] = []
    for record in records:
        message = QueueMessage.from_record(record)
        started = time.perf_counter()
        with tracing.traced(message.traceparent), telemetry.serving(service):
            try:
                handle(message)
                outcome = "ok"
            except permanent as exc:
                outcome = "dropped"
                log.warning("dropping message %s (delivery %d): %s", message.message_id, message.receive_count, exc)
            except Exception:
                outcome = "retried"
                log.exception(
                    "message %s failed on delivery %d; it will be retried", message.message_id, message.receive_count
                )
                failures.append({"itemIdentifier": message.message_id})
            telemetry.record_message(service, queue, outcome, (time.perf_counter() - started) * 1000)
    return {"batchItemFailures": failures}
