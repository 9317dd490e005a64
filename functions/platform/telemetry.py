"""Structured logs and CloudWatch metrics for the functions, through AWS Lambda Powertools.

Powertools' Logger writes one JSON object per line (what CloudWatch Logs Insights queries) and its
EMF provider writes metric records that CloudWatch turns into metrics without an API call: a maintained
library for both formats instead of hand-written JSON. Every log line and every metric record carries
the current trace id (functions/platform/tracing.py), so one id finds a request's edge line, API lines,
metric records and SQL statements.

Metrics are cheap only while their dimensions have few values: a user or site id as a dimension
makes one CloudWatch metric per user (billed per metric). ``emit`` refuses any dimension outside
``ALLOWED_DIMENSIONS``; ids belong in the record's metadata (searchable, not a metric), if anywhere.

Each record is a fresh ``EphemeralMetrics``: Powertools' ``Metrics`` shares one metric set per process,
which would mix the dimensions of concurrent requests in the dev stack's threaded server. The record is
written to stdout (Lambda sends stdout to CloudWatch, which reads EMF from it); the dev stack
``redirect``s them to its Prometheus view instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

from functions.platform import tracing

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

NAMESPACE = "agistack"
# Dimensions with a handful of values each; "service" is Powertools' own (the product).
ALLOWED_DIMENSIONS = frozenset({"service", "route", "status_class", "queue", "outcome"})

# The metrics the functions emit (grafana/agistack.json charts them; tests/platform/test_telemetry.py
# holds the two together).
API_REQUESTS = "api_requests"
API_LATENCY = "api_latency"
QUEUE_MESSAGES = "queue_messages"
QUEUE_LATENCY = "queue_latency"

EmfRecord = dict[str, Any]
EmfListener = Callable[[EmfRecord], None]


def write_to_stdout(record: EmfRecord) -> None:
    """What Powertools' ``flush_metrics`` prints, as one line: Lambda's stdout is where CloudWatch reads EMF."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")


_listeners: list[EmfListener] = [write_to_stdout]
# The product a request or message is served for: in Lambda always the one configure_logging named,
# but the dev stack serves both products from one process, whose "agistack" loggers share one handler.
_service: ContextVar[str | None] = ContextVar("agistack_service", default=None)


class ForbiddenDimension(ValueError):
    """A metric dimension outside the allow-list: it could hold an id, with one metric per value."""


class Measurement(NamedTuple):
    name: str
    unit: str  # a Powertools MetricUnit value: "Count", "Milliseconds", ...
    value: float


def configure_logging(service: str) -> Logger:
    """Every ``agistack.*`` logger of this process writes Powertools JSON lines to stdout, with
    ``service`` and the current ``trace_id`` in each. Called once by each product's app module."""
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    # LOG_LEVEL, as before Powertools (CDK sets it; Lambda's own log-level control still wins over it).
    logger = Logger(service=service, level=os.environ.get("LOG_LEVEL", "INFO"))
    for handler in logger.handlers:
        handler.addFilter(_TraceFilter())
    # Our modules log to "agistack.*" (stdlib loggers): give the whole family this logger's handler.
    logging.getLogger("agistack")  # registered now, or copy_config_to_registered_loggers would skip it
    copy_config_to_registered_loggers(source_logger=logger, include={"agistack"})
    return logger


class _TraceFilter(logging.Filter):
    """Adds the current trace id, and the product being served, to each record (Powertools prints a
    record's extra attributes, over its own keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = tracing.current_trace_id()
        service = _service.get()
        if service is not None:
            record.service = service
        return True


@contextmanager
def serving(service: str) -> Iterator[None]:
    """Log lines inside the block name ``service`` (the HTTP glue and the queue loop open it)."""
    token = _service.set(service)
    try:
        yield
    finally:
        _service.reset(token)


def emit(service: str, dimensions: Mapping[str, str], measurements: Iterable[Measurement]) -> EmfRecord:
    """Write one EMF record of ``measurements`` under ``dimensions``, the trace id in its metadata."""
    forbidden = sorted(set(dimensions) - ALLOWED_DIMENSIONS)
    if forbidden:
        raise ForbiddenDimension(f"not a low-cardinality dimension: {', '.join(forbidden)}")
    # Lazily: the EMF provider costs ~80 ms of imports, paid on the first record, not at cold start.
    from aws_lambda_powertools.metrics import EphemeralMetrics

    metrics = EphemeralMetrics(namespace=NAMESPACE, service=service)
    for name, value in dimensions.items():
        metrics.add_dimension(name=name, value=value)
    for measurement in measurements:
        metrics.add_metric(name=measurement.name, unit=measurement.unit, value=measurement.value)
    trace_id = tracing.current_trace_id()
    if trace_id is not None:
        metrics.add_metadata(key="trace_id", value=trace_id)
    record: EmfRecord = dict(metrics.serialize_metric_set())
    for listener in list(_listeners):
        listener(record)
    return record


def redirect(listener: EmfListener) -> Callable[[], None]:
    """Hand every record to ``listener`` instead of stdout (the dev stack, where no CloudWatch reads
    stdout, serves them as Prometheus text); returns what undoes it."""
    before = list(_listeners)
    _listeners[:] = [listener]
    return lambda: _listeners.__setitem__(slice(None), before)


def record_request(service: str, route: str, status: int, duration_ms: float) -> None:
    """One API request's metrics; ``route`` is the route template (``GET /events/{event_id}``)."""
    _emit_quietly(
        service,
        {"route": route, "status_class": f"{status // 100}xx"},
        [Measurement(API_REQUESTS, "Count", 1), Measurement(API_LATENCY, "Milliseconds", duration_ms)],
    )


def record_message(service: str, queue: str, outcome: str, duration_ms: float) -> None:
    """One queue message's metrics; ``outcome`` is ``ok``, ``retried`` or ``dropped``."""
    _emit_quietly(
        service,
        {"queue": queue, "outcome": outcome},
        [Measurement(QUEUE_MESSAGES, "Count", 1), Measurement(QUEUE_LATENCY, "Milliseconds", duration_ms)],
    )


def _emit_quietly(service: str, dimensions: Mapping[str, str], measurements: Iterable[Measurement]) -> None:
    # A metric is never worth a failed request or a redelivered message.
    try:
        emit(service, dimensions, measurements)
    except Exception:
        logging.getLogger("agistack.telemetry").exception("could not write a metric record")
