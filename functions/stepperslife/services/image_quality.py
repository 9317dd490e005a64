"""SSIM on luma, the quality measure the image pipeline encodes to, and the search for each format's
quality that reaches a target SSIM on one picture.

SSIM (Wang, Bovik, Sheikh and Simoncelli 2004) on luma (ITU-R 601 Y, Pillow's ``L``): the mean of the
SSIM of 8x8 windows, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, averaged over two window grids (offsets
0 and 4) so that 8x8 codec blocks cannot hide their edges between windows. Pillow only, no numpy (the
Lambda package stays small): window statistics are exact BOX reductions of float (``F``) images. The
reference's own statistics are computed once (``LumaSsim``), each candidate then costs one decode and
about half the arithmetic.

Why a search rather than fixed qualities: how many bits a photo needs for a given fidelity varies by
more than any fixed setting can follow (on the real photos of ``benchmarks/photo_corpus.py`` a JPEG
needs quality 43 to above 95 for SSIM 0.975), so fixed settings land the formats of one picture at
visibly different qualities and waste bytes on easy pictures. The search is a secant on quality: one
probe at the calibrated starting quality, a second a step towards the target when the first misses
it, then the quality the line through both reaches the target at (SSIM rises smoothly and
monotonically with quality). At most three encodes of the one variant it runs on, at 1280 px.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

WINDOW = 8
MIN_SIDE = 4 * WINDOW  # a picture narrower has too few windows for the score to mean much
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
# Close enough: well under the spread a viewer could tell (the formats' SSIM differ by less than this
# twice over).
TOLERANCE = 0.001
STEP = 8  # the second probe's distance from the first, in quality points


@dataclass(frozen=True)
class _Grid:
    box: tuple[int, int, int, int]
    size: tuple[int, int]
    x: Image.Image  # the reference's luma, as floats, cropped to whole windows
    mx: Image.Image  # per window: mean
    xx: Image.Image  # per window: mean of squares


class LumaSsim:
    """SSIM against one reference picture, whose statistics are computed once."""

    def __init__(self, reference: Image.Image) -> None:
        from PIL import ImageMath

        self.size = reference.size
        luma = _luma(reference)
        self._grids = []
        for offset in (0, WINDOW // 2):
            columns, rows = (luma.width - offset) // WINDOW, (luma.height - offset) // WINDOW
            box = (offset, offset, offset + columns * WINDOW, offset + rows * WINDOW)
            x = luma.crop(box)
            squares = ImageMath.lambda_eval(lambda v: v["a"] * v["a"], a=x)
            size = (columns, rows)
            self._grids.append(_Grid(box, size, x, _mean(x, size), _mean(squares, size)))

    def score(self, candidate: Image.Image) -> float:
        from PIL import ImageMath

        if candidate.size != self.size:
            raise ValueError(f"sizes differ: {self.size} and {candidate.size}")
        luma = _luma(candidate)
        scores = []
        for grid in self._grids:
            y = luma.crop(grid.box)
            my = _mean(y, grid.size)
            yy = _mean(ImageMath.lambda_eval(lambda v: v["a"] * v["a"], a=y), grid.size)
            xy = _mean(ImageMath.lambda_eval(lambda v: v["a"] * v["b"], a=grid.x, b=y), grid.size)
            index = ImageMath.lambda_eval(
                lambda v: (
                    (v["mx"] * v["my"] * 2 + _C1)
                    * ((v["xy"] - v["mx"] * v["my"]) * 2 + _C2)
                    / (
                        (v["mx"] * v["mx"] + v["my"] * v["my"] + _C1)
                        * (v["xx"] - v["mx"] * v["mx"] + v["yy"] - v["my"] * v["my"] + _C2)
                    )
                ),
                mx=grid.mx,
                my=my,
                xx=grid.xx,
                yy=yy,
                xy=xy,
            )
            scores.append(float(_mean(index, (1, 1)).getpixel((0, 0))))  # type: ignore[arg-type]
        return sum(scores) / len(scores)


def ssim(reference: Image.Image, candidate: Image.Image) -> float:
    return LumaSsim(reference).score(candidate)


def _luma(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("F")


def _mean(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    from PIL import Image

    return image.resize(size, Image.Resampling.BOX)


def decoded(data: bytes) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


@dataclass(frozen=True)
class Chosen:
    quality: int
    data: bytes | None  # the encoding at that quality when the search made it, else None
    ssim: float | None  # measured, or None when the quality is the secant's estimate


def search_quality(
    encode: Callable[[int], bytes],
    score: Callable[[bytes], float],
    *,
    start: int,
    lowest: int,
    highest: int,
    target: float,
) -> Chosen:
    """The quality in [lowest, highest] at which ``score(encode(quality))`` comes closest to
    ``target``, found in at most two measured probes (see the module's docstring)."""
    first = encode(start)
    first_score = score(first)
    if abs(first_score - target) <= TOLERANCE:
        return Chosen(start, first, first_score)
    towards = STEP if first_score < target else -STEP
    second_quality = min(highest, max(lowest, start + towards))
    if second_quality == start:  # already at the end of the range, on the side of the miss
        return Chosen(start, first, first_score)
    second = encode(second_quality)
    second_score = score(second)
    if abs(second_score - target) <= TOLERANCE:
        return Chosen(second_quality, second, second_score)
    slope = (second_score - first_score) / (second_quality - start)
    if slope <= 0:  # flat or noisy here: the probe that came closer
        if abs(second_score - target) < abs(first_score - target):
            return Chosen(second_quality, second, second_score)
        return Chosen(start, first, first_score)
    quality = min(highest, max(lowest, round(start + (target - first_score) / slope)))
    if quality == start:
        return Chosen(start, first, first_score)
    if quality == second_quality:
        return Chosen(second_quality, second, second_score)
    return Chosen(quality, None, None)
