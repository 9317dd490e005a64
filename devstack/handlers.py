"""The Chalice app's non-HTTP handlers, found the way Chalice's deployer finds them, so the local
stack fires exactly what Lambda would: rate() schedules at their rate, cron() schedules at their
times (UTC, as EventBridge), computed by croniter, a maintained cron library."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalice.app import Chalice, Cron, Rate, ScheduledEventConfig, SQSEventConfig
from chalice.local import LambdaContext
from croniter import croniter

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
    interval_seconds: int | None  # None: a cron expression (``cron``)
    function: Any
    cron: str | None = None  # the cron expression in croniter's five fields

    def next_due(self, after: datetime) -> datetime:
        """The next time this schedule fires after ``after`` (UTC)."""
        if self.interval_seconds:
            return after + timedelta(seconds=self.interval_seconds)
        assert self.cron is not None
        return croniter(self.cron, after).get_next(datetime)  # type: ignore[no-any-return]


def croniter_expression(cron: Cron) -> str:
    """EventBridge's six fields (minutes hours day-of-month month day-of-week year) as croniter's five.

    ``?`` means "any" there; day-of-week numbers are 1-7 from Sunday there, 0-6 in croniter."""
    day_of_week = re.sub(r"\d", lambda m: str(int(m.group()) - 1), str(cron.day_of_week))
    fields = (cron.minutes, cron.hours, cron.day_of_month, cron.month, day_of_week)
    return " ".join(str(field).replace("?", "*") for field in fields)


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
        cron = croniter_expression(expression) if isinstance(expression, Cron) else None
        text = expression if isinstance(expression, str) else expression.to_string()
        handlers.append(ScheduledHandler(source.name, text, interval, app.handler_map[source.name], cron))
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
    """Fires each rate() schedule at its rate, first one interval after start, and each cron() schedule
    at its next time, as EventBridge does. Each firing runs in its own thread, as each Lambda
    invocation does: a run that takes most of its minute (the uptime checks) delays no other schedule."""

    def __init__(self, handlers: list[ScheduledHandler]) -> None:
        super().__init__(name="scheduler", daemon=True)
        self._handlers = [h for h in handlers if h.interval_seconds or h.cron]
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def _fire(self, handler: ScheduledHandler) -> None:
        try:
            log.info("schedule %s (%s): %s", handler.name, handler.expression, fire(handler))
        except Exception as error:
            if self._stopping.is_set():
                # The stack is stopping under a run in flight (the uptime checks' run lasts a minute):
                # its services went away first, as a Lambda's would at a deploy. Expected: one line.
                log.info("schedule %s cut short by the stop: %s", handler.name, type(error).__name__)
            else:
                log.exception("schedule %s failed", handler.name)

    def run(self) -> None:
        due = {h.name: h.next_due(datetime.now(UTC)) for h in self._handlers}
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            for handler in self._handlers:
                if now >= due[handler.name]:
                    due[handler.name] = handler.next_due(now)
                    threading.Thread(target=self._fire, args=(handler,), name=handler.name, daemon=True).start()
            wake = (min(due.values(), default=now + timedelta(seconds=60)) - datetime.now(UTC)).total_seconds()
            self._stopping.wait(max(0.05, min(wake, 60.0)))
