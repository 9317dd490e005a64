"""The gateway's trace context: continue a caller's valid traceparent with a new span for the edge's
hop, replace anything malformed with a new trace (edge_workers/core/observability.py)."""

from __future__ import annotations

import pytest

from edge_workers.core.http import Headers
from edge_workers.core.observability import request_id, trace_context
from edge_workers.core.ports import SystemRandom
from shared import tracecontext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_a_valid_traceparent_is_continued_with_a_new_span_for_the_edge() -> None:
    trace = trace_context(Headers({"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=1"}), SystemRandom())
    assert (trace.trace_id, trace.flags, trace.state, trace.started_here) == (TRACE, "01", "vendor=1", False)
    assert trace.span_id != SPAN and tracecontext.parse(trace.traceparent) is not None
    assert trace.traceparent == f"00-{TRACE}-{trace.span_id}-01"


@pytest.mark.parametrize(
    "offered",
    [
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE[:30]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}0-01",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-1]}z-{SPAN}-01",
        "",
    ],
)
def test_a_malformed_traceparent_is_replaced_by_a_new_trace(offered: str) -> None:
    headers = Headers({"traceparent": offered, "tracestate": "vendor=1"})
    trace = trace_context(headers, SystemRandom())
    assert trace.started_here and trace.trace_id != TRACE and trace.state is None
    assert tracecontext.parse(trace.traceparent) is not None
    # With no request id offered, a trace started here names the request too.
    assert request_id(headers, SystemRandom(), trace) == trace.trace_id


def test_each_request_without_a_trace_gets_its_own() -> None:
    traces = {trace_context(Headers(), SystemRandom()).trace_id for _ in range(50)}
    assert len(traces) == 50
