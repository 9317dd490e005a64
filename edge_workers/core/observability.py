"""Request ids and W3C trace context: what ties one request's log line, origin call and answer together."""

from __future__ import annotations

import re
from typing import NamedTuple

from edge_workers.core.http import Headers
from edge_workers.core.ports import RandomSource
from shared import tracecontext

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
_TRACESTATE = re.compile(r"^[\x20-\x7e]{1,512}$")


def request_id(headers: Headers, random: RandomSource, trace: Trace) -> str:
    """The client's ``X-Request-Id`` when it is well-formed, else a new one: the trace id when the
    trace starts here (one identifier to search the logs for, and one random draw fewer)."""
    offered = headers.get(REQUEST_ID_HEADER)
    if offered is not None and _REQUEST_ID.match(offered):
        return offered
    return trace.trace_id if trace.started_here else random.token_hex(16)


class Trace(NamedTuple):
    trace_id: str
    span_id: str  # the edge's own span: the parent of whatever the origin does
    flags: str
    state: str | None = None
    started_here: bool = False

    @property
    def traceparent(self) -> str:
        return tracecontext.TraceParent(self.trace_id, self.span_id, self.flags).header()


def trace_context(headers: Headers, random: RandomSource) -> Trace:
    """Continue the caller's trace when its ``traceparent`` is valid (shared/tracecontext.py), with a new
    span id for the edge's hop; otherwise start a new one."""
    offered = tracecontext.parse(headers.get(tracecontext.HEADER))
    if offered is not None:
        state = headers.get("tracestate")
        return Trace(
            trace_id=offered.trace_id,
            span_id=random.token_hex(8),
            flags=offered.flags,
            state=state if state is not None and _TRACESTATE.match(state) else None,
        )
    # A new trace: the edge records no spans itself, so it leaves the sampling decision to others.
    started = tracecontext.fresh(random.token_hex(24))
    return Trace(trace_id=started.trace_id, span_id=started.span_id, flags=started.flags, started_here=True)
