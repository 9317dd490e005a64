"""A corpus of real photographs for the image benchmark, from Debian's own package registry.

The machine has no photo library and may reach nothing but the package registries, but two of Debian's
wallpaper packages carry camera photographs (with their photographers' names): a 20 MP nuthatch on
tree bark with a blurred background (lomiri-wallpapers-20.04's ``Kleiber_by_Lukas_Baubkus.jpg``), a 16 MP night
sky over the sea, and ten 4 MP landscapes, still lifes and close-ups from Plasma's wallpapers. The
rest of those packages is illustration and is left out. ``apt-get download`` fetches the two .deb
files once (about 105 MB), ``dpkg-deb -x`` unpacks them, and the chosen files are kept under
``.cache/photo-corpus`` (git-ignored); later runs read the cache.

The issue's "real 12 MP photo" is the nuthatch cropped to its central 4000 x 3000 pixels, re-encoded
at JPEG quality 95 with no chroma subsampling (a camera's own high setting), so that the crop adds
nothing the comparison would notice.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(".cache/photo-corpus")
TWELVE_MP = "kleiber-12mp.jpg"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
PHOTOS = {
    "lomiri-wallpapers-20.04": {
        "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg": "kleiber-20mp.jpg",
        "usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg": "infinite-sea-16mp.jpg",
    },
    "plasma-workspace-wallpapers": {
        _PLASMA.format(name): f"{name.lower()}-4mp.jpg"
        for name in (
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    },
}


def photo_corpus() -> tuple[Path, list[Path]] | str:
    """(the 12 MP photo, every photo), or why the corpus cannot be had here."""
    expected = [CACHE / name for files in PHOTOS.values() for name in files.values()]
    if not all(path.exists() for path in [*expected, CACHE / TWELVE_MP]):
        reason = _fetch()
        if reason:
            return reason
    return CACHE / TWELVE_MP, sorted(expected)


def _fetch() -> str | None:
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return "no apt-get/dpkg-deb on this machine"
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="photo-corpus-") as scratch:
        download = subprocess.run(
            ["apt-get", "download", *PHOTOS], cwd=scratch, capture_output=True, text=True, timeout=600, check=False
        )
        if download.returncode != 0:
            return f"apt-get download failed: {download.stderr.strip().splitlines()[-1:]}"
        unpacked = Path(scratch, "root")
        for deb in Path(scratch).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, timeout=300)
        for files in PHOTOS.values():
            for source, name in files.items():
                shutil.copyfile(unpacked / source, CACHE / name)
    _crop_12mp(CACHE / "kleiber-20mp.jpg", CACHE / TWELVE_MP)
    return None


def _crop_12mp(source: Path, target: Path) -> None:
    from PIL import Image

    with Image.open(source) as photo:
        left, top = (photo.width - 4000) // 2, (photo.height - 3000) // 2
        photo.crop((left, top, left + 4000, top + 3000)).save(target, "JPEG", quality=95, subsampling=0)
