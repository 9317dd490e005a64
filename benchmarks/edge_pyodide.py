"""The edge's per-request cost inside real Pyodide, and the CPython adapter's overhead on loopback.

Pyodide (Node + npm pyodide + the workers-runtime-sdk wheel + the real bundles, through the
conformance harness; one process, same run): a bare echo worker (the baseline), a cache-hit GET
through the gateway, and an authenticated (session in KV), rate-limited (binding), proxied POST
(signed envelope, cache version bump). Each request reaches ``fetch`` as workerd delivers it (through
the SDK's RPC conversions), and outbound fetches to the origin are answered inside Node, so the
figures are the edge's own work; both wall time and process CPU time are measured per request.
Targets (issue 3): cache hit <= 2x the baseline median, proxied POST <= 4x, every p99 < 5 ms, gateway
module import <= 50 ms; the Workers Free plan allows 10 ms of CPU per request.

Import is measured twice: from source into a fresh isolate, and as the difference between restoring
a memory snapshot taken after the entries were imported and one taken before. workerd takes such a
dedicated snapshot at deploy for our compatibility date, so the second is what a cold start pays.

CPython: requests per second and p99 of a keep-alive load generator (a separate process) against a
stub origin directly, and against the same stub through the local EdgeServer.

Usage: .venv/bin/python -m benchmarks.edge_pyodide [--rounds 400] [--cpython-requests 3000]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import json
import multiprocessing
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_workers.core.composition import GATEWAY, required_rate_limit_bindings, route_table
from edge_workers.core.config import GatewayConfig
from edge_workers.local import EdgeServer
from tests.edge.conformance.runtimes import EDGE_HOST, PyodideRuntime

SIGNING_SECRET = "benchmark-edge-signing-secret-" + "x" * 32
STUB_ORIGIN = "https://origin.bench.example"
SESSION_ID = "B" * 43
ECHO_ENTRY = """from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response("ok")
"""


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "p99": round(percentile(values, 0.99), 3)}


def pyodide_figures(node: str, rounds: int, warmup: int, restore_rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as scratch:
        echo = Path(scratch) / "echo"
        echo.mkdir()
        (echo / "entry.py").write_text(ECHO_ENTRY, encoding="utf-8")
        runtime = PyodideRuntime(node, extra_bundles={"echo": echo}, restore_rounds=restore_rounds)
        try:
            return _measure(runtime, rounds, warmup)
        finally:
            runtime.close()


def _measure(runtime: PyodideRuntime, rounds: int, warmup: int) -> dict[str, Any]:
    env = {"EDGE_SIGNING_SECRET": SIGNING_SECRET, "STEPPERSLIFE_ORIGIN": STUB_ORIGIN, "RATE_LIMIT_BACKEND": "binding"}
    config = GatewayConfig.from_mapping(env)
    # Every quota unlimited: the benchmark measures the check, not refusals.
    unlimited = {
        name: {"limit": 10**9, "period": 60} for name in required_rate_limit_bindings(route_table(GATEWAY, config))
    }
    runtime.reset_with(env, unlimited)
    now = int(time.time())
    record = {
        "identity": {"user_id": "u1", "role": "user", "email": "b@example.com"},
        "created_at": now,
        "expires_at": now + 86400,
    }
    runtime.kv_put("SESSION_KV", f"session:{SESSION_ID}", json.dumps(record), 86400)
    origin = {
        "prefix": STUB_ORIGIN,
        "status": 200,
        "headers": {
            "content-type": "application/json",
            "cache-control": "public, max-age=60, s-maxage=300",
            "etag": '"b1"',
        },
        "body": json.dumps({"items": [{"id": n, "title": f"Event {n}"} for n in range(20)]}),
    }
    headers = [["cf-connecting-ip", "203.0.113.5"]]
    baseline = runtime.bench(
        "echo",
        [{"method": "GET", "url": EDGE_HOST + "/", "headers": headers, "expect": 200}],
        rounds=rounds,
        warmup=warmup,
    )[0]
    # The first warm-up request misses and stores; the measured ones are hits.
    cache_hit = runtime.bench(
        "gateway",
        [{"method": "GET", "url": EDGE_HOST + "/api/events?limit=20", "headers": headers, "expect": 200}],
        rounds=rounds,
        warmup=warmup,
        origin=origin,
    )[0]
    payload = json.dumps({"title": "Benchmark social", "capacity": 10}).encode()
    body = base64.b64encode(payload).decode()
    post_headers = [
        *headers,
        ["cookie", f"__Host-session={SESSION_ID}"],
        ["content-type", "application/json"],
        ["content-length", str(len(payload))],
    ]
    proxied_post = runtime.bench(
        "gateway",
        [
            {
                "method": "POST",
                "url": EDGE_HOST + "/api/events",
                "headers": post_headers,
                "body_b64": body,
                "expect": 200,
            }
        ],
        rounds=rounds,
        warmup=warmup,
        origin=origin,
    )[0]
    figures = {
        name: {"wall": summary(result["wall_ms"]), "cpu": summary(result["cpu_ms"])}
        for name, result in (("baseline", baseline), ("cache_hit", cache_hit), ("proxied_post", proxied_post))
    }
    return {"paths": figures, "boot": runtime.boot}


class _StubOrigin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no delayed-ACK stall between the header and body writes
    payload = json.dumps({"items": [{"id": n, "title": f"Event {n}"} for n in range(20)]}).encode()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")  # every request through the edge goes to the origin
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _load(port: int, path: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """Run in a separate process: ``total`` keep-alive GETs over ``concurrency`` connections."""

    def worker(count: int, number: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies = []
        for index in range(count):
            started = time.perf_counter()
            # A new client address per request, so the per-IP limit never refuses the load.
            conn.request("GET", path, headers={"CF-Connecting-IP": f"10.{number}.{index // 250}.{index % 250}"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            latencies.append((time.perf_counter() - started) * 1000)
        conn.close()
        return latencies

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(worker, [total // concurrency] * concurrency, range(concurrency)))
    return time.perf_counter() - started, [latency for part in parts for latency in part]


def cpython_figures(total: int, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    context = multiprocessing.get_context("spawn")
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), _StubOrigin)) as stub, tempfile.TemporaryDirectory() as data:
        config = GatewayConfig.from_mapping({"EDGE_SIGNING_SECRET": SIGNING_SECRET, "STEPPERSLIFE_ORIGIN": stub})

        class _Quiet:
            def write(self, record: Mapping[str, object]) -> None:
                pass

        with (
            EdgeServer("127.0.0.1", 0, Path(data), config, log_sink=_Quiet(), trust_cf_connecting_ip=True) as edge,
            concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as loader,
        ):
            stub_port = int(stub.rsplit(":", 1)[1])
            for name, port, path in (("direct", stub_port, "/events"), ("edge", edge.port, "/api/events")):
                loader.submit(_load, port, path, concurrency * 10, concurrency).result()  # warm up
                elapsed, latencies = loader.submit(_load, port, path, total, concurrency).result()
                results[name] = {"rps": round(len(latencies) / elapsed, 1), **summary(latencies)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--cpython-requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--restore-rounds", type=int, default=7, help="snapshot restores of each kind")
    args = parser.parse_args()
    if args.restore_rounds < 1:
        parser.error("--restore-rounds must be at least 1")
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH: the Pyodide figures need Node 20")

    pyodide = pyodide_figures(node, args.rounds, args.warmup, args.restore_rounds)
    paths = pyodide["paths"]
    for name, figure in paths.items():
        print(
            f"pyodide {name:13s} wall median {figure['wall']['median']:.3f} ms p99 {figure['wall']['p99']:.3f} ms"
            f" | cpu median {figure['cpu']['median']:.3f} ms p99 {figure['cpu']['p99']:.3f} ms"
        )
    boot = pyodide["boot"]
    imports = boot["import_ms"]
    restores = {name: summary(values) for name, values in boot["snapshot_restore_ms"].items()}
    # What importing the entries adds to a cold start that restores workerd's dedicated snapshot.
    snapshot_import = restores["with_entries"]["median"] - restores["sdk_only"]["median"]
    print(f"pyodide load + SDK {boot['pyodide_load_ms']:.0f} ms")
    print(f"entry imports from source (ms): {json.dumps({k: round(v, 1) for k, v in imports.items()})}")
    print(
        f"snapshot restore median: SDK only {restores['sdk_only']['median']:.1f} ms, with the entries"
        f" {restores['with_entries']['median']:.1f} ms (difference {snapshot_import:.1f} ms)"
    )

    cpython = cpython_figures(args.cpython_requests, args.concurrency)
    for name, figure in cpython.items():
        rps, median, p99 = figure["rps"], figure["median"], figure["p99"]
        print(f"cpython {name:7s} {rps:8.1f} req/s  median {median:.3f} ms  p99 {p99:.3f} ms")

    baseline = paths["baseline"]["wall"]["median"]
    line = {
        "baseline_median_ms": baseline,
        "cache_hit_median_ms": paths["cache_hit"]["wall"]["median"],
        "proxied_post_median_ms": paths["proxied_post"]["wall"]["median"],
        "max_p99_ms": max(figure["wall"]["p99"] for figure in paths.values()),
        "gateway_import_ms": round(imports["gateway"], 1),
        "push_import_ms": round(imports["push"], 1),
        "gateway_import_from_snapshot_ms": round(snapshot_import, 1),
        "snapshot_restore_median_ms": {name: figure["median"] for name, figure in restores.items()},
        "cache_hit_ratio": round(paths["cache_hit"]["wall"]["median"] / baseline, 2),
        "proxied_post_ratio": round(paths["proxied_post"]["wall"]["median"] / baseline, 2),
        "cpu_median_ms": {name: figure["cpu"]["median"] for name, figure in paths.items()},
        "cpu_p99_ms": {name: figure["cpu"]["p99"] for name, figure in paths.items()},
        "cpython_direct_rps": cpython["direct"]["rps"],
        "cpython_edge_rps": cpython["edge"]["rps"],
        "cpython_direct_p99_ms": cpython["direct"]["p99"],
        "cpython_edge_p99_ms": cpython["edge"]["p99"],
        "rounds": args.rounds,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
