"""``GET /img/{event_id}/{image_id}/{width}``: an event image variant in the best format the client takes.

The format is negotiated from ``Accept`` (RFC 9110 q-values). AVIF and WebP are sent only to a client
that names them (``image/avif``, ``image/webp``) with a q-value above 0: wildcards do not count,
because clients that cannot decode them send wildcards too (Firefox 65-92 ``image/webp,*/*``, Chrome
80-84 ``image/webp,image/apng,image/*,*/*;q=0.8``, curl and link-preview crawlers ``*/*``). Of the
named ones the highest q wins, AVIF on ties; JPEG, which every client decodes, when neither is named,
when the client weighs JPEG (``image/jpeg``, else ``image/*``, else ``*/*``) above both, or when no
``Accept`` was sent. The variant is read from the public media prefix (``MEDIA_PUBLIC_BASE_URL`` + the
key of ``shared.media``, the layout the pipeline writes); variants never change once written, so the
answer is cacheable for a year, and ``Vary: Accept`` keeps caches from handing AVIF to a client that
asked for JPEG. Only the widths the pipeline produces exist.
"""

from __future__ import annotations

import re

from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeResponse, Headers, OutboundRequest
from edge_workers.core.upstream import fetch
from shared.errors import NotFound, UpstreamUnavailable
from shared.media import FORMATS, IMMUTABLE, JPEG, VARIANT_WIDTHS, VariantFormat, variant_key

_URL_WIDTHS = frozenset(str(width) for width in VARIANT_WIDTHS)
# Ids as the pipeline writes them (canonical UUIDs); matched rather than parsed with ``uuid``, whose
# import costs tens of milliseconds of isolate start-up under Pyodide.
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Never stored: a variant appears once processing finishes, and the next request must see it.
MISSING_CACHE_CONTROL = "no-store"


# RFC 9110 section 12.4.2: "0", "1", or up to three decimals. Anything else (a typo, "nan", "2") is not
# a weight the client meant: it counts as a refusal rather than a guess.
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")
# The formats a client must name to be sent, best first (ties go to the first).
_NAMED_ONLY = tuple(image_format for image_format in FORMATS if image_format != JPEG)


def _accept_ranges(accept: str) -> dict[str, float]:
    """Media range (lower case) → q. A range listed twice keeps its lowest q: a refusal is never
    overridden by a repetition."""
    ranges: dict[str, float] = {}
    for item in accept.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        if not media_range:
            continue
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.match(value) else 0.0
        media_range = media_range.lower()
        ranges[media_range] = min(weight, ranges.get(media_range, weight))
    return ranges


def _jpeg_weight(ranges: dict[str, float]) -> float:
    for candidate in (JPEG.media_type, "image/*", "*/*"):  # the most specific range decides
        if candidate in ranges:
            return ranges[candidate]
    return 0.0


def choose_format(accept: str | None) -> VariantFormat:
    if not accept:
        return JPEG
    ranges = _accept_ranges(accept)
    named = [(ranges[f.media_type], f) for f in _NAMED_ONLY if ranges.get(f.media_type, 0.0) > 0]
    if not named:
        return JPEG
    weight, best = max(named, key=lambda item: item[0])  # max keeps the first of equals: AVIF
    return best if weight >= _jpeg_weight(ranges) else JPEG


def stored_key(path: str, image_format: VariantFormat) -> str:
    """The stored variant (``shared.media.variant_key``) for ``/img/{event_id}/{image_id}/{width}``."""
    segments = path.split("/")
    if len(segments) != 5 or segments[1] != "img" or segments[4] not in _URL_WIDTHS:
        raise NotFound("no such image", code="not_found")
    event_id, image_id = segments[2].lower(), segments[3].lower()
    if not (_UUID.match(event_id) and _UUID.match(image_id)):
        raise NotFound("no such image", code="not_found")
    return variant_key(event_id, image_id, int(segments[4]), image_format.extension)


async def handle_image(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    route = exchange.route
    if route is None or route.origin is None:
        raise RuntimeError("the image route must name the media origin")
    image_format = choose_format(exchange.request.headers.get("accept"))
    key = stored_key(exchange.path, image_format)
    request = OutboundRequest(
        exchange.request.method,
        f"{deps.config.origins[route.origin]}/{key}",
        Headers({"accept": image_format.media_type}),
        b"",
        deps.config.origin_timeout_seconds,
    )
    stored = await fetch(deps, request)
    if stored.status in (403, 404):
        # S3 answers 403 for a missing key when the reader may not list the bucket.
        missing = EdgeResponse.json(404, NotFound("no such image").body(), Headers({"vary": "Accept"}))
        missing.headers.set("cache-control", MISSING_CACHE_CONTROL)
        return missing
    if stored.status != 200:
        raise UpstreamUnavailable(f"the media store answered {stored.status}")
    headers = Headers({"content-type": image_format.media_type, "cache-control": IMMUTABLE, "vary": "Accept"})
    for name in ("etag", "last-modified"):
        value = stored.headers.get(name)
        if value is not None:
            headers.set(name, value)
    return EdgeResponse(200, headers, stored.body)
