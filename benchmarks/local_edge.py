"""What the local edge answers under load, before and after it moved to uvicorn (issue 11).

Two set-ups in the same run, each an edge in front of a stub origin that answers a small JSON body
with ``no-store`` (every request is proxied, none answered from the edge's cache):

- baseline: the former serving, kept here only: the edge core behind ``http.server`` (listen
  backlog 5, a thread per connection, one asyncio loop thread for the core) opening a new
  connection to the origin for every request, in front of an ``http.server`` origin (as ``chalice
  local`` was: backlog 5);
- uvicorn: ``edge_workers.local.EdgeServer`` (uvicorn on h11, backlog 2048, origin connections kept
  alive in a urllib3 pool) in front of a uvicorn origin (``edge_workers.local_server``, as the dev
  stack now serves its APIs).

Loads, from a separate process (its own GIL): (a) ``--burst`` clients open new connections at the
same moment and send one ``GET /api/events`` each; (b) ``--users`` clients on kept-alive connections
send ``--requests`` each, back to back. Each request comes from its own ``CF-Connecting-IP`` so the
per-IP rate limits stay out of the way. A request counts as answered when its response arrives
within ``--timeout`` seconds. Figures per round: answered, answered per second over the load's
wall time, p50 and p99 of the answered; median and spread over ``--rounds``. A median alone misleads
here: the baseline answers most kept-alive requests fast and leaves the rest waiting seconds (its
origin's accept queue overflows; SYNs are retried after 1 s, 3 s, ...), so read p99 and per second.

Usage: .venv/bin/python -m benchmarks.local_edge [--rounds 3] [--burst 200] [--users 50] [--requests 40]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks._common import percentile, spread
from edge_workers.core.config import GatewayConfig
from edge_workers.core.context import GatewayDeps
from edge_workers.core.gateway import handle
from edge_workers.core.http import BytesBody, EdgeRequest, EdgeResponse, Headers, OutboundRequest
from edge_workers.core.ports import OriginUnavailable
from edge_workers.local import EdgeServer
from edge_workers.local_server import BackgroundServer, Receive, Scope, Send

SIGNING_SECRET = "benchmark-local-edge-secret-" + "x" * 32
ORIGIN_BODY = b'{"items":[],"next":null}'
ORIGIN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
PATH = "/api/events"


# --- the origins ---------------------------------------------------------------------------------


class _StubOriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        for name, value in {**ORIGIN_HEADERS, "Content-Length": str(len(ORIGIN_BODY))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(ORIGIN_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietThreadingServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up mid-answer are part of the load


async def _stub_origin(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(name.lower().encode(), value.encode()) for name, value in ORIGIN_HEADERS.items()]
    headers.append((b"content-length", str(len(ORIGIN_BODY)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ORIGIN_BODY})


# --- the former serving, as the baseline -----------------------------------------------------------


class _ConnectionPerRequestOrigin:
    """The former origin client: ``http.client``, one connection per request, closed after it."""

    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: OutboundRequest) -> EdgeResponse:
        parts = urlsplit(request.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=request.timeout)
        try:
            headers = {**dict(request.headers.items()), "connection": "close"}
            conn.request(request.method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
            response = conn.getresponse()
            body = response.read()
            kept = Headers(
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in ("connection", "content-length")
            )
            return EdgeResponse(response.status, kept, body)
        except OSError as exc:
            raise OriginUnavailable(str(exc)) from exc
        finally:
            conn.close()


class _BaselineEdgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _BaselineEdgeServer

    def do_GET(self) -> None:
        headers = Headers(self.headers.items())
        request = EdgeRequest("GET", self.path, headers, BytesBody(), headers.get("cf-connecting-ip") or "")
        response = asyncio.run_coroutine_threadsafe(handle(request, self.server.deps), self.server.loop).result()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _BaselineEdgeServer(_QuietThreadingServer):
    def __init__(self, deps: GatewayDeps, loop: asyncio.AbstractEventLoop) -> None:
        self.deps, self.loop = deps, loop
        super().__init__(("127.0.0.1", 0), _BaselineEdgeHandler)


def _serve_in_thread(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def _config(origin_url: str) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "EDGE_SIGNING_SECRET": SIGNING_SECRET,
            "STEPPERSLIFE_ORIGIN": origin_url,
            "TURNSTILE_SECRET_KEY": "1x0000000000000000000000000000000AA",
        }
    )


class _QuietSink:
    def write(self, record: Mapping[str, object]) -> None:
        pass


@contextmanager
def baseline_edge(data_dir: Path) -> Iterator[str]:
    origin = _QuietThreadingServer(("127.0.0.1", 0), _StubOriginHandler)
    origin_url = _serve_in_thread(origin)
    # The EdgeServer composes the workers (KV files, bindings); its own HTTP server stays idle here.
    composer = EdgeServer(
        "127.0.0.1",
        0,
        data_dir,
        _config(origin_url),
        origin=_ConnectionPerRequestOrigin(),
        log_sink=_QuietSink(),
        trust_cf_connecting_ip=True,
    )
    composer.start()
    loop = asyncio.new_event_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=32))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    edge = _BaselineEdgeServer(composer.workers["gateway"], loop)
    try:
        yield _serve_in_thread(edge)
    finally:
        for server in (edge, origin):
            server.shutdown()
            server.server_close()
        loop.call_soon_threadsafe(loop.stop)
        composer.stop()


@contextmanager
def uvicorn_edge(data_dir: Path) -> Iterator[str]:
    with (
        BackgroundServer(_stub_origin, "127.0.0.1", 0, name="bench-origin") as origin,
        EdgeServer(
            "127.0.0.1", 0, data_dir, _config(origin.url), log_sink=_QuietSink(), trust_cf_connecting_ip=True
        ) as edge,
    ):
        yield edge.url


# --- the load, from another process ---------------------------------------------------------------


def _get(conn: http.client.HTTPConnection, client_ip: str) -> None:
    conn.request("GET", PATH, headers={"CF-Connecting-IP": client_ip})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}")


def _burst(url: str, clients: int, timeout: float) -> list[float | None]:
    """Latency (s) of each of ``clients`` new connections opened at once, or None if unanswered."""
    parts = urlsplit(url)
    barrier = threading.Barrier(clients)

    def one(number: int) -> float | None:
        barrier.wait()
        started = time.perf_counter()
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            _get(conn, f"10.1.{number // 250}.{number % 250 + 1}")
            return time.perf_counter() - started
        except (OSError, RuntimeError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, range(clients)))


def _kept_alive(url: str, users: int, requests: int, timeout: float) -> list[float | None]:
    parts = urlsplit(url)
    barrier = threading.Barrier(users)

    def user(number: int) -> list[float | None]:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        latencies: list[float | None] = []
        barrier.wait()
        for sent in range(requests):
            started = time.perf_counter()
            try:
                _get(conn, f"10.{2 + number}.{sent // 250}.{sent % 250 + 1}")
                latencies.append(time.perf_counter() - started)
            except (OSError, RuntimeError, http.client.HTTPException):
                latencies.append(None)
                conn.close()  # a fresh connection for the next request
        conn.close()
        return latencies

    with concurrent.futures.ThreadPoolExecutor(max_workers=users) as pool:
        return [latency for latencies in pool.map(user, range(users)) for latency in latencies]


def _load(kind: str, url: str, args: dict[str, Any]) -> tuple[list[float | None], float]:
    """Each request's latency (None: unanswered) and the load's wall time in seconds."""
    started = time.perf_counter()
    if kind == "burst":
        latencies = _burst(url, args["burst"], args["timeout"])
    else:
        latencies = _kept_alive(url, args["users"], args["requests"], args["timeout"])
    return latencies, time.perf_counter() - started


def summarise(latencies: list[float | None], wall: float) -> dict[str, float]:
    answered = [latency * 1000 for latency in latencies if latency is not None]
    return {
        "sent": len(latencies),
        "answered": len(answered),
        "per_s": round(len(answered) / wall, 1),
        "p50_ms": percentile(answered, 0.5) if answered else float("nan"),
        "p99_ms": percentile(answered, 0.99) if answered else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=200, help="new connections opened at once")
    parser.add_argument("--users", type=int, default=50, help="kept-alive clients")
    parser.add_argument("--requests", type=int, default=40, help="requests per kept-alive client")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as unanswered")
    args = vars(parser.parse_args())

    setups = {"baseline": baseline_edge, "uvicorn": uvicorn_edge}
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {s: {"burst": [], "keepalive": []} for s in setups}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-local-edge-") as scratch, spawn.Pool(1) as loader:
        for name, setup in setups.items():
            with setup(Path(scratch) / name) as url:
                loader.apply(_load, ("keepalive", url, {**args, "users": 2, "requests": 5}))  # warm-up
                for _ in range(args["rounds"]):
                    for kind in ("burst", "keepalive"):
                        figures = summarise(*loader.apply(_load, (kind, url, args)))
                        rounds[name][kind].append(figures)
                        print(f"{name:8} {kind:9} " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
                        time.sleep(0.5)  # let TIME_WAIT and the accept queue settle between loads

    result: dict[str, Any] = {"benchmark": "local_edge", "baseline": "http.server edge and origin", **args}
    for kind, label in (("burst", f"{args['burst']} new connections at once"), ("keepalive", "kept-alive users")):
        print(f"\n{label}:")
        for name in setups:
            for metric in ("answered", "per_s", "p50_ms", "p99_ms"):
                values = [figures[metric] for figures in rounds[name][kind]]
                print(f"  {name:8} {metric:8} {spread(values)}")
                result[f"{kind}_{name}_{metric}"] = round(statistics.median(values), 2)
        for metric in ("p50_ms", "p99_ms"):
            ratio = result[f"{kind}_baseline_{metric}"] / max(result[f"{kind}_uvicorn_{metric}"], 0.001)
            result[f"{kind}_{metric}_ratio_baseline_over_uvicorn"] = round(ratio, 2)
            print(f"  {metric} ratio baseline/uvicorn: {ratio:.2f}x")
        throughput = result[f"{kind}_uvicorn_per_s"] / max(result[f"{kind}_baseline_per_s"], 0.001)
        result[f"{kind}_per_s_ratio_uvicorn_over_baseline"] = round(throughput, 2)
        print(f"  answered per second, uvicorn/baseline: {throughput:.2f}x")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
