"""SQS batches with partial failure: only the messages that failed go back to the queue.

Handlers receive the whole message, not only its body: its id for the log lines, and its receive
count, which tells a handler which delivery this is (the one that reaches the queue's maxReceiveCount
is the last before the DLQ).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

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


def process_batch(
    records: Iterable[Any], handle: Callable[[QueueMessage], None], *, permanent: type[Exception]
) -> dict[str, Any]:
    """Run ``handle`` on each record's message and report the failures in Lambda's batchItemFailures form.

    A ``permanent`` error (a message that can never succeed) is logged and dropped rather than retried.
    """
    failures: list[dict[str, str]] = []
    for record in records:
        message = QueueMessage.from_record(record)
        try:
            handle(message)
        except permanent as exc:
            log.warning("dropping message %s (delivery %d): %s", message.message_id, message.receive_count, exc)
        except Exception:
            log.exception(
                "message %s failed on delivery %d; it will be retried", message.message_id, message.receive_count
            )
            failures.append({"itemIdentifier": message.message_id})
    return {"batchItemFailures": failures}
