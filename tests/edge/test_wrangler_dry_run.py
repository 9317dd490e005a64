"""`wrangler deploy --dry-run` builds both workers offline, and each bundle holds every module it needs.

The imports are walked here with ``modulefinder`` (independently of the bundler under test), starting
from each worker's entry module; every first-party module found must be in the bundle at the same
relative path, and nothing in the bundle may import beyond the standard library and the runtime.
Each wrangler.toml must also declare exactly the bindings the code asks for.
"""

from __future__ import annotations

import ast
import modulefinder
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge_workers.core.composition import (
    LIMITER_OBJECT_CLASS,
    LIMITER_OBJECTS_BINDING,
    WORKERS,
    required_rate_limit_bindings,
)
from edge_workers.core.config import ENV_VARIABLES, GatewayConfig
from edge_workers.core.routes import RouteTable

REPO_ROOT = Path(__file__).resolve().parents[2]
# Modules the Workers runtime provides; everything else must be standard library or bundled.
RUNTIME_MODULES = {"js", "workers", "pyodide"}
FIRST_PARTY = {"shared", "edge_workers"}
SECRETS = {"EDGE_SIGNING_SECRET", "JWT_SECRET", "TURNSTILE_SECRET_KEY"}


def worker_dir(worker: str) -> Path:
    return REPO_ROOT / "edge_workers" / worker


def wrangler_config(worker: str) -> dict[str, Any]:
    with (worker_dir(worker) / "wrangler.toml").open("rb") as file:
        return tomllib.load(file)


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


@pytest.fixture(scope="module", params=sorted(WORKERS))
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    worker: str = request.param
    npx = shutil.which("npx")
    if npx is None or shutil.which("node") is None:
        print("skipping: node/npx not found on PATH")
        pytest.skip("node/npx not found on PATH")
    outdir = tmp_path_factory.mktemp(f"wrangler-{worker}") / "dist"
    env = {
        **os.environ,
        "WRANGLER_SEND_METRICS": "false",
        "CI": "true",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        # The [build] command runs `python3 ../bundle.py`: make it this interpreter.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    result = subprocess.run(
        [npx, "--no-install", "wrangler", "deploy", "--dry-run", "--outdir", str(outdir)],
        cwd=worker_dir(worker),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return worker, outdir


def test_dry_run_bundles_the_entry_and_everything_it_imports(bundle: tuple[str, Path]) -> None:
    worker, outdir = bundle
    entry = worker_dir(worker) / "entry.py"
    assert (outdir / "entry.py").read_bytes() == entry.read_bytes()
    needed = first_party_imports(entry)
    assert {"edge_workers/core/gateway.py", "shared/envelope.py", "edge_workers/workers_adapters.py"} <= needed
    for relative in sorted(needed):
        staged = outdir / relative
        assert staged.is_file(), f"{relative} is missing from the {worker} bundle"
        assert staged.read_bytes() == (REPO_ROOT / relative).read_bytes(), f"{relative} is stale"


def test_bundle_holds_no_unneeded_python(bundle: tuple[str, Path]) -> None:
    worker, outdir = bundle
    bundled = {path.relative_to(outdir).as_posix() for path in outdir.rglob("*.py")}
    assert bundled == first_party_imports(worker_dir(worker) / "entry.py") | {"entry.py"}


def test_bundled_code_imports_only_stdlib_and_the_runtime(bundle: tuple[str, Path]) -> None:
    _, outdir = bundle
    allowed = set(sys.stdlib_module_names) | RUNTIME_MODULES | FIRST_PARTY | {"__future__"}
    for path in outdir.rglob("*.py"):
        imports = top_level_imports(path)
        assert imports <= allowed, f"{path.relative_to(outdir)} imports {sorted(imports - allowed)}"
        if path.relative_to(outdir).parts[0] == "shared":
            # The core stays runtime-agnostic: only adapters and entry points touch js/workers.
            assert not imports & RUNTIME_MODULES, path


def _full_route_table(worker: str) -> RouteTable:
    """The worker's routes with every optional origin configured, so every policy is in use."""
    config = GatewayConfig.from_mapping(
        {
            "EDGE_SIGNING_SECRET": "x" * 32,
            "STEPPERSLIFE_ORIGIN": "https://api.example",
            "AGISTAFFERS_ORIGIN": "https://agi.example",
            "MEDIA_PUBLIC_BASE_URL": "https://media.example",
        }
    )
    return RouteTable.for_origins(WORKERS[worker].routes, config.origins)


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_rate_limit_bindings_match_the_policies(worker: str) -> None:
    declared = {
        item["name"]: (item["simple"]["limit"], item["simple"]["period"])
        for item in wrangler_config(worker).get("ratelimits", [])
    }
    wanted = {
        name: (quota.limit, quota.period)
        for name, quota in required_rate_limit_bindings(_full_route_table(worker)).items()
    }
    assert declared == wanted


def test_shared_rate_limit_namespaces_agree_between_workers() -> None:
    namespaces: dict[str, set[tuple[str, str]]] = {}
    for worker in WORKERS:
        for item in wrangler_config(worker).get("ratelimits", []):
            namespaces.setdefault(item["namespace_id"], set()).add((item["name"], repr(item["simple"])))
    # One namespace means one set of counters: the same binding name and quota wherever it is declared.
    assert all(len(uses) == 1 for uses in namespaces.values()), namespaces


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_kv_durable_object_and_variables_are_declared(worker: str) -> None:
    config = wrangler_config(worker)
    bindings = {item["binding"] for item in config["kv_namespaces"]}
    assert set(WORKERS[worker].kv) | {"RATE_LIMIT_KV", "FLAGS_KV"} <= bindings
    objects = config["durable_objects"]["bindings"]
    assert [(item["name"], item["class_name"]) for item in objects] == [(LIMITER_OBJECTS_BINDING, LIMITER_OBJECT_CLASS)]
    variables = set(config["vars"])
    assert variables <= set(ENV_VARIABLES), sorted(variables - set(ENV_VARIABLES))
    assert not variables & SECRETS, "secrets belong in `wrangler secret put`, not in [vars]"
    GatewayConfig.from_mapping({**config["vars"], "EDGE_SIGNING_SECRET": "x" * 32}).require(*WORKERS[worker].settings)


def test_the_gateway_defines_and_migrates_the_rate_limit_object() -> None:
    config = wrangler_config("gateway")
    assert config["migrations"] == [{"tag": "v1", "new_sqlite_classes": [LIMITER_OBJECT_CLASS]}]
    tree = ast.parse((worker_dir("gateway") / "entry.py").read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert LIMITER_OBJECT_CLASS in classes
    assert any(
        isinstance(base, ast.Name) and base.id == "DurableObject" for base in classes[LIMITER_OBJECT_CLASS].bases
    )
    # The push router uses the gateway's class rather than deploying a second one.
    push_objects = wrangler_config("push")["durable_objects"]["bindings"]
    assert push_objects[0]["script_name"] == config["name"]
    assert "migrations" not in wrangler_config("push")
