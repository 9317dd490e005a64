"""The Chalice app's non-HTTP handlers, found the way Chalice's deployer finds them, so the local
stack fires exactly what Lambda would."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalice.app import Chalice, Rate, ScheduledEventConfig, SQSEventConfig
from chalice.local import LambdaContext

log = logging.getLogger("agistack.dev.schedule")

_RATE_SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}


@dataclass(frozen=True)
class SqsHandler:
    name: str
    queue: str
    batch_size: int
    function: Any


@dataclass(frozen=True)
class ScheduledHandler:
    name: str
    expression: str
    interval_seconds: int | None  # None: a cron expression, fired only by `agistack run`
    function: Any


def sqs_handlers(app: Chalice) -> list[SqsHandler]:
    return [
        SqsHandler(source.name, source.queue or "", source.batch_size or 10, app.handler_map[source.name])
        for source in app.event_sources
        if isinstance(source, SQSEventConfig)
    ]


def scheduled_handlers(app: Chalice) -> list[ScheduledHandler]:
    handlers = []
    for source in app.event_sources:
        if not isinstance(source, ScheduledEventConfig):
            continue
        expression = source.schedule_expression
        interval = expression.value * _RATE_SECONDS[expression.unit] if isinstance(expression, Rate) else None
        text = expression if isinstance(expression, str) else expression.to_string()
        handlers.append(ScheduledHandler(source.name, text, interval, app.handler_map[source.name]))
    return handlers


def scheduled_event(name: str) -> dict[str, Any]:
    """The payload EventBridge sends a scheduled Lambda."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{name}"],
        "detail": {},
    }


def fire(handler: ScheduledHandler) -> Any:
    return handler.function(scheduled_event(handler.name), LambdaContext(handler.name, 512, max_runtime_ms=900_000))


class Scheduler(threading.Thread):
    """Fires each rate() schedule at its rate, first one interval after start, as EventBridge does."""

    def __init__(self, handlers: list[ScheduledHandler]) -> None:
        super().__init__(name="scheduler", daemon=True)
        self._handlers = [h for h in handlers if h.interval_seconds]
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        due = {h.name: time.monotonic() + (h.interval_seconds or 0) for h in self._handlers}
        while not self._stopping.is_set():
            now = time.monotonic()
            for handler in self._handlers:
                if now >= due[handler.name]:
                    due[handler.name] = now + (handler.interval_seconds or 0)
                    try:
                        log.info("schedule %s (%s): %s", handler.name, handler.expression, fire(handler))
                    except Exception:
                        log.exception("schedule %s failed", handler.name)
            wake = min(due.values(), default=now + 60) - time.monotonic()
            self._stopping.wait(max(0.05, min(wake, 60.0)))
