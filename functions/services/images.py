"""Event pictures: from untrusted upload bytes to web variants and metadata. Pure: bytes in, bytes out.

What it does, in order, and why:

1. The real type comes from the first bytes (JPEG, PNG, WebP, AVIF, GIF); names and declared content
   types are ignored, and Pillow is only allowed the one decoder that matches the sniffed type.
2. Dimensions and frame count are read from the header and checked against the budgets before any
   pixel is decoded (a 100 KB file can declare 100000 x 100000 pixels).
3. JPEGs are decoded in draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding, to the smallest
   size that is still at least the largest variant. On a 12 MP photo this decodes a quarter of the
   pixels, which is most of the speed and memory gain (figures in benchmarks/images.py).
4. Animations (GIF, animated WebP/AVIF, APNG) keep their first frame only: variants are still images.
5. The largest variant is made first; EXIF orientation, the conversion to sRGB (through the embedded
   ICC profile when there is one) and alpha handling then work on that small image, not on the
   original, and each smaller variant is resized from the one above it.
6. Variants carry no metadata at all (no EXIF, so no GPS; no XMP; no ICC: they are sRGB). Camera,
   lens and capture time are returned as metadata; GPS is never read.

Encoder settings (measured on a photo-like 1920 px image; PSNR against the source about 40.5 dB for
each, i.e. visually close):

- AVIF quality 55, speed 8: about 10x faster than the default speed 6, about 35% larger than speed 6.
- WebP quality 80, method 2: about 2x faster than the default method 4, about 10% larger.
- JPEG quality 82, progressive (renders coarse-to-fine while loading), optimized Huffman tables
  (about 15% smaller for a few ms). Alpha is flattened onto a white background, since JPEG has none.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import string
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from blurhash._functions import ffi as _blurhash_ffi  # type: ignore[import-untyped]
from blurhash._functions import lib as _blurhash_lib
from PIL import ExifTags, Image, ImageCms

log = logging.getLogger("agistack.images")

# Sniffed type → (Pillow decoder, content type). Nothing else is ever decoded.
ACCEPTED_TYPES: dict[str, tuple[str, str]] = {
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "avif": ("AVIF", "image/avif"),
    "gif": ("GIF", "image/gif"),
}
ACCEPTED_CONTENT_TYPES = frozenset(content_type for _, content_type in ACCEPTED_TYPES.values())


class ImageRejected(Exception):
    """The bytes can never become an image here (wrong type, over budget, corrupt): do not retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Encoding:
    name: str  # also the key's extension ("jpg" for JPEG)
    pillow_format: str
    content_type: str
    options: dict[str, Any]

    @property
    def extension(self) -> str:
        return "jpg" if self.name == "jpeg" else self.name


ENCODINGS: tuple[Encoding, ...] = (
    Encoding("avif", "AVIF", "image/avif", {"quality": 55, "speed": 8}),
    Encoding("webp", "WEBP", "image/webp", {"quality": 80, "method": 2}),
    Encoding("jpeg", "JPEG", "image/jpeg", {"quality": 82, "progressive": True, "optimize": True}),
)


@dataclass(frozen=True)
class ImagePolicy:
    widths: tuple[int, ...] = (320, 640, 1280, 1920)
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    # Only the first frame is decoded; the cap bounds the work of counting frames in the header.
    max_frames: int = 1000
    # WebP cannot encode a side longer than 16383 px; longer strips are not pictures anyway.
    max_side: int = 16_383
    background: tuple[int, int, int] = (255, 255, 255)
    encodings: tuple[Encoding, ...] = ENCODINGS


DEFAULT_POLICY = ImagePolicy()


@dataclass(frozen=True)
class Variant:
    width: int
    height: int
    encoding: Encoding
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ProcessedImage:
    format: str  # the sniffed type of the original
    width: int  # as displayed, after EXIF orientation
    height: int
    frames: int
    has_alpha: bool
    variants: tuple[Variant, ...]
    blurhash: str
    dominant_color: str  # "#rrggbb"
    camera: str | None
    lens: str | None
    captured_at: str | None  # ISO 8601, with the offset when the camera recorded one


def content_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- 1. the real type ----------------------------------------------------------------------------

_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "an icon"),
)


def _ftyp_brands(head: bytes) -> set[bytes]:
    box_size = struct.unpack(">I", head[:4])[0]
    end = min(max(box_size, 16), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}


def sniff(head: bytes) -> str:
    """The accepted type named by the file's first bytes (64 are plenty), or ImageRejected."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 16 and head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}:
            raise ImageRejected("HEIC/HEIF images are not accepted: export as JPEG, PNG, WebP or AVIF")
        raise ImageRejected("this is a video or other ISO media file, not an accepted image")
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            raise ImageRejected(f"this is {name}, not an accepted image (JPEG, PNG, WebP, AVIF or GIF)")
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        raise ImageRejected("SVG and other markup are not accepted: upload JPEG, PNG, WebP, AVIF or GIF")
    raise ImageRejected("not an accepted image type (JPEG, PNG, WebP, AVIF or GIF)")


# --- 2. decoding within budgets ------------------------------------------------------------------


@contextmanager
def _decoder_errors_are_rejections() -> Iterator[None]:
    """Decoder failures on untrusted bytes are the file's fault, never a crash or a retry."""
    with warnings.catch_warnings():
        # Pillow only warns between its bomb threshold and twice that: make it an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("the image declares too many pixels") from exc
        except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error, IndexError) as exc:
            raise ImageRejected("the file is truncated or corrupt") from exc


def _check_budgets(image: Image.Image, policy: ImagePolicy) -> int:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected("the image has no pixels")
    if width * height > policy.max_pixels:
        raise ImageRejected(
            f"the image is {width}x{height} pixels; at most {policy.max_pixels // 1_000_000} megapixels are accepted"
        )
    if max(width, height) > policy.max_side:
        raise ImageRejected(f"the image is {width}x{height} pixels; no side may exceed {policy.max_side} pixels")
    frames = int(getattr(image, "n_frames", 1))
    if frames > policy.max_frames:
        raise ImageRejected(f"the animation has {frames} frames; at most {policy.max_frames} are accepted")
    return frames


# --- 3. metadata (never GPS) ---------------------------------------------------------------------

_ORIENTATION = ExifTags.Base.Orientation
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")


def _read_exif(image: Image.Image) -> tuple[Image.Exif | None, dict[int, Any]]:
    """IFD0 and the Exif IFD. A broken EXIF block loses the metadata, not the picture."""
    try:
        exif = image.getexif()
        return exif, dict(exif.get_ifd(ExifTags.IFD.Exif))
    except Exception:
        log.info("unreadable EXIF ignored", exc_info=True)
        return None, {}


def _text(value: Any, limit: int = 100) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value if ch in _PRINTABLE).strip()
    return cleaned[:limit] or None


def _capture_time(exif_ifd: dict[int, Any]) -> str | None:
    for tag, offset_tag in (
        (ExifTags.Base.DateTimeOriginal, ExifTags.Base.OffsetTimeOriginal),
        (ExifTags.Base.DateTimeDigitized, ExifTags.Base.OffsetTimeDigitized),
    ):
        raw = _text(exif_ifd.get(tag), 32)
        if not raw:
            continue
        try:
            moment = datetime.strptime(raw[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
        offset = _text(exif_ifd.get(offset_tag), 8)
        if offset and len(offset) == 6 and offset[0] in "+-" and offset[3] == ":":
            try:
                delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
                moment = moment.replace(tzinfo=timezone(delta if offset[0] == "+" else -delta))
            except ValueError:
                pass
        return moment.isoformat()
    return None


def _camera(exif: Image.Exif | None) -> str | None:
    if exif is None:
        return None
    make = _text(exif.get(ExifTags.Base.Make))
    model = _text(exif.get(ExifTags.Base.Model))
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model  # "Canon" + "Canon EOS R5" reads better as the model alone
    return " ".join(part for part in (make, model) if part) or None


def _lens(exif_ifd: dict[int, Any]) -> str | None:
    make = _text(exif_ifd.get(ExifTags.Base.LensMake))
    model = _text(exif_ifd.get(ExifTags.Base.LensModel))
    if make and model and model.lower().startswith(make.lower()):
        return model
    return " ".join(part for part in (make, model) if part) or None


# --- 4. pixels -----------------------------------------------------------------------------------

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _plain_mode(image: Image.Image) -> Image.Image:
    """An 8-bit mode that resizes well: L, LA, RGB, RGBA or CMYK (alpha kept when there is some)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples: scale to 8 bits (a plain convert would clip everything above 255 to white).
        return image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    if mode in ("L", "RGB") and image.has_transparency_data or mode in ("P", "PA", "RGBa"):
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    if mode == "La":
        return image.convert("LA")
    if mode == "1":
        return image.convert("L")
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    return image.convert("RGB")


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """RGB or RGBA in sRGB. The alpha channel is set aside so the colour transform sees colour only."""
    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA") else None
    if alpha is not None and alpha.getextrema() == (255, 255):
        alpha = None  # an opaque alpha channel only costs bytes
    colour = image.convert({"LA": "L", "RGBA": "RGB"}.get(image.mode, image.mode))
    rgb: Image.Image | None = None
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            if "srgb" not in (ImageCms.getProfileDescription(source) or "").lower():
                rgb = ImageCms.profileToProfile(colour, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # A broken or mismatched profile (e.g. an RGB profile on a CMYK image): plain conversion.
            log.info("ICC profile not applied", exc_info=True)
    if rgb is None:
        rgb = colour.convert("RGB")
    if alpha is not None:
        rgb.putalpha(alpha)
    rgb.info = {}  # nothing of the original's metadata (EXIF, XMP, ICC) may reach a variant
    return rgb


def variant_widths(display_width: int, policy: ImagePolicy) -> list[int]:
    """The widths to produce, widest first: the policy's widths, never upscaled (a narrow original
    contributes its own width instead of the widths above it)."""
    return sorted({min(width, display_width) for width in policy.widths}, reverse=True)


def _flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if image.mode != "RGBA":
        return image
    flat = Image.new("RGB", image.size, background)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _encode(image: Image.Image, encoding: Encoding) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, encoding.pillow_format, **encoding.options)
    return buffer.getvalue()


def _blurhash(image: Image.Image) -> str:
    """4x3 components (3x4 for portrait) from a 32 px thumbnail. Calls the C encoder of
    blurhash-python directly: its ``encode()`` copies pixels with an API Pillow 14 removes."""
    thumb = image.copy()
    thumb.thumbnail((32, 32), Image.Resampling.BILINEAR)
    x_components, y_components = (4, 3) if thumb.width >= thumb.height else (3, 4)
    pixels = _blurhash_ffi.new("uint8_t[]", thumb.tobytes())
    destination = _blurhash_ffi.new("char[]", 2 + 4 + (9 * 9 - 1) * 2 + 1)
    result = _blurhash_lib.create_hash_from_pixels(
        x_components, y_components, thumb.width, thumb.height, pixels, thumb.width * 3, destination
    )
    return str(_blurhash_ffi.string(result).decode("ascii"))


def _dominant_color(image: Image.Image) -> str:
    """The most common colour of a 64 px thumbnail reduced to 8 colours (median cut): the colour a
    placeholder should have, not the average (which is often a muddy grey)."""
    thumb = image.copy()
    thumb.thumbnail((64, 64), Image.Resampling.BILINEAR)
    palette_image = thumb.quantize(colors=8, method=Image.Quantize.MEDIANCUT)
    counts = palette_image.getcolors() or [(1, 0)]
    index = max(counts, key=lambda item: item[0])[1]
    palette = palette_image.getpalette() or [0, 0, 0]
    red, green, blue = palette[index * 3 : index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def process(data: bytes, policy: ImagePolicy = DEFAULT_POLICY) -> ProcessedImage:
    """Variants and metadata for the upload ``data``; ImageRejected when it can never succeed."""
    if len(data) > policy.max_bytes:
        raise ImageRejected(f"the file is larger than {policy.max_bytes // (1024 * 1024)} MB")
    kind = sniff(data[:64])
    with _decoder_errors_are_rejections():
        source = Image.open(io.BytesIO(data), formats=[ACCEPTED_TYPES[kind][0]])
    with source:
        with _decoder_errors_are_rejections():
            frames = _check_budgets(source, policy)
        exif, exif_ifd = _read_exif(source)
        orientation = int(exif.get(_ORIENTATION, 1)) if exif is not None else 1
        transpose = _TRANSPOSE.get(orientation)
        turned = transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE) or orientation in (6, 8)
        stored_w, stored_h = source.size
        display_w, display_h = (stored_h, stored_w) if turned else (stored_w, stored_h)
        widths = variant_widths(display_w, policy)
        # The largest variant's size in the file's own orientation (it is turned after resizing).
        scale = widths[0] / display_w
        largest = (max(1, round(stored_w * scale)), max(1, round(stored_h * scale)))
        with _decoder_errors_are_rejections():
            if kind == "jpeg":
                source.draft(None, largest)
            if frames > 1:
                source.seek(0)
            source.load()
            icc_profile = source.info.get("icc_profile")
            image = _plain_mode(source)
    if image.size != largest:
        image = image.resize(largest, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if transpose is not None:
        image = image.transpose(transpose)
    image = _to_srgb(image, icc_profile if isinstance(icc_profile, bytes) else None)
    has_alpha = image.mode == "RGBA"

    variants: list[Variant] = []
    for width in widths:
        height = max(1, round(display_h * width / display_w))
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
        flat = _flatten(image, policy.background)
        for encoding in policy.encodings:
            variants.append(Variant(width, height, encoding, _encode(flat if encoding.name == "jpeg" else image, encoding)))
    placeholder = _flatten(image, policy.background)  # the smallest variant
    return ProcessedImage(
        format=kind,
        width=display_w,
        height=display_h,
        frames=frames,
        has_alpha=has_alpha,
        variants=tuple(variants),
        blurhash=_blurhash(placeholder),
        dominant_color=_dominant_color(placeholder),
        camera=_camera(exif),
        lens=_lens(exif_ifd),
        captured_at=_capture_time(exif_ifd),
    )


def megapixels(width: int, height: int) -> float:
    return math.floor(width * height / 100_000) / 10
