"""What SteppersLife does with its domain events (the seed's Event_Processing): the step table the
platform's step engine runs (``functions/platform/processing.py``), and the payload check that turns a
message no step could work with into a poison message instead of five failed deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from uuid import UUID

from functions.platform.claims import Claims
from functions.platform.ports import EventInvalidator
from functions.platform.processing import PoisonMessage, ReceivedEvent, Step, StepEngine, parse_envelope
from functions.stepperslife.services.domain_events import TOPICS


class Enhancer(Protocol):
    def enhance_event(self, event_id: str) -> Any: ...


class Notifier(Protocol):
    def notify(self, topic: str, payload: Mapping[str, Any]) -> Any: ...


def check_payload(event: ReceivedEvent) -> None:
    """Every topic is about an event; a promotion also names the user promoted."""
    try:
        UUID(str(event.payload.get("event_id")))
        if event.topic == "registration.promoted":
            UUID(str(event.payload.get("user_id")))
    except ValueError as exc:
        raise PoisonMessage("the payload lacks a valid event_id (or user_id)") from exc


def parse_message(body: str) -> ReceivedEvent:
    """A domain-event message as the step engine reads it (``PoisonMessage`` when it never could)."""
    return parse_envelope(body, TOPICS, check_payload)


def event_steps(*, enhancer: Enhancer, invalidation: EventInvalidator, notifier: Notifier) -> dict[str, list[Step]]:
    """Topic → its steps in order. Each step must be safe to repeat (see the step engine)."""

    def enhance(event: ReceivedEvent) -> None:
        enhancer.enhance_event(str(event.payload["event_id"]))

    def invalidate(event: ReceivedEvent) -> None:
        # After "enhance" changed the event's metadata cached reads must miss (origin and edge); it also
        # covers a writer whose own invalidation was lost while Redis was down.
        invalidation.invalidate_event(str(event.payload["event_id"]))

    def notify(event: ReceivedEvent) -> None:
        notifier.notify(event.topic, event.payload)

    return {
        "event.published": [("enhance", enhance), ("invalidate", invalidate), ("notify", notify)],
        "event.updated": [("enhance", enhance), ("invalidate", invalidate)],
        "event.cancelled": [("invalidate", invalidate), ("notify", notify)],
        "registration.promoted": [("invalidate", invalidate), ("notify", notify)],
    }


def event_processor(
    claims: Claims, *, enhancer: Enhancer, invalidation: EventInvalidator, notifier: Notifier
) -> StepEngine:
    steps = event_steps(enhancer=enhancer, invalidation=invalidation, notifier=notifier)
    return StepEngine(claims, steps, check=check_payload)
