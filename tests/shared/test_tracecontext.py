"""The W3C traceparent contract that the edge and the functions share (shared/tracecontext.py)."""

from __future__ import annotations

import pytest

from shared import tracecontext
from shared.tracecontext import TraceParent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_is_read_and_written_back_unchanged() -> None:
    parsed = tracecontext.parse(VALID)
    assert parsed == TraceParent(TRACE, SPAN, "01")
    assert parsed.header() == VALID


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{TRACE[:-1]}-{SPAN}-01",  # trace id too short
        f"00-{TRACE}0-{SPAN}-01",  # trace id too long
        f"00-{TRACE}-{SPAN[:-1]}-01",  # span id too short
        f"00-{TRACE}-{SPAN}0-01",  # span id too long
        f"00-{TRACE}-{SPAN}-1",  # flags too short
        f"00-{TRACE}-{SPAN}-011",  # flags too long
        f"0-{TRACE}-{SPAN}-01",  # version too short
        f"00-{TRACE[:-1]}g-{SPAN}-01",  # not hex
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case is not the header's form
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE}-{SPAN}-01 ",
        f"00-{TRACE}-{SPAN}-01*/ DROP TABLE users; /*",  # it ends up in SQL comments: nothing else passes
    ],
)
def test_malformed_or_invalid_traceparents_are_refused(value: str | None) -> None:
    assert tracecontext.parse(value) is None


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    assert tracecontext.parse(f"01-{TRACE}-{SPAN}-01-what-comes-next") == TraceParent(TRACE, SPAN, "01")
    assert tracecontext.parse(f"01-{TRACE}-{SPAN}-01") == TraceParent(TRACE, SPAN, "01")


def test_a_fresh_trace_splits_its_random_digits_and_leaves_sampling_open() -> None:
    digits = "ab" * 24
    fresh = tracecontext.fresh(digits)
    assert fresh == TraceParent(digits[:32], digits[32:], "00")
    assert tracecontext.parse(fresh.header()) == fresh
    with pytest.raises(ValueError):
        tracecontext.fresh("ab")
