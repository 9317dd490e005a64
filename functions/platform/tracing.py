"""The trace a request or a queue message belongs to, for everything that runs on its behalf.

The edge starts or continues a W3C trace and forwards ``traceparent`` to the API (with the signed
envelope, though not signed by it: a forged one only mislabels the caller's own log lines). The HTTP
glue and the queue batch loop open ``traced(...)`` around each request and message; below that, the
log lines (functions/platform/telemetry.py), the metric records, the SQL comment on every statement
(functions/platform/adapters/postgres.py) and every message enqueued read ``current()``. A context
variable, so that threads (the dev stack's server) and tasks each see their own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from shared import tracecontext
from shared.tracecontext import TraceParent

HEADER = tracecontext.HEADER
# The SQS message attribute that carries a trace between functions.
MESSAGE_ATTRIBUTE = tracecontext.HEADER

_current: ContextVar[TraceParent | None] = ContextVar("agistack_trace", default=None)


def current() -> TraceParent | None:
    return _current.get()


def current_traceparent() -> str | None:
    trace = _current.get()
    return None if trace is None else trace.header()


def current_trace_id() -> str | None:
    trace = _current.get()
    return None if trace is None else trace.trace_id


@contextmanager
def traced(traceparent: str | None) -> Iterator[TraceParent]:
    """Run the body as a new span of the trace ``traceparent`` names, or of a new trace when it is
    missing or malformed; the previous trace (usually none) is back afterwards."""
    parent = tracecontext.parse(traceparent)
    span = secrets.token_hex(8)
    trace = (
        TraceParent(parent.trace_id, span, parent.flags)
        if parent is not None
        else tracecontext.fresh(secrets.token_hex(16) + span)
    )
    token = _current.set(trace)
    try:
        yield trace
    finally:
        _current.reset(token)
