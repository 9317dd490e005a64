"""The one JSON loader for what arrives from outside: ``json.loads`` behind a nesting-depth limit.

Failure model: CPython's (and Pyodide's) JSON decoder recurses once per nested array or object, so a
body of a few thousand ``[`` raises ``RecursionError`` (a 500, or a crashed isolate) instead of a clean
refusal. Every reader of a client's JSON, at the edge and at the origin, goes through ``loads``: it
counts the depth first without recursing (one regular-expression pass that steps over strings, so a
``[`` inside a string does not count) and refuses anything deeper than ``MAX_DEPTH`` with a 400
``json_too_deep``. No API document here nests more than a handful of levels.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.errors import BadRequest

MAX_DEPTH = 32
# A whole string literal (skipped) or one bracket.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (malformed input gives some number)."""
    deepest = level = 0
    for match in _TOKENS.finditer(text):
        found = match.group()
        if found in "[{":
            level += 1
            deepest = max(deepest, level)
        elif found in "]}":
            level -= 1
    return deepest


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(data)``; ``ValueError`` for malformed JSON as there, ``BadRequest`` when too deep."""
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes) else data
    # Fast path: a document with few brackets cannot be deep (most bodies: a few dozen at most).
    if text.count("[") + text.count("{") > max_depth and depth(text) > max_depth:
        raise BadRequest(f"the JSON nests deeper than {max_depth} levels", code="json_too_deep")
    return json.loads(text)
