"""Request paths and queries in one canonical form, before routing and before signing.

Routing on the raw path would let ``/api/../admin`` or ``/api/%2e%2e/admin`` reach a route it should
not; forwarding the raw path would let the origin see something other than what the edge authorised.
So the edge decodes once, resolves dot segments and duplicate slashes, routes on the result, and
forwards that same path re-encoded.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode

from shared.errors import BadRequest

# Encoded "/" or "\" would make one segment look like two to a later decoder; NUL truncates in C code.
_REFUSED_ENCODINGS = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
# A "%XX" left after decoding once means the client encoded twice: a classic traversal disguise.
_STILL_ENCODED = re.compile(r"%[0-9a-fA-F]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH_LENGTH = 2048
# Canonical forms of queries already seen: the same few recur on every request (``limit=20``), and
# parsing and re-encoding one costs about 0.1 ms under Pyodide. Bounded, since clients choose queries.
_CANONICAL_QUERIES: dict[str, str] = {}
_MAX_CANONICAL_QUERIES = 256
_MAX_REMEMBERED_QUERY = 256


def normalise_path(raw_path: str) -> str:
    """The canonical, decoded form of a request path; ``BadRequest`` for anything ambiguous."""
    if not raw_path.startswith("/") or len(raw_path) > MAX_PATH_LENGTH:
        raise BadRequest("the request path is malformed", code="bad_path")
    if "\\" in raw_path or _REFUSED_ENCODINGS.search(raw_path):
        raise BadRequest("the request path contains an encoded separator", code="bad_path")
    try:
        decoded = unquote(raw_path, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadRequest("the request path is not valid UTF-8", code="bad_path") from exc
    if _CONTROL.search(decoded) or _STILL_ENCODED.search(decoded):
        raise BadRequest("the request path is malformed", code="bad_path")
    segments: list[str] = []
    for segment in decoded.split("/")[1:]:
        if segment in ("", "."):
            continue
        if segment == "..":
            # RFC 3986 remove_dot_segments: ".." above the root stays at the root.
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    # No trailing slash: the origin (API Gateway, chalice local) routes "/events/" as "/events", and
    # the signed target must be the path it routes (shared.envelope.canonical_target agrees).
    return "/" + "/".join(segments)


def encode_path(path: str) -> str:
    """A normalised path re-encoded the way the origin re-encodes path parameters (RFC 3986)."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))


def canonical_query(raw_query: str) -> str:
    """Parameters sorted by name (values keep their order), encoded with ``quote``.

    The origin rebuilds the signed target from its parsed parameters; a single canonical form
    makes that reconstruction exact whatever order or encoding the client used.
    """
    if not raw_query:
        return ""
    known = _CANONICAL_QUERIES.get(raw_query)
    if known is not None:
        return known
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the query string is malformed", code="bad_query") from exc
    pairs.sort(key=lambda pair: pair[0])
    canonical = urlencode(pairs, quote_via=quote)
    if len(_CANONICAL_QUERIES) < _MAX_CANONICAL_QUERIES and len(raw_query) <= _MAX_REMEMBERED_QUERY:
        _CANONICAL_QUERIES[raw_query] = canonical
    return canonical
