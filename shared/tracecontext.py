"""W3C Trace Context (``traceparent``): the one definition the edge and the functions both parse.

``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``. Anything else (wrong lengths, upper case or
other non-hex, an all-zero trace or parent id, version ``ff``) is refused, and the caller starts a new
trace instead: a header that cannot be trusted to be well-formed also ends up in log lines and SQL
comments, so only this exact shape ever goes on. A later version (``01``..``fe``) is read by its first
four fields, as the specification asks; we always emit version ``00``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

HEADER = "traceparent"
_VERSION_00 = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# A future version may append fields after the flags ("-..."), never change the first four.
_LATER_VERSION = re.compile(r"^(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TraceParent(NamedTuple):
    trace_id: str
    span_id: str
    flags: str

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse(value: str | None) -> TraceParent | None:
    """The trace a ``traceparent`` value names, or None when it is malformed or invalid."""
    if not value or len(value) > 512:
        return None
    match = _VERSION_00.match(value) or (None if value.startswith("00-") else _LATER_VERSION.match(value))
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, flags)


def fresh(random_hex: str) -> TraceParent:
    """A new trace from 48 random hex digits (trace id, then span id); sampling left to others ("00")."""
    if len(random_hex) != 48:
        raise ValueError("a new trace needs 48 hex digits")
    return TraceParent(random_hex[:32], random_hex[32:], "00")
