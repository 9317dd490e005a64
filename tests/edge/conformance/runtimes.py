"""The two runtimes the conformance table runs on, behind one small interface.

- ``CPythonRuntime``: the local adapter, ``edge_workers.local.EdgeServer`` (SQLite KV, local rate
  limit binding and Durable Object stand-ins), spoken to over real HTTP.
- ``PyodideRuntime``: the real worker bundles inside real Pyodide under Node, through ``harness.mjs``
  (one Node process for the whole session), with fake Cloudflare bindings.

Both trust ``CF-Connecting-IP`` as the client address, as Cloudflare sets it.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_workers.bundle import stage
from edge_workers.core.composition import GATEWAY, PUSH, required_rate_limit_bindings, route_table
from edge_workers.core.config import GatewayConfig
from edge_workers.core.ports import KV_BINDINGS
from edge_workers.local import EdgeServer

REPO_ROOT = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).with_name("harness.mjs")
PYODIDE_DIR = REPO_ROOT / "node_modules" / "pyodide"
WHEEL_DIR = REPO_ROOT / ".cache" / "wheels"
# Cloudflare's Python Workers SDK, pinned; fetched from PyPI into .cache/wheels on first use.
SDK_PACKAGE = "workers-runtime-sdk"
SDK_VERSION = "1.9.5"
EDGE_HOST = "https://edge.example"


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    logs: list[dict[str, Any]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return None if not values else ", ".join(values)


class EdgeRuntime(Protocol):
    name: str

    def reset(self, env: Mapping[str, str]) -> None: ...

    def fetch(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None, *, stream: bool = False
    ) -> Reply:
        """One request; a body is sent with its length declared, or ``stream``ed without one."""
        ...

    def kv_put(self, namespace: str, key: str, value: str, ttl: int | None) -> None: ...

    def kv_dump(self) -> dict[str, dict[str, str]]: ...

    def close(self) -> None: ...


class _ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: Mapping[str, object]) -> None:
        self.records.append(json.loads(json.dumps(record)))


class CPythonRuntime:
    name = "cpython"

    def __init__(self) -> None:
        self._base = Path(tempfile.mkdtemp(prefix="edge-conformance-"))
        self._server: EdgeServer | None = None
        self._sink = _ListSink()
        self._resets = 0

    def reset(self, env: Mapping[str, str]) -> None:
        self._stop()
        self._resets += 1
        self._sink = _ListSink()
        server = EdgeServer(
            "127.0.0.1",
            0,
            self._base / f"run-{self._resets}",
            GatewayConfig.from_mapping(env),
            log_sink=self._sink,
            trust_cf_connecting_ip=True,
        )
        server.start()
        self._server = server

    def _running(self) -> EdgeServer:
        if self._server is None:
            raise RuntimeError("reset() first")
        return self._server

    def fetch(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None, *, stream: bool = False
    ) -> Reply:
        server = self._running()
        seen = len(self._sink.records)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", "edge.example")
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None and stream:
                conn.putheader("Transfer-Encoding", "chunked")
                size = 4096
                chunks = [body[at : at + size] for at in range(0, len(body), size)]
                body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
            elif body is not None and not any(name.lower() == "content-length" for name, _ in headers):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read()
            collected: dict[str, list[str]] = {}
            for name, value in response.getheaders():
                collected.setdefault(name.lower(), []).append(value)
            return Reply(response.status, collected, data, self._sink.records[seen:])
        finally:
            conn.close()

    def kv_put(self, namespace: str, key: str, value: str, ttl: int | None) -> None:
        asyncio.run(self._running().kv[namespace].put(key, value, expiration_ttl=ttl))

    def kv_dump(self) -> dict[str, dict[str, str]]:
        async def dump() -> dict[str, dict[str, str]]:
            result: dict[str, dict[str, str]] = {}
            for name, store in self._running().kv.items():
                listed = await store.list()
                values = {key.name: await store.get(key.name) for key in listed.keys}
                result[name] = {key: value for key, value in values.items() if value is not None}
            return result

        return asyncio.run(dump())

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self._base, ignore_errors=True)


def sdk_wheel() -> Path:
    """The pinned workers-runtime-sdk wheel, downloaded once into .cache/wheels (idempotent)."""
    pattern = f"{SDK_PACKAGE.replace('-', '_')}-{SDK_VERSION}-*.whl"
    found = sorted(WHEEL_DIR.glob(pattern))
    if found:
        return found[0]
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--python-version",
            "3.14",
            "--only-binary=:all:",
            f"{SDK_PACKAGE}=={SDK_VERSION}",
            "-d",
            str(WHEEL_DIR),
        ],
        check=True,
        timeout=300,
    )
    found = sorted(WHEEL_DIR.glob(pattern))
    if not found:
        raise RuntimeError(f"pip download left no {pattern} in {WHEEL_DIR}")
    return found[0]


def stage_bundles(target: Path) -> dict[str, str]:
    """Both workers' bundles, staged by the same bundler wrangler runs."""
    bundles = {}
    for worker in ("gateway", "push"):
        out = target / worker
        stage(REPO_ROOT / "edge_workers" / worker / "entry.py", out)
        bundles[worker] = str(out)
    return bundles


def rate_limit_bindings(env: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """The Rate Limiting bindings both workers' wrangler.toml declare, for the fakes."""
    config = GatewayConfig.from_mapping(env)
    quotas = {}
    for spec in (GATEWAY, PUSH):
        quotas.update(required_rate_limit_bindings(route_table(spec, config)))
    return {name: {"limit": quota.limit, "period": quota.period} for name, quota in quotas.items()}


class PyodideRuntime:
    name = "pyodide"

    def __init__(self, node: str, extra_bundles: Mapping[str, Path] | None = None, restore_rounds: int = 0) -> None:
        self._staging = Path(tempfile.mkdtemp(prefix="edge-bundles-"))
        bundles = stage_bundles(self._staging)
        bundles.update({name: str(path) for name, path in (extra_bundles or {}).items()})
        env = {**os.environ, "NODE_OPTIONS": ""}
        self._process = subprocess.Popen(  # one Node process for the whole session
            [node, str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.boot = self._call(
            {
                "op": "boot",
                "pyodide": str(PYODIDE_DIR),
                "wheel": str(sdk_wheel()),
                "bundles": bundles,
                "restore_rounds": restore_rounds,
            }
        )

    def _call(self, message: Mapping[str, Any]) -> Any:
        stdin, stdout = self._process.stdin, self._process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("the harness has no pipes")
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the Node harness exited ({self._process.poll()})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"harness {message['op']} failed: {answer['error']}")
        return answer["result"]

    def reset(self, env: Mapping[str, str]) -> None:
        self.reset_with(env, rate_limit_bindings(env))

    def fetch(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None, *, stream: bool = False
    ) -> Reply:
        # Cloudflare routes /push/* on the gateway's host to the push router.
        worker = "push" if target.startswith("/push/") else "gateway"
        if body is not None and not stream and not any(name.lower() == "content-length" for name, _ in headers):
            # As a browser's request arrives at the worker: with its length declared.
            headers = [*headers, ("Content-Length", str(len(body)))]
        result = self._call(
            {
                "op": "fetch",
                "worker": worker,
                "method": method,
                "url": EDGE_HOST + target,
                "headers": [list(pair) for pair in headers],
                "body_b64": None if body is None else base64.b64encode(body).decode("ascii"),
            }
        )
        collected: dict[str, list[str]] = {}
        for name, value in result["headers"]:
            collected.setdefault(name.lower(), []).append(value)
        logs = []
        for line in result["logs"]:
            try:
                logs.append(json.loads(line))
            except ValueError:
                continue  # a print that is not a log record
        return Reply(result["status"], collected, base64.b64decode(result["body_b64"]), logs)

    def kv_put(self, namespace: str, key: str, value: str, ttl: int | None) -> None:
        self._call({"op": "kv_put", "ns": namespace, "key": key, "value": value, "ttl": ttl})

    def kv_dump(self) -> dict[str, dict[str, str]]:
        dumped: dict[str, dict[str, str]] = self._call({"op": "kv_dump"})
        return dumped

    def bench(
        self,
        worker: str,
        requests: list[dict[str, Any]],
        *,
        rounds: int,
        warmup: int,
        origin: Mapping[str, Any] | None = None,
    ) -> list[dict[str, list[float]]]:
        """Per-request CPU and wall milliseconds for each request (see harness.mjs ``bench``)."""
        message = {"op": "bench", "worker": worker, "requests": requests, "rounds": rounds, "warmup": warmup}
        results: list[dict[str, list[float]]] = self._call({**message, "origin": origin})["results"]
        return results

    def reset_with(self, env: Mapping[str, str], ratelimits: Mapping[str, Mapping[str, int]]) -> None:
        """A fresh isolate with rate limit bindings of the given quotas (a benchmark's are unlimited)."""
        self._call({"op": "reset", "env": dict(env), "kv": list(KV_BINDINGS), "ratelimits": dict(ratelimits)})

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        shutil.rmtree(self._staging, ignore_errors=True)
