"""SQS batches with partial failure: only the messages that failed go back to the queue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("agistack.queues")


def process_batch(
    records: Iterable[Any], handle: Callable[[str], None], *, permanent: type[Exception]
) -> dict[str, Any]:
    """Run ``handle`` on each record's body and report the failures in Lambda's batchItemFailures form.

    A ``permanent`` error (a message that can never succeed) is logged and dropped rather than retried.
    """
    failures: list[dict[str, str]] = []
    for record in records:
        raw = record.to_dict()
        message_id = str(raw.get("messageId", ""))
        try:
            handle(record.body)
        except permanent as exc:
            log.warning("dropping message %s: %s", message_id, exc)
        except Exception:
            log.exception("message %s failed; it will be retried", message_id)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
