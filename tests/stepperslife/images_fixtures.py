"""Images the image tests make for themselves (small, so the suite stays fast), and an in-memory
object store that can be told to fail like a Lambda dying half-way."""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from functions.platform.ports import ObjectNotFound, ObjectTooLarge, PresignedPost

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 40), (20, 40, 220)


def photo_like(width: int, height: int, seed: int = 1) -> Image.Image:
    """Gradients, shapes and noise: compresses like a photo, unlike a flat test card."""
    rnd = random.Random(seed)
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.linear_gradient("L").rotate(90).resize((width, height))
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rnd.randrange(width), rnd.randrange(height)
        size = rnd.randrange(max(2, width // 20), max(3, width // 4))
        colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        shape = draw.ellipse if rnd.random() < 0.5 else draw.rectangle
        shape((x, y, x + size, y + int(size * rnd.uniform(0.3, 1.5))), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.blend(image, noise, 0.12)


def natural_photo(width: int, height: int, seed: int = 1) -> Image.Image:
    """``photo_like`` with fine detail where photos have it: a 1/f texture (noise octaves, the coarse
    ones strongest, as in natural images) over about half the frame, in blobs (foliage, fabric, a
    crowd), the rest left smooth (sky, walls, bokeh). Encoders differ most on such detail; a smooth
    picture flatters every format alike. Still synthetic: no real photo corpus is on this machine."""
    rnd = random.Random(seed)
    base = photo_like(width, height, seed)
    texture = Image.new("L", (width, height), 128)
    for octave in range(1, 8):
        size = (max(2, width >> octave), max(2, height >> octave))
        noise = _seeded_noise(size, 60, rnd).resize((width, height), Image.Resampling.BICUBIC)
        texture = Image.blend(texture, noise, 0.35)
    textured = ImageChops.overlay(base, Image.merge("RGB", (texture, texture, texture)))
    blobs = _seeded_noise((8, 6), 80, rnd).resize((width, height), Image.Resampling.BICUBIC)
    mask = blobs.point(lambda value: 255 if value > 128 else 0).filter(ImageFilter.GaussianBlur(width / 200))
    return Image.composite(textured, base, mask)


def _seeded_noise(size: tuple[int, int], spread: float, rnd: random.Random) -> Image.Image:
    """Uniform noise around 128 with standard deviation ``spread`` (``Image.effect_noise`` cannot be
    seeded, and the same picture in every run keeps the benchmark's figures comparable)."""
    uniform = Image.frombytes("L", size, rnd.randbytes(size[0] * size[1]))  # standard deviation 73.9
    return uniform.point(lambda value: round(128 + (value - 127.5) * spread / 73.9))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


def camera_jpeg(size: tuple[int, int] = (700, 480), orientation: int = 6) -> bytes:
    """A JPEG as a phone writes it: stored sideways with an orientation tag, camera, lens, capture
    time, GPS position and an XMP packet. A red block marks the stored top-left corner."""
    image = photo_like(*size)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 5, size[1] // 5), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = "2026:05:01 20:15:30"
    exif_ifd[0x9011] = "-05:00"
    exif_ifd[0xA434] = "RF24-70mm F2.8 L IS USM"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (41.0, 52.0, 55.5)
    gps[3] = "W"
    gps[4] = (87.0, 37.0, 40.2)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>41,52.925N</exif:GPSLatitude></x:xmpmeta>'
    return encode(image, "JPEG", quality=90, exif=exif.tobytes(), xmp=xmp)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def png_rgb16(width: int, height: int, rgb16: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one, so it is assembled by hand)."""
    row = b"\x00" + struct.pack(">HHH", *rgb16) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(row * height))
        + png_chunk(b"IEND", b"")
    )


def animated(fmt: str, colours: list[tuple[int, int, int]], size: tuple[int, int] = (48, 32)) -> bytes:
    frames = [solid(colour, size) for colour in colours]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + _s15(x) + _s15(y) + _s15(z)


def swapped_primaries_icc() -> bytes:
    """An RGB display profile whose red and blue primaries are swapped: a pixel stored as pure red
    means blue. Only a real ICC conversion to sRGB shows it blue."""
    description = b"Swapped primaries (test)\x00"
    desc = b"desc\x00\x00\x00\x00" + struct.pack(">I", len(description)) + description + b"\x00" * (4 + 4 + 2 + 1 + 67)
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0233) + b"\x00\x00"  # gamma 2.2
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz_tag(0.1431, 0.0606, 0.7141)),  # sRGB's blue primary (D50)
        (b"gXYZ", _xyz_tag(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz_tag(0.4361, 0.2225, 0.0139)),  # sRGB's red primary (D50)
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, payload in tags:
        padded = payload + b"\x00" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(padded))
        data += padded
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\x00" * 12
        + b"acsp"
        + b"\x00" * 24
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\x00" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str


@dataclass
class MemoryStore:
    """The ObjectStore port in memory. ``crash_after_puts`` makes a put fail after that many, like a
    Lambda killed half-way through writing variants; a key in ``unreachable`` fails every operation."""

    objects: dict[str, StoredObject] = field(default_factory=dict)
    puts: int = 0
    crash_after_puts: int | None = None
    unreachable: set[str] = field(default_factory=set)

    def _reach(self, *keys: str) -> None:
        if self.unreachable.intersection(keys):
            raise ConnectionError("simulated S3 failure")

    def get(self, key: str, *, max_bytes: int) -> bytes:
        self._reach(key)
        if key not in self.objects:
            raise ObjectNotFound(key)
        data = self.objects[key].data
        if len(data) > max_bytes:
            raise ObjectTooLarge(key)
        return data

    def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        if self.crash_after_puts is not None and self.puts >= self.crash_after_puts:
            raise ConnectionError("simulated crash while writing variants")
        self._reach(key)
        self.puts += 1
        self.objects[key] = StoredObject(data, content_type, cache_control)

    def copy(self, source_key: str, destination_key: str) -> None:
        self._reach(source_key, destination_key)
        if source_key not in self.objects:
            raise ObjectNotFound(source_key)
        self.objects[destination_key] = self.objects[source_key]

    def delete(self, key: str) -> None:
        self._reach(key)
        self.objects.pop(key, None)

    def presigned_post(self, key: str, *, content_type: str, max_bytes: int, expires_in_seconds: int) -> PresignedPost:
        return PresignedPost(url="https://uploads.example/", fields={"key": key, "Content-Type": content_type})

    def upload(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """What the browser's POST does."""
        self.objects[key] = StoredObject(data, content_type, "")
