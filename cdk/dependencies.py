"""The functions' third-party packages as one Lambda layer, built for the Lambda runtime, not this machine.

Lambda runs the functions on ``python3.13`` (Amazon Linux 2023, glibc 2.34) while the code, the tests
and the packaging run on the local Python 3.11. Chalice's packager would download wheels for the
interpreter that runs it (cp311) and name the runtime after it, so it packages our code only (an
empty requirements.txt: cdk/staging.py) and every package of functions/requirements.txt comes from
this layer, which pip fills with wheels for the target: ``pip install --target`` with
``--platform/--python-version/--implementation/--only-binary`` resolves and unpacks wheels of
another interpreter and platform without running or compiling anything (no sdist can slip in and
be built for the wrong glibc).

Failure model: a package without a cp313 (or abi3) manylinux wheel fails the synth here, loudly,
rather than a cold start in production. The build is cached under a directory keyed by a hash of
the requirements and the target, written to a temporary directory and renamed into place, so an
interrupted build never leaves a half layer behind and repeated synths (the test session's, `make
synth`) download once. tests/deploy/test_artefacts.py inspects what was built.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The Lambda runtime every function runs on, and the wheels that fit it.
LAMBDA_RUNTIME = "python3.13"
TARGET_PYTHON_VERSION = "3.13"
TARGET_ABI = "cp313"
# Amazon Linux 2023 has glibc 2.34: any manylinux level up to 2_34 loads there.
TARGET_GLIBC = (2, 34)
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
# Pure-Python dependencies published as source only (pywebpush's http-ece): built into a
# py3-none-any wheel first, which fits any interpreter and platform, so the target install stays
# wheels-only. A native package without a target wheel still fails the build.
PURE_SOURCE_ONLY = ("http-ece",)
# Where the layer's directories are cached unless AGISTACK_LAYER_CACHE says otherwise (gitignored).
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "lambda-layers"
CACHE_ENV = "AGISTACK_LAYER_CACHE"


def pip_target_args() -> list[str]:
    """The pip options that select wheels for the Lambda runtime instead of the running interpreter."""
    platforms = [arg for platform in TARGET_PLATFORMS for arg in ("--platform", platform)]
    return [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        TARGET_PYTHON_VERSION,
        *platforms,
    ]


def requirements_key(requirements: Path) -> str:
    """The cache key: the requirements' text and the target they are resolved for."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(" ".join(pip_target_args()).encode())
    return digest.hexdigest()[:20]


def build_dependencies_layer(requirements: Path, cache_root: Path | None = None) -> Path:
    """The layer directory (its ``python/`` holds the packages) for ``requirements``; built once per key."""
    cache_root = cache_root or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    layer_dir = cache_root / f"dependencies-{requirements_key(requirements)}"
    if (layer_dir / "python").is_dir():
        return layer_dir
    cache_root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="building-", dir=cache_root))
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    wheelhouse = building / "wheelhouse"
    try:
        # Our own pip with fixed arguments and this repository's requirements file: no untrusted input.
        subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheelhouse), *PURE_SOURCE_ONLY], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603
            [
                *pip,
                "install",
                "--no-compile",
                "--find-links",
                str(wheelhouse),
                "--target",
                str(building / "python"),
                *pip_target_args(),
                "--requirement",
                str(requirements),
            ],
            check=True,
        )
        shutil.rmtree(wheelhouse)
        # pip's console scripts are of no use on Lambda (and name this machine's interpreter).
        shutil.rmtree(building / "python" / "bin", ignore_errors=True)
        try:
            building.rename(layer_dir)
        except OSError:
            # Another synth finished the same key first: its layer is as good as ours.
            if not (layer_dir / "python").is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return layer_dir
