"""The layout of published event pictures: the contract between the image pipeline and the edge.

The pipeline (``functions/stepperslife/services/uploads.py``) writes each variant once, at
``public/{event_id}/{image_id}/{width}.{extension}``, for every width in ``VARIANT_WIDTHS`` (never
upscaled: a narrower original stops the list early) and every format in ``FORMATS``. The edge
(``edge_workers/core/media.py``) serves ``GET /img/{event_id}/{image_id}/{width}`` from that key, in
the format the client prefers. A key never changes content once written, so both the stored object
and the edge's answer carry ``IMMUTABLE``. Standard library only: both sides import it.
"""

from __future__ import annotations

from typing import NamedTuple

VARIANT_WIDTHS: tuple[int, ...] = (320, 640, 1280, 1920)
PUBLIC_PREFIX = "public/"
IMMUTABLE = "public, max-age=31536000, immutable"


class VariantFormat(NamedTuple):
    name: str
    media_type: str
    extension: str


AVIF = VariantFormat("avif", "image/avif", "avif")
WEBP = VariantFormat("webp", "image/webp", "webp")
JPEG = VariantFormat("jpeg", "image/jpeg", "jpg")
# Best first: the edge's preference when the client takes several, and every format is made.
FORMATS: tuple[VariantFormat, ...] = (AVIF, WEBP, JPEG)


def variant_key(event_id: str, image_id: str, width: int, extension: str) -> str:
    """Where the variant of ``width`` pixels (a ``VARIANT_WIDTHS`` entry) in ``extension`` is stored."""
    return f"{PUBLIC_PREFIX}{event_id}/{image_id}/{width}.{extension}"
