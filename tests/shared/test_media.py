"""The media layout: the keys the image pipeline writes are the keys the edge serves."""

from __future__ import annotations

import io

from PIL import Image

from edge_workers.core.media import choose_format, stored_key
from functions.stepperslife.services import images
from shared import media

EVENT_ID = "6f1c2f8e-3b7a-4c1e-9d2a-0b5e8f7a6c41"
IMAGE_ID = "0d9e3c55-1f2a-4b6c-8e7d-9a0b1c2d3e4f"


def test_the_layout() -> None:
    assert media.variant_key(EVENT_ID, IMAGE_ID, 640, "webp") == f"public/{EVENT_ID}/{IMAGE_ID}/640.webp"
    assert media.IMMUTABLE == "public, max-age=31536000, immutable"
    assert [f.extension for f in media.FORMATS] == ["avif", "webp", "jpg"]


def test_every_variant_the_pipeline_makes_is_one_the_edge_serves() -> None:
    picture = io.BytesIO()
    Image.new("RGB", (2400, 1600), (200, 40, 90)).save(picture, "JPEG")
    processed = images.process(picture.getvalue())
    made = {media.variant_key(EVENT_ID, IMAGE_ID, v.url_width, v.encoding.extension) for v in processed.variants}
    served = {
        stored_key(f"/img/{EVENT_ID}/{IMAGE_ID}/{width}", choose_format(variant_format.media_type))
        for width in media.VARIANT_WIDTHS
        for variant_format in media.FORMATS
    }
    assert made == served
    assert {v.encoding.content_type for v in processed.variants} == {f.media_type for f in media.FORMATS}
