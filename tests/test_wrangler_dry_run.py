"""`wrangler deploy --dry-run` builds the gateway worker offline, and the bundle holds every module it needs.

The imports are walked here with ``modulefinder`` (independently of the bundler under test), starting
from the worker's entry module; every first-party module found must be in the bundle at the same
relative path, and nothing in the bundle may import beyond the standard library and the runtime.
"""

from __future__ import annotations

import ast
import modulefinder
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GATEWAY_DIR = REPO_ROOT / "edge_workers" / "gateway"
# Modules the Workers runtime provides; everything else must be standard library or bundled.
RUNTIME_MODULES = {"js", "workers", "pyodide"}
FIRST_PARTY = {"shared", "edge_workers"}


def first_party_imports(entry: Path) -> set[str]:
    """Repository-relative paths of the first-party modules ``entry`` imports, transitively."""
    finder = modulefinder.ModuleFinder(path=[str(REPO_ROOT)])
    finder.run_script(str(entry))
    found = set()
    for name, module in finder.modules.items():
        file = getattr(module, "__file__", None)  # modulefinder's Module is untyped in typeshed
        if name != "__main__" and file and Path(file).resolve().is_relative_to(REPO_ROOT):
            found.add(Path(file).resolve().relative_to(REPO_ROOT).as_posix())
    return found


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npx = shutil.which("npx")
    if npx is None or shutil.which("node") is None:
        print("skipping: node/npx not found on PATH")
        pytest.skip("node/npx not found on PATH")
    outdir = tmp_path_factory.mktemp("wrangler") / "dist"
    env = {
        **os.environ,
        "WRANGLER_SEND_METRICS": "false",
        "CI": "true",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        # The [build] command runs `python3 bundle.py`: make it this interpreter.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    result = subprocess.run(
        [npx, "--no-install", "wrangler", "deploy", "--dry-run", "--outdir", str(outdir)],
        cwd=GATEWAY_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return outdir


def test_dry_run_bundles_the_entry_and_everything_it_imports(bundle: Path) -> None:
    assert (bundle / "entry.py").read_bytes() == (GATEWAY_DIR / "entry.py").read_bytes()
    needed = first_party_imports(GATEWAY_DIR / "entry.py")
    assert "shared/edge/gateway.py" in needed and "shared/envelope.py" in needed
    assert "edge_workers/workers_adapters.py" in needed
    for relative in sorted(needed):
        staged = bundle / relative
        assert staged.is_file(), f"{relative} is missing from the bundle"
        assert staged.read_bytes() == (REPO_ROOT / relative).read_bytes(), f"{relative} is stale"


def test_bundle_holds_no_unneeded_python(bundle: Path) -> None:
    bundled = {path.relative_to(bundle).as_posix() for path in bundle.rglob("*.py")}
    assert bundled == first_party_imports(GATEWAY_DIR / "entry.py") | {"entry.py"}


def test_bundled_code_imports_only_stdlib_and_the_runtime(bundle: Path) -> None:
    allowed = set(sys.stdlib_module_names) | RUNTIME_MODULES | FIRST_PARTY | {"__future__"}
    for path in bundle.rglob("*.py"):
        imports = top_level_imports(path)
        assert imports <= allowed, f"{path.relative_to(bundle)} imports {sorted(imports - allowed)}"
        if path.relative_to(bundle).parts[0] == "shared":
            # The core stays runtime-agnostic: only adapters and entry points touch js/workers.
            assert not imports & RUNTIME_MODULES, path
