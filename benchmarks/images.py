"""The image pipeline on 12 MP and 24 MP photo-like JPEGs: wall time and peak RSS of the full variant
set (4 widths x AVIF/WebP/JPEG), against a naive Pillow baseline in the same run (full decode,
LANCZOS from the full image per variant, default encoder settings), and against libvips (pyvips'
thumbnail, shrink-on-load) when pyvips is installed (`pip install -e '.[bench]'`); then quality per
byte at 1280 px: each format's bytes and SSIM against a reference made from the fully decoded
original in one LANCZOS step, and the AVIF's and WebP's bytes against a JPEG of the same SSIM (the
pipeline's JPEG settings at a sweep of fixed qualities, interpolated). Our variants' qualities are
searched per picture (``functions/stepperslife/services/image_quality.py``: SSIM 0.98 against the
pixels each encoder is given, ~0.975 against this careful reference); the search's time is in ours.

The pictures: a real 12 MP camera photo and a corpus of eleven more real photographs, taken from
Debian's wallpaper packages (``benchmarks/photo_corpus.py``; fetched once from the package registry);
and synthetic ones (``tests/stepperslife/images_fixtures.natural_photo``: gradients, shapes, sensor
noise and a 1/f texture over about half the frame; ``photo_like`` without the texture for the smooth
case), which make the 24 MP case and stand in when the corpus cannot be had. The quality targets are
judged on the real 12 MP photo; the corpus's medians show how far that one photo speaks for others.

Each measurement runs in a fresh interpreter, warmed up on a tiny picture first, then processes the
picture twice: the time is the second run's (a warm Lambda handling one upload after another; the
first run's time is reported too), taken around the processing only (no interpreter start, imports
or file read). Peak RSS is VmHWM from /proc/self/status at the end (what counts against a Lambda's
memory; wait4's ru_maxrss would also count the parent's RSS at fork).

Each child is pinned to one CPU: at the recommended 1769 MB a Lambda has one vCPU, and a second core
would mostly help the baseline (libaom's threads at its slow AVIF speed). --all-cores lifts the pin.

Usage: .venv/bin/python -m benchmarks.images [--runs 3] [--all-cores]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.photo_corpus import photo_corpus

WIDTHS = (320, 640, 1280, 1920)
# Lambda gives a function one full vCPU at 1769 MB and a proportional share below that, so for
# single-threaded work any size up to 1769 MB costs the same GB-seconds: only latency changes.
ONE_VCPU_MB = 1769


# --- children: one measurement each ------------------------------------------------------------


def _ours(data: bytes) -> tuple[int, int]:
    from functions.stepperslife.services import images

    result = images.process(data)
    return len(result.variants), sum(len(variant.data) for variant in result.variants)


def _naive(data: bytes) -> tuple[int, int]:
    from PIL import Image, ImageOps

    source = Image.open(io.BytesIO(data))
    source.load()
    image = ImageOps.exif_transpose(source).convert("RGB")
    count, size = 0, 0
    for width in WIDTHS:
        variant = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        for fmt in ("AVIF", "WEBP", "JPEG"):
            buffer = io.BytesIO()
            variant.save(buffer, fmt)
            count, size = count + 1, size + buffer.tell()
    return count, size


def _vips(data: bytes) -> tuple[int, int]:
    pyvips: Any = importlib.import_module("pyvips")
    count, size = 0, 0
    for width in WIDTHS:
        # Decoded once per width (shrink-on-load), kept in memory for the three encoders.
        thumb = pyvips.Image.thumbnail_buffer(data, width, size="down").copy_memory()
        # Our search's starting qualities, fixed (libvips has no quality search and cannot set aom's
        # tune): AVIF effort 0 ~ aom speed 9, WebP effort 3 = method 3.
        for suffix, options in (
            (".avif", {"Q": 60, "effort": 0}),
            (".webp", {"Q": 78, "effort": 3}),
            (".jpg", {"Q": 62, "interlace": True, "optimize_coding": True}),
        ):
            size += len(thumb.write_to_buffer(suffix, **options))
            count += 1
    return count, size


def _baseline(data: bytes) -> tuple[int, int]:
    from functions.stepperslife.services import images

    images.sniff(data[:64])  # imports and the file in memory, no pixels: the floor of every child
    return 0, 0


CHILDREN = {"ours": _ours, "naive": _naive, "vips": _vips, "baseline": _baseline}


def child(mode: str, path: str, one_core: bool) -> None:
    if one_core:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    # As in a warm Lambda: imports, codec libraries and first-call set-up happen before the clock
    # starts, through one run on a tiny picture (too small to leave anything useful in a cache).
    from PIL import Image

    Image.init()
    CHILDREN[mode](_tiny_jpeg())
    data = Path(path).read_bytes()
    # Twice: the first run also pays for the process's first large allocations (page faults); the
    # second is the steady state of a Lambda that handles one upload after another.
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        count, size = CHILDREN[mode](data)
        timings.append(time.perf_counter() - started)
    result = {"seconds": timings[1], "first_seconds": timings[0], "variants": count, "bytes": size}
    print(json.dumps({**result, "rss_mib": peak_rss_mib()}))


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


# --- the parent ------------------------------------------------------------------------------------


def measure(mode: str, path: Path, one_core: bool = True) -> dict[str, Any]:
    """One fresh interpreter: the child's time, variant count and its own peak RSS in MiB."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.images", "--child", mode, str(path), *([] if one_core else ["--all-cores"])],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def make_budget_png(directory: Path) -> Path:
    """The memory worst case the budgets allow: 49 MP with alpha, a format without draft decoding.
    Flat shapes keep it under the 20 MB byte budget (a 49 MP photo as PNG would not fit)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (7000, 7000), (30, 60, 90, 255))
    draw = ImageDraw.Draw(image)
    for i in range(40):
        draw.ellipse((i * 150, i * 120, i * 150 + 1500, i * 120 + 900), fill=(i * 6, 200 - i * 4, 120, 128 + i * 3))
    path = directory / "budget-7000x7000.png"
    image.save(path, "PNG", compress_level=1)
    return path


def make_photo(width: int, height: int, directory: Path, *, smooth: bool = False) -> Path:
    from tests.stepperslife.images_fixtures import encode, natural_photo, photo_like

    kind = "smooth" if smooth else "photo"
    path = directory / f"{kind}-{width}x{height}.jpg"
    path.write_bytes(encode((photo_like if smooth else natural_photo)(width, height), "JPEG", quality=90))
    return path


# --- quality per byte --------------------------------------------------------------------------------

QUALITY_WIDTH = 1280
JPEG_SWEEP = (*range(30, 97, 4), 98, 100)  # JPEG qualities whose (SSIM, bytes) curve prices the other formats


def quality_per_byte(path: Path) -> dict[str, Any]:
    """Per format at ``QUALITY_WIDTH``: bytes and SSIM against a careful LANCZOS reference, and the
    bytes of AVIF and WebP over those of a JPEG of the same SSIM (None outside the sweep's range)."""
    from dataclasses import replace

    from PIL import Image

    from functions.stepperslife.services import images
    from functions.stepperslife.services.image_quality import ssim

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as original:
        size = (QUALITY_WIDTH, round(original.height * QUALITY_WIDTH / original.width))
        reference = original.convert("RGB").resize(size, Image.Resampling.LANCZOS)

    def measured(variant: images.Variant) -> tuple[float, int]:
        with Image.open(io.BytesIO(variant.data)) as decoded:
            return ssim(reference, decoded.convert("RGB")), len(variant.data)

    ours = {v.encoding.name: measured(v) for v in images.process(data).variants if v.url_width == QUALITY_WIDTH}
    [jpeg] = [encoding for encoding in images.ENCODINGS if encoding.name == "jpeg"]
    fixed = replace(images.DEFAULT_POLICY, widths=(QUALITY_WIDTH,), target_ssim=None)
    curve = sorted(
        measured(
            images.process(
                data, replace(fixed, encodings=(replace(jpeg, options={**jpeg.options, "quality": quality}),))
            ).variants[0]
        )
        for quality in JPEG_SWEEP
    )

    def jpeg_bytes_at(target: float) -> float | None:
        for (low_ssim, low_bytes), (high_ssim, high_bytes) in itertools.pairwise(curve):
            if low_ssim <= target <= high_ssim:
                share = (target - low_ssim) / (high_ssim - low_ssim) if high_ssim > low_ssim else 0.0
                return low_bytes + share * (high_bytes - low_bytes)
        return None

    figures: dict[str, Any] = {}
    for name, (score, size_bytes) in ours.items():
        figures[f"ssim_{name}"] = round(score, 4)
        figures[f"bytes_{name}"] = size_bytes
    for name in ("avif", "webp"):
        matched = jpeg_bytes_at(ours[name][0])
        figures[f"{name}_bytes_vs_jpeg"] = None if matched is None else round(ours[name][1] / matched, 3)
    scores = [score for score, _ in ours.values()]
    figures["ssim_spread"] = round(max(scores) - min(scores), 4)
    return figures


def corpus_quality(paths: list[Path]) -> dict[str, Any]:
    """Quality per byte over every photo of the corpus: each photo's line, and the medians."""
    print(f"  corpus of {len(paths)} real photos:")
    ratios: dict[str, list[float]] = {"avif": [], "webp": []}
    spreads = []
    for path in paths:
        quality = quality_per_byte(path)
        spreads.append(quality["ssim_spread"])
        for name, values in ratios.items():
            if quality[f"{name}_bytes_vs_jpeg"] is not None:
                values.append(quality[f"{name}_bytes_vs_jpeg"])
        scores = "/".join(f"{quality[f'ssim_{name}']:.4f}" for name in ("avif", "webp", "jpeg"))
        print(
            f"    {path.name}: SSIM AVIF/WebP/JPEG {scores}; AVIF {quality['avif_bytes_vs_jpeg']}x, "
            f"WebP {quality['webp_bytes_vs_jpeg']}x the JPEG at the same SSIM"
        )
    figures: dict[str, Any] = {
        "corpus_photos": len(paths),
        "corpus_ssim_spread_median": round(statistics.median(spreads), 4),
    }
    for name, values in ratios.items():
        if values:
            figures[f"corpus_{name}_bytes_vs_jpeg_median"] = round(statistics.median(values), 3)
            figures[f"corpus_{name}_bytes_vs_jpeg_min"] = min(values)
            figures[f"corpus_{name}_bytes_vs_jpeg_max"] = max(values)
            print(
                f"    {name}: median {statistics.median(values):.3f}x (min {min(values)}, max {max(values)}) over "
                f"the {len(values)} photos whose SSIM the JPEG sweep reaches"
            )
    return figures


def summary(values: list[float], unit: str, scale: float = 1.0) -> str:
    scaled = [value * scale for value in values]
    return (
        f"median {statistics.median(scaled):.0f} {unit} (min {min(scaled):.0f}, max {max(scaled):.0f}, n={len(scaled)})"
    )


def run_interleaved(modes: list[str], path: Path, runs: int, one_core: bool) -> dict[str, list[dict[str, Any]]]:
    """``runs`` rounds of every mode in turn, so that a change in the machine's load (it is shared)
    hits all modes alike rather than whichever ran last."""
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(runs):
        for mode in modes:
            results[mode].append(measure(mode, path, one_core))
    return results


def stats(results: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [result["seconds"] for result in results]
    first = [result["first_seconds"] for result in results]
    rss = [result["rss_mib"] for result in results]
    return {
        "seconds": statistics.median(seconds),
        "first_seconds": statistics.median(first),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "rss_mib": max(rss),
        "variants": results[0]["variants"],
        "bytes": results[0]["bytes"],
        "text": (
            f"{summary(seconds, 'ms', 1000)}, first run in the process {statistics.median(first) * 1000:.0f} ms; "
            f"peak RSS {summary(rss, 'MiB')}"
        ),
    }


def recommend_memory_mb(worst_rss_mib: float) -> int:
    """The worst measured peak plus 30% headroom, rounded up to 64 MB; at least one full vCPU, since
    below that the same single-threaded work costs the same GB-seconds and only runs slower."""
    floor_mb = math.ceil(worst_rss_mib * 1.3 * 1.048576 / 64) * 64  # MiB to MB
    return max(ONE_VCPU_MB, floor_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--all-cores", action="store_true", help="do not pin each measurement to one CPU")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path = args.child
        child(mode, path, one_core=not args.all_cores)
        return

    import PIL

    try:
        importlib.import_module("pyvips")
        have_vips = True
    except ImportError:
        have_vips = False
    one_core = not args.all_cores
    figures: dict[str, Any] = {
        "runs": args.runs,
        "pillow": PIL.__version__,
        "cpus_per_measurement": 1 if one_core else os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="agistack-images-") as scratch:
        corpus = photo_corpus()
        if isinstance(corpus, str):
            print(f"real photo corpus unavailable ({corpus}): synthetic pictures only")
        photos = {"12mp": make_photo(4000, 3000, Path(scratch)), "24mp": make_photo(6000, 4000, Path(scratch))}
        if not isinstance(corpus, str):
            photos["12mp_real"] = corpus[0]
        budget_png = make_budget_png(Path(scratch))
        baseline = measure("baseline", photos["12mp"], one_core)
        print(f"interpreter + imports + 12 MP file in memory: peak RSS {baseline['rss_mib']:.0f} MiB")
        figures["baseline_rss_mib"] = round(baseline["rss_mib"], 1)
        for name, path in photos.items():
            print(f"\n{name}: {path.name}, {path.stat().st_size / 1e6:.1f} MB")
            modes = ["ours", "naive", *(["vips"] if have_vips else [])]
            raw = run_interleaved(modes, path, args.runs, one_core)
            results = {mode: stats(runs) for mode, runs in raw.items()}
            for mode, result in results.items():
                per_variant = result["seconds"] / result["variants"] * 1000
                print(
                    f"  {mode:5} {result['variants']} variants, {result['bytes'] / 1024:.0f} KiB: "
                    f"{result['text']}; {per_variant:.0f} ms per variant"
                )
            ours, naive = results["ours"], results["naive"]
            speedup = naive["seconds"] / ours["seconds"]
            paired = [n["seconds"] / o["seconds"] for n, o in zip(raw["naive"], raw["ours"], strict=True)]
            print(
                f"  speedup over the naive baseline: {speedup:.1f}x "
                f"(per round: min {min(paired):.1f}x, max {max(paired):.1f}x)"
            )
            figures.update(
                {
                    "variants": ours["variants"],
                    f"ours_{name}_s": round(ours["seconds"], 3),
                    f"ours_{name}_s_min": round(ours["seconds_min"], 3),
                    f"ours_{name}_s_max": round(ours["seconds_max"], 3),
                    f"ours_{name}_first_run_s": round(ours["first_seconds"], 3),
                    f"naive_{name}_s": round(naive["seconds"], 3),
                    f"speedup_{name}": round(speedup, 2),
                    f"speedup_{name}_min": round(min(paired), 2),
                    f"speedup_{name}_max": round(max(paired), 2),
                    f"peak_rss_mib_{name}": round(ours["rss_mib"], 1),
                    f"naive_peak_rss_mib_{name}": round(naive["rss_mib"], 1),
                    f"ours_per_variant_ms_{name}": round(ours["seconds"] / ours["variants"] * 1000, 1),
                    f"variant_kib_{name}": round(ours["bytes"] / 1024),
                }
            )
            if have_vips:
                vips = results["vips"]
                figures[f"vips_{name}_s"] = round(vips["seconds"], 3)
                figures[f"vips_per_variant_ms_{name}"] = round(vips["seconds"] / vips["variants"] * 1000, 1)
                figures[f"vips_peak_rss_mib_{name}"] = round(vips["rss_mib"], 1)
        print(f"\nquality per byte at {QUALITY_WIDTH} px (SSIM on luma, 8x8 windows, against one LANCZOS step "
              "from the full decode)")  # fmt: skip
        smooth = make_photo(4000, 3000, Path(scratch), smooth=True)
        judged = [
            ("synthetic textured 12 MP", photos["12mp"], "synthetic_"),
            ("synthetic smooth 12 MP", smooth, "smooth_"),
        ]
        if not isinstance(corpus, str):
            judged.insert(0, ("real 12 MP photo", corpus[0], ""))
        for label, path, prefix in judged:
            quality = quality_per_byte(path)
            print(f"  {label}: " + "; ".join(
                f"{name} {quality[f'bytes_{name}'] / 1024:.0f} KiB SSIM {quality[f'ssim_{name}']:.4f}"
                for name in ("avif", "webp", "jpeg")
            ) + f"; at the JPEG's bytes for the same SSIM: AVIF {quality['avif_bytes_vs_jpeg']}x, "
                f"WebP {quality['webp_bytes_vs_jpeg']}x")  # fmt: skip
            figures.update({f"{prefix}{key}": value for key, value in quality.items()})
        if isinstance(corpus, str):
            figures.update(
                {
                    key.removeprefix("synthetic_"): value
                    for key, value in figures.items()
                    if key.startswith("synthetic_")
                }
            )
        else:
            figures.update(corpus_quality(corpus[1]))
        figures["judged_on"] = "synthetic" if isinstance(corpus, str) else "real 12 MP photo"
        figures["quality_width"] = QUALITY_WIDTH
        figures["quality_targets_met"] = (figures["avif_bytes_vs_jpeg"] or 9) <= 0.6 and (
            figures["webp_bytes_vs_jpeg"] or 9
        ) <= 0.9
        worst = stats(run_interleaved(["ours"], budget_png, 1, one_core)["ours"])
        print(f"\n49 MP RGBA PNG ({budget_png.stat().st_size / 1e6:.1f} MB, no draft decoding): {worst['text']}")
        figures["ours_49mp_png_s"] = round(worst["seconds"], 3)
        figures["peak_rss_mib_49mp_png"] = round(worst["rss_mib"], 1)
    memory_mb = recommend_memory_mb(max(figures["peak_rss_mib_24mp"], figures["peak_rss_mib_49mp_png"]))
    figures["recommended_lambda_memory_mb"] = memory_mb
    print(
        f"recommended Lambda memory for the image handler: {memory_mb} MB (one full vCPU: at 1769 MB the "
        f"times above are about what a single-core invocation takes; the worst peak needs "
        f"{figures['peak_rss_mib_49mp_png'] * 1.3:.0f} MiB with 30% headroom)"
    )
    print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()
