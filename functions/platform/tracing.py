"""The trace a request or a queue message belongs to, for everything that runs on its behalf.

The edge starts or continues a W3C trace and forwards ``traceparent`` to the API (with the signed
envelope, though not signed by it: a forged one only mislabels the caller's own log lines). The HTTP
glue and the queue batch loop open ``traced(...)`` around each request and message, and each scheduled
handler runs in a trace of its own (``in_new_trace``); below that, the
log lines (functions/platform/telemetry.py), the metric records, the SQL comment on every statement
(functions/platform/adapters/postgres.py) and every message enqueued read ``current()``. A context
variable, so that threads (the dev stack's server) and tasks each see their own.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from shared import tracecontext
from shared.tracecontext import TraceParent

HEADER = tracecontext.HEADER
# The SQS message attribute that carries a trace between functions.
MESSAGE_ATTRIBUTE = tracecontext.HEADER

_current: ContextVar[TraceParent | None] = ContextVar("agistack_trace", default=None)
_P = ParamSpec("_P")
_R = TypeVar("_R")


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


def in_new_trace(handler: Callable[_P, _R]) -> Callable[_P, _R]:
    """A scheduled handler, run as the root of a trace of its own: a schedule continues nobody's trace,
    and its log lines, SQL comments and the messages it enqueues should still name one."""

    @functools.wraps(handler)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with traced(None):
            return handler(*args, **kwargs)

    return run
