"""The step engine: each domain event's topic runs its steps in order, each step at most once.

The product supplies the table (topic → ordered ``(step name, callable)`` list) and, optionally, a
payload check; the engine knows no topic of its own.

Each step is a claim (``functions/platform/claims.py``) under scope ``step`` and key
``<dedup_key>:<step>``: a redelivered message (a retry after a later step failed, or SQS delivering
twice) resumes where it stopped instead of repeating finished work; a step that raises is released, so
the retry runs it again; a step another delivery is running right now makes this delivery fail and
come back later (``ClaimBusy``). A crash between a step and its record repeats that one step once the
lease ran out, which is why each step must itself be safe to repeat. A message that can never be
processed (not JSON, unknown topic, a payload the product's check refuses) is a ``PoisonMessage``:
dropped with a log line rather than retried into the DLQ.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from functions.platform.claims import Claims, Done
from functions.platform.queues import QueueMessage

log = logging.getLogger("agistack.processing")

SCOPE = "step"
# Longer than any step can run (a Lambda's timeout, 30 s), shorter than the queue's visibility timeout
# (180 s), so that the redelivery after a crash finds the lease lapsed.
STEP_LEASE = timedelta(seconds=90)


class PoisonMessage(Exception):
    """A message that no retry can fix."""


class ReceivedEvent(NamedTuple):
    topic: str
    dedup_key: str
    payload: dict[str, Any]


StepFunction = Callable[[ReceivedEvent], object]
Step = tuple[str, StepFunction]
# Raises PoisonMessage for a payload the topic's steps cannot work with.
PayloadCheck = Callable[[ReceivedEvent], None]


def parse_envelope(body: str, topics: Collection[str], check: PayloadCheck | None = None) -> ReceivedEvent:
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
    if topic not in topics:
        raise PoisonMessage(f"unknown topic {topic!r}")
    if not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= 200:
        raise PoisonMessage("dedup_key is missing")
    if not isinstance(payload, dict):
        raise PoisonMessage("payload is missing")
    event = ReceivedEvent(topic=str(topic), dedup_key=dedup_key, payload=payload)
    if check is not None:
        check(event)
    return event


class StepEngine:
    def __init__(
        self,
        claims: Claims,
        steps: Mapping[str, Sequence[Step]],
        *,
        check: PayloadCheck | None = None,
        lease: timedelta = STEP_LEASE,
    ) -> None:
        self._claims = claims
        self._steps = steps
        self._check = check
        self._lease = lease

    def parse(self, body: str) -> ReceivedEvent:
        return parse_envelope(body, self._steps, self._check)

    def handle(self, message: QueueMessage) -> None:
        """Run the message's remaining steps; raises when a step fails (the message is retried)."""
        event = self.parse(message.body)
        for name, run in self._steps[event.topic]:
            work = functools.partial(run, event)
            outcome = self._claims.run_once(
                SCOPE, f"{event.dedup_key}:{name}", work, lease=self._lease, record=_nothing
            )
            if isinstance(outcome, Done):
                log.info("%s: step %s already done (delivery %d)", event.dedup_key, name, message.receive_count)

    def prune(self, older_than: timedelta) -> int:
        """Forget step records older than ``older_than``; returns how many."""
        return self._claims.prune(older_than, family=SCOPE)


def _nothing(value: object) -> None:
    """A step's record says that it ran; its return value is not kept."""
    return None
