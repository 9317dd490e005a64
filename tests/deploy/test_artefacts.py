"""What the synth built for Lambda: the runtime, the dependencies layer's wheels, the sizes, an import.

The functions run on python3.13 (Amazon Linux 2023, glibc 2.34) while this machine packages with
Python 3.11, so a wheel for the wrong interpreter or a too-new glibc would only fail at a cold start
in production. These tests read the layer and the deployment packages the session's synth wrote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.deploy.conftest import Synth

pytestmark = pytest.mark.slow

# Lambda's limit on a function's unzipped code plus all its layers.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# A native extension's tag: name.cpython-313-x86_64-linux-gnu.so or name.abi3.so.
EXTENSION_TAG = re.compile(r"\.(cpython-(?P<version>\d+)[^.]*|abi3)\.so$")


def tree_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def zip_unzipped_size(archive: Path) -> int:
    with zipfile.ZipFile(archive) as zipped:
        return sum(info.file_size for info in zipped.infolist())


def dist_info_wheels(site: Path) -> dict[str, list[str]]:
    """Each installed distribution's wheel tags, from its WHEEL metadata file."""
    tags: dict[str, list[str]] = {}
    for wheel in site.glob("*.dist-info/WHEEL"):
        lines = wheel.read_text(encoding="utf-8").splitlines()
        tags[wheel.parent.name] = [line.partition(":")[2].strip() for line in lines if line.startswith("Tag:")]
    return tags


def glibc_of(platform_tag: str) -> tuple[int, int] | None:
    """The glibc a manylinux tag needs (manylinux2014 = 2.17); None for a pure-Python 'any'."""
    if platform_tag == "any":
        return None
    legacy = {"manylinux2014_x86_64": (2, 17), "manylinux2010_x86_64": (2, 12), "manylinux1_x86_64": (2, 5)}
    if platform_tag in legacy:
        return legacy[platform_tag]
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform_tag)
    assert match, f"not a Linux x86_64 wheel: {platform_tag}"
    return int(match[1]), int(match[2])


def test_every_function_runs_on_the_target_runtime_with_the_dependencies_layer(synth: Synth) -> None:
    from cdk.dependencies import LAMBDA_RUNTIME

    layer_id = synth.logical_id(synth.stack.dependencies_layer)
    functions = synth.of_type("AWS::Serverless::Function")
    assert functions
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == LAMBDA_RUNTIME == "python3.13", logical_id
        assert props["Layers"][0] == {"Ref": layer_id}, logical_id
    layer = synth.resources[layer_id]["Properties"]
    assert layer["CompatibleRuntimes"] == [LAMBDA_RUNTIME]


def test_native_extensions_in_the_layer_fit_python_3_13_on_amazon_linux_2023(synth: Synth) -> None:
    from cdk.dependencies import TARGET_ABI, TARGET_GLIBC

    site = synth.stack.dependencies_layer_dir / "python"
    extensions = sorted(site.rglob("*.so"))
    assert extensions, "the layer has no native extension: was it built?"
    wrong = []
    for extension in extensions:
        match = EXTENSION_TAG.search(extension.name)
        # Bundled shared libraries (Pillow's libjpeg in pillow.libs/) carry no interpreter tag.
        if match is None:
            assert extension.parent.name.endswith(".libs"), f"untagged extension module {extension}"
        elif match["version"] is not None and f"cp{match['version']}" != TARGET_ABI:
            wrong.append(extension.relative_to(site))
    assert not wrong, f"extensions for another interpreter: {wrong}"
    for dist, tags in dist_info_wheels(site).items():
        assert tags, f"{dist}: no wheel tags"
        for tag in tags:
            interpreter, abi, platform = tag.split("-")
            if abi == "abi3":
                # The stable ABI of CPython 3.x, loadable by every later 3.y.
                assert interpreter.startswith("cp3") and int(interpreter[3:]) <= 13, f"{dist}: {tag}"
            elif abi == "none":
                assert interpreter.startswith("py") and platform == "any", f"{dist}: {tag}"
            else:
                # Built for exactly the target: a cp311 extension would not load on 3.13.
                assert (interpreter, abi) == (TARGET_ABI, TARGET_ABI), f"{dist}: {tag}"
            # A compressed tag set (a.b) loads wherever any of its platforms does.
            needed = min((glibc_of(one) for one in platform.split(".")), key=lambda v: v or (0, 0))
            assert needed is None or needed <= TARGET_GLIBC, f"{dist}: {tag} needs glibc {needed}"
    print(f"\n{len(extensions)} native files in the layer, all for {TARGET_ABI}/abi3 and glibc <= 2.34")


def test_each_function_with_its_layers_stays_under_lambdas_unzipped_limit(synth: Synth) -> None:
    layer_sizes = {synth.stack.dependencies_layer.node.path: tree_size(synth.stack.dependencies_layer_dir)}
    layer_sizes[synth.stack.backups.layer.node.path] = tree_size(Path(synth.outdir) / "layers" / "pgclient")
    mb = 1024 * 1024
    for product in (synth.stack.stepperslife, synth.stack.agistaffers):
        package = zip_unzipped_size(product.package_zip)
        print(f"\n{product.product}: function package {package / mb:.1f} MB unzipped")
        for handler, function in sorted(product.functions_by_handler().items()):
            layers = product.layers_of(function)
            total = package + sum(layer_sizes[layer.node.path] for layer in layers)
            print(f"  {handler}: {len(layers)} layer(s), {total / mb:.1f} MB unzipped")
            assert total < LAMBDA_UNZIPPED_LIMIT, f"{product.product}.{handler}: {total / mb:.1f} MB"
    for path, size in layer_sizes.items():
        print(f"layer {path}: {size / mb:.1f} MB unzipped")


def python313() -> str | None:
    """The executable of a python3.13 that actually runs (a pyenv shim may exist without the version
    selected; the probe resolves a shim to the interpreter behind it)."""
    found = shutil.which("python3.13")
    if found is None:
        return None
    probe = subprocess.run(
        [found, "-c", "import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


@pytest.mark.parametrize("product", ["stepperslife", "agistaffers"])
def test_the_packaged_app_imports_on_python_3_13_from_the_layer(synth: Synth, tmp_path: Path, product: str) -> None:
    interpreter = python313()
    if interpreter is None:
        print("\nno runnable python3.13 on this machine: the packaged app's import on 3.13 is not checked")
        return
    api = getattr(synth.stack, product)
    with zipfile.ZipFile(api.package_zip) as zipped:
        zipped.extractall(tmp_path / "task")
    site = synth.stack.dependencies_layer_dir / "python"
    # Lambda's order: the function's code first, then the layer's python/; nothing from this machine.
    script = "import sys; sys.path[:0] = sys.argv[1:3]; import app; print(app.app.app_name)"
    result = subprocess.run(
        [interpreter, "-I", "-S", "-c", script, str(tmp_path / "task"), str(site)],
        capture_output=True,
        text=True,
        check=False,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    print(f"\n{product}: the packaged app imports on {interpreter} from the layer: {result.stdout.strip()}")
