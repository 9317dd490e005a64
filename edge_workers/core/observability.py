"""Request ids and W3C trace context: what ties one request's log line, origin call and answer together."""

from __future__ import annotations

import re
from typing import NamedTuple

from edge_workers.core.http import Headers
from edge_workers.core.ports import RandomSource

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
# Version 00 of W3C Trace Context; ids of all zeros are invalid.
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACESTATE = re.compile(r"^[\x20-\x7e]{1,512}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


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
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def trace_context(headers: Headers, random: RandomSource) -> Trace:
    """Continue the caller's trace when its ``traceparent`` is valid; otherwise start a new one."""
    match = _TRACEPARENT.match(headers.get("traceparent") or "")
    if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
        state = headers.get("tracestate")
        return Trace(
            trace_id=match.group(1),
            span_id=random.token_hex(8),
            flags=match.group(3),
            state=state if state is not None and _TRACESTATE.match(state) else None,
        )
    # A new trace: the edge records no spans itself, so it leaves the sampling decision ("00") to others.
    ids = random.token_hex(24)
    return Trace(trace_id=ids[:32], span_id=ids[32:], flags="00", started_here=True)
