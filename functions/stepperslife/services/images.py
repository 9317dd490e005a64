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

Pillow and blurhash are imported on first use: the API imports this module for its policy and types
only, and should not pay about 90 ms of cold start for a decoder it never runs.

Encoder settings: every format of a picture aims at the same quality, SSIM 0.98 on luma
(``image_quality``: 8x8 windows at two grid offsets) against the pixels it encodes (about 0.975 against
a careful reference from the full decode: the resampling's own loss), and each reaches it by its own
quality: a short search per format on the 1280 px variant (``image_quality.search_quality``:
at most three encodes of that variant, about a quarter of the pipeline's time), whose quality then
serves every width of that format. Fixed qualities cannot do it: on real photos the JPEG quality that
reaches SSIM 0.975 (careful reference) runs from 43 to above 95, so one setting both bloats easy
pictures and smears hard ones, and the formats of one picture land at different fidelity. Each
search starts at the quality that reaches the target on a typical photo of the corpus and stays
inside a range that keeps chroma and flat areas clean (SSIM is on luma only) and bytes bounded.

- AVIF speed 9, aom tuned for SSIM (``tune=ssim``: about 10% fewer bytes at the same SSIM than its
  default PSNR tuning, at no cost in time). On the real 12 MP photo speed 9 needs 2% more bytes than
  speed 8 for the same SSIM and encodes 3x faster; the time saved pays for the search. Quality 35-85.
- WebP method 3: the same bytes as the default method 4 here, a little faster. Quality 50-92 (above,
  the bytes grow far faster than the SSIM).
- JPEG progressive (renders coarse-to-fine while loading; libjpeg then optimizes the Huffman tables
  too): about 15% smaller than baseline for ~30 ms. Quality 40-92. Alpha is flattened onto white.
``python -m benchmarks.images`` measures each format's bytes and SSIM against a careful reference and
the AVIF and WebP bytes against a JPEG of the same SSIM, on a real photo and a corpus.

Resampling: BICUBIC for variants wider than 640 px, LANCZOS for the smaller ones. Against a
reference made from the fully decoded original in one LANCZOS step, this chain is as close or closer
at every width than LANCZOS throughout (PSNR 48.8/51.6/53.7/54.2 dB vs 48.6/51.3/53.3/54.1 at
1920/1280/640/320 px) and about 20% cheaper; BICUBIC throughout softens the small ones (48 dB at 320).
Pillow's ``reducing_gap`` box-reduces first when the factor is large (sources without draft mode).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import string
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import TYPE_CHECKING, Any

from functions.stepperslife.services import image_quality
from shared import media

if TYPE_CHECKING:
    from PIL import Image, ImageCms

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
    format: media.VariantFormat  # what the edge serves (name, content type, the key's extension)
    pillow_format: str
    options: dict[str, Any]  # "quality" is where the search starts, or the quality when nothing is searched
    quality_range: tuple[int, int] = (1, 100)

    @property
    def name(self) -> str:
        return self.format.name

    @property
    def content_type(self) -> str:
        return self.format.media_type

    @property
    def extension(self) -> str:
        return self.format.extension


ENCODINGS: tuple[Encoding, ...] = (
    Encoding(media.AVIF, "AVIF", {"quality": 60, "speed": 9, "advanced": {"tune": "ssim"}}, (35, 85)),
    Encoding(media.WEBP, "WEBP", {"quality": 78, "method": 3}, (50, 92)),
    Encoding(media.JPEG, "JPEG", {"quality": 62, "progressive": True}, (40, 92)),
)


@dataclass(frozen=True)
class ImagePolicy:
    widths: tuple[int, ...] = media.VARIANT_WIDTHS
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    # Only the first frame is decoded; the cap bounds the work of counting frames in the header.
    max_frames: int = 1000
    # WebP cannot encode a side longer than 16383 px; longer strips are not pictures anyway.
    max_side: int = 16_383
    background: tuple[int, int, int] = (255, 255, 255)
    encodings: tuple[Encoding, ...] = ENCODINGS
    # Every format's quality is searched for this SSIM on the variant nearest ``quality_width`` (not
    # wider); None: each encoding's own quality, as given.
    target_ssim: float | None = 0.98
    quality_width: int = 1280


DEFAULT_POLICY = ImagePolicy()


@dataclass(frozen=True)
class Variant:
    url_width: int  # the policy width it stands for: the {width} of /img/{event_id}/{image_id}/{width}
    width: int  # its pixels: url_width, or the original's width when that is smaller
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
    from PIL import Image

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

# EXIF tag numbers (PIL.ExifTags.Base names them; numbers keep Pillow out of import time).
_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_MAKE, _MODEL = 0x010F, 0x0110
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434
_DATE_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
_DATE_TIME_DIGITIZED, _OFFSET_TIME_DIGITIZED = 0x9004, 0x9012
# EXIF orientation → the PIL.Image.Transpose that shows the picture upright.
_TRANSPOSE: dict[int, str] = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")


def _read_exif(image: Image.Image) -> tuple[Image.Exif | None, dict[int, Any]]:
    """IFD0 and the Exif IFD. A broken EXIF block loses the metadata, not the picture."""
    try:
        exif = image.getexif()
        return exif, dict(exif.get_ifd(_EXIF_IFD))
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
        (_DATE_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL),
        (_DATE_TIME_DIGITIZED, _OFFSET_TIME_DIGITIZED),
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
    make = _text(exif.get(_MAKE))
    model = _text(exif.get(_MODEL))
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model  # "Canon" + "Canon EOS R5" reads better as the model alone
    return " ".join(part for part in (make, model) if part) or None


def _lens(exif_ifd: dict[int, Any]) -> str | None:
    make = _text(exif_ifd.get(_LENS_MAKE))
    model = _text(exif_ifd.get(_LENS_MODEL))
    if make and model and model.lower().startswith(make.lower()):
        return model
    return " ".join(part for part in (make, model) if part) or None


# --- 4. pixels -----------------------------------------------------------------------------------


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _plain_mode(image: Image.Image) -> Image.Image:
    """An 8-bit mode that resizes well: L, LA, RGB, RGBA or CMYK (alpha kept when there is some)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples: scale to 8 bits (a plain convert would clip everything above 255 to white).
        return image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    if (mode in ("L", "RGB") and image.has_transparency_data) or mode in ("P", "PA", "RGBa"):
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
    from PIL import ImageCms

    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA") else None
    if alpha is not None and alpha.getextrema() == (255, 255):
        alpha = None  # an opaque alpha channel only costs bytes
    colour = image.convert({"LA": "L", "RGBA": "RGB"}.get(image.mode, image.mode))
    rgb: Image.Image | None = None
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            if "srgb" not in (ImageCms.getProfileDescription(source) or "").lower():
                rgb = ImageCms.profileToProfile(colour, source, _srgb(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # A broken or mismatched profile (e.g. an RGB profile on a CMYK image): plain conversion.
            log.info("ICC profile not applied", exc_info=True)
    if rgb is None:
        rgb = colour.convert("RGB")
    if alpha is not None:
        rgb.putalpha(alpha)
    rgb.info = {}  # nothing of the original's metadata (EXIF, XMP, ICC) may reach a variant
    return rgb


def variant_sizes(display_width: int, policy: ImagePolicy) -> list[tuple[int, int]]:
    """(URL width, pixel width) of each variant to make, widest first. Never upscaled: the first
    policy width at least as wide as the original holds the original's own width, and the policy
    widths above it are not made (pages build srcset from the variants an entry lists)."""
    sizes = []
    for url_width in sorted(policy.widths):
        sizes.append((url_width, min(url_width, display_width)))
        if url_width >= display_width:
            break
    return sizes[::-1]


def _flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    from PIL import Image

    if image.mode != "RGBA":
        return image
    flat = Image.new("RGB", image.size, background)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _encode(image: Image.Image, encoding: Encoding, quality: int | None = None) -> bytes:
    options = encoding.options if quality is None else {**encoding.options, "quality": quality}
    buffer = io.BytesIO()
    image.save(buffer, encoding.pillow_format, **options)
    return buffer.getvalue()


def _qualities(
    scaled: list[tuple[int, Image.Image, Image.Image]], policy: ImagePolicy
) -> tuple[int, dict[str, image_quality.Chosen]]:
    """The url width the search ran on, and each encoding's chosen quality (none without a target)."""
    if policy.target_ssim is None:
        return 0, {}
    target = policy.target_ssim
    url_width, image, flat = next((entry for entry in scaled if entry[0] <= policy.quality_width), scaled[-1])
    if min(flat.size) < image_quality.MIN_SIDE:  # too few windows to measure: the starting qualities
        return 0, {}
    reference = image_quality.LumaSsim(flat)

    def score(data: bytes) -> float:
        candidate = image_quality.decoded(data)
        return reference.score(_flatten(candidate, policy.background) if candidate.mode == "RGBA" else candidate)

    chosen = {}
    for encoding in policy.encodings:
        lowest, highest = encoding.quality_range
        chosen[encoding.name] = image_quality.search_quality(
            functools.partial(_encode, flat if encoding.name == "jpeg" else image, encoding),
            score,
            start=int(encoding.options["quality"]),
            lowest=lowest,
            highest=highest,
            target=target,
        )
    return url_width, chosen


def _blurhash(image: Image.Image) -> str:
    """4x3 components (3x4 for portrait) from a 32 px thumbnail, by fast-blurhash (the Rust
    ``blurhash`` crate; one abi3 wheel for every CPython, where blurhash-python has no cp313 one).
    Raw RGB bytes rather than the image: its Pillow path only accepts decoded files."""
    import fast_blurhash
    from PIL import Image

    thumb = image.copy()
    thumb.thumbnail((32, 32), Image.Resampling.BILINEAR)
    x_components, y_components = (4, 3) if thumb.width >= thumb.height else (3, 4)
    return fast_blurhash.encode(
        thumb.convert("RGB").tobytes(), x_components, y_components, width=thumb.width, height=thumb.height
    )


def _dominant_color(image: Image.Image) -> str:
    """The most common colour of a 64 px thumbnail reduced to 8 colours (median cut): the colour a
    placeholder should have, not the average (which is often a muddy grey)."""
    from PIL import Image

    thumb = image.copy()
    thumb.thumbnail((64, 64), Image.Resampling.BILINEAR)
    palette_image = thumb.quantize(colors=8, method=Image.Quantize.MEDIANCUT)
    histogram = palette_image.histogram()
    index = max(range(len(histogram)), key=histogram.__getitem__)
    palette = palette_image.getpalette() or [0, 0, 0]
    red, green, blue = palette[index * 3 : index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def _filter(width: int) -> Image.Resampling:
    from PIL import Image

    return Image.Resampling.BICUBIC if width > 640 else Image.Resampling.LANCZOS


def _orientation(exif: Image.Exif | None) -> int:
    try:
        value = int(exif.get(_ORIENTATION, 1)) if exif is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if value in _TRANSPOSE else 1


def process(data: bytes, policy: ImagePolicy = DEFAULT_POLICY) -> ProcessedImage:
    """Variants and metadata for the upload ``data``; ImageRejected when it can never succeed."""
    from PIL import Image

    if len(data) > policy.max_bytes:
        raise ImageRejected(f"the file is larger than {policy.max_bytes // (1024 * 1024)} MB")
    kind = sniff(data[:64])
    with _decoder_errors_are_rejections():
        source = Image.open(io.BytesIO(data), formats=[ACCEPTED_TYPES[kind][0]])
    with source:
        with _decoder_errors_are_rejections():
            frames = _check_budgets(source, policy)
        exif, exif_ifd = _read_exif(source)
        orientation = _orientation(exif)
        stored_w, stored_h = source.size
        # Orientations 5 to 8 turn the picture by a quarter: the displayed width is the stored height.
        display_w, display_h = (stored_h, stored_w) if orientation >= 5 else (stored_w, stored_h)
        sizes = variant_sizes(display_w, policy)
        # The largest variant's size in the file's own orientation (it is turned after resizing).
        scale = sizes[0][1] / display_w
        largest = (max(1, round(stored_w * scale)), max(1, round(stored_h * scale)))
        with _decoder_errors_are_rejections():
            if kind == "jpeg":
                source.draft(None, largest)
            source.load()  # the first frame: Image.open leaves an animation there
            icc_profile = source.info.get("icc_profile")
            image = _plain_mode(source)
        # Leave the ``with`` holding a new image: closing the source destroys its pixels.
        if image.size != largest:
            image = image.resize(largest, _filter(sizes[0][1]), reducing_gap=3.0)
        elif image is source:
            image = source.copy()
    if orientation in _TRANSPOSE:
        image = image.transpose(Image.Transpose[_TRANSPOSE[orientation]])
    image = _to_srgb(image, icc_profile if isinstance(icc_profile, bytes) else None)
    has_alpha = image.mode == "RGBA"

    scaled: list[tuple[int, Image.Image, Image.Image]] = []  # (url width, pixels, pixels on the background)
    for url_width, width in sizes:
        height = max(1, round(display_h * width / display_w))
        if image.size != (width, height):
            image = image.resize((width, height), _filter(width), reducing_gap=3.0)
        scaled.append((url_width, image, _flatten(image, policy.background)))
    searched_width, chosen = _qualities(scaled, policy)
    variants: list[Variant] = []
    for url_width, pixels, flat in scaled:
        for encoding in policy.encodings:
            choice = chosen.get(encoding.name)
            if choice is not None and choice.data is not None and url_width == searched_width:
                data = choice.data  # the search's own encoding of this very variant
            else:
                quality = None if choice is None else choice.quality
                data = _encode(flat if encoding.name == "jpeg" else pixels, encoding, quality)
            variants.append(Variant(url_width, pixels.width, pixels.height, encoding, data))
    placeholder = scaled[-1][2]  # from the smallest variant
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
