"""The conformance table (``tests/edge/conformance/cases.py``), unchanged, on both runtimes.

``cpython``: the local adapter (``edge_workers.local``) over real HTTP. ``pyodide``: the workers'
real bundles inside Node + npm ``pyodide`` + the PyPI ``workers-runtime-sdk`` wheel, one Node process
for the session. Both talk to the same fake origin, siteverify and media store on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.edge.conformance.cases import CASES, base_env
from tests.edge.conformance.execute import CaseRun
from tests.edge.conformance.fakes import FakeServices, running_fakes
from tests.edge.conformance.runtimes import CPythonRuntime, EdgeRuntime, PyodideRuntime

RUNTIMES = ("cpython", "pyodide")


@pytest.fixture(scope="session")
def fakes() -> Iterator[FakeServices]:
    with running_fakes() as services:
        yield services


@pytest.fixture(scope="session")
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/siteverify"


@pytest.fixture(scope="session")
def cpython_runtime() -> Iterator[CPythonRuntime]:
    runtime = CPythonRuntime()
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def pyodide_runtime() -> Iterator[PyodideRuntime]:
    node = shutil.which("node")
    if node is None:
        print("skipping the Pyodide conformance run: node is not on PATH")
        pytest.skip("node is not on PATH")
    runtime = PyodideRuntime(node)
    yield runtime
    runtime.close()


@pytest.mark.parametrize("runtime_name", RUNTIMES)
@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_conformance(
    runtime_name: str, case: dict[str, Any], request: pytest.FixtureRequest, fakes: FakeServices, closed_url: str
) -> None:
    runtime: EdgeRuntime = request.getfixturevalue(f"{runtime_name}_runtime")
    problems = CaseRun(runtime, fakes, base_env(fakes.url), {"CLOSED_URL": closed_url, "FAKES_URL": fakes.url}).run(
        case
    )
    assert not problems, "\n".join(problems)


def test_the_table_covers_both_workers_and_every_handler() -> None:
    paths = {step["path"].split("?")[0] for case in CASES for step in case["steps"]}
    for prefix in (
        "/api/auth/login",
        "/api/auth/logout",
        "/api/users",
        "/api/me/preferences",
        "/api/flags",
        "/api/events",
        "/img/",
        "/push/subscriptions",
        "/push/vapid-public-key",
        "/healthz",
    ):
        assert any(path.startswith(prefix) for path in paths), prefix
