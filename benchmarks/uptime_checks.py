"""Uptime checks: can one run check 10,000 sites a minute?

    python -m benchmarks.uptime_checks          # short (shared machines): 600 sites
    python -m benchmarks.uptime_checks --full   # 10,000 sites

Every site is active and due; one run (budget 0: one pass over what is due) checks them all through
the real path: the claim (``FOR UPDATE SKIP LOCKED``), the outbound guard's HTTPS request with
certificate verification (a new TLS connection per site, as with real sites), the state update in
its own transaction and the ``up``/``response_time_ms`` samples by COPY. The sites are served by one
local HTTPS server (a wildcard certificate from a throw-away CA) that answers after ``--latency-ms``
(default 150 ms: a distant web server's time to first byte), so concurrency matters as it does for
real sites. Baseline in the same run: the same path with one check at a time (``concurrency=1``), on
a sample of the sites. Figures: checks per second (median and spread over rounds) and the ratio; the
capacity a minute is checks/s x 60, to compare with the 10,000 sites a minute the issue asks for.
JSON line last.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from benchmarks._common import environment, spread
from benchmarks.metrics_ingest import _sites
from devstack.fakes.tls import ThrowAwayCa
from functions.agistaffers.composition import Container, configure
from functions.agistaffers.services import domain_events
from functions.agistaffers.services.uptime import SiteChecker, UptimeMonitor, UptimePolicy
from functions.platform.outbound import GuardedHttpClient
from shared.net import WEB_PORTS


class _Sites(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # http.server's 5 would drop a burst of new connections


def _serve(context: ssl.SSLContext, latency: float) -> _Sites:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(latency)
            body = b"<h1>ok</h1>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = _Sites(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _monitor(container: Container, address: str, ca_file: str, concurrency: int) -> UptimeMonitor:
    client = GuardedHttpClient(
        schemes=("https", "http"), ports=WEB_PORTS, allow_hosts={"127.0.0.1"}, connect_to=address, ca_file=ca_file
    )
    policy = UptimePolicy(concurrency=concurrency, timeout_seconds=30.0)
    return UptimeMonitor(
        container.db,
        domain_events.outbox,
        SiteChecker(client, timeout_seconds=policy.timeout_seconds, max_redirects=policy.max_redirects),
        store_samples=container.metrics.store,
        invalidate=lambda: None,
        flush=lambda: None,
        policy=policy,
    )


def _one_pass(url: str, monitor: UptimeMonitor, sites: int) -> float:
    """Checks per second of one run over ``sites`` due sites (the others are not due)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE uptime_checks SET next_due = CASE WHEN site_id IN "
            "(SELECT site_id FROM uptime_checks ORDER BY site_id LIMIT %s) "
            "THEN now() - interval '1 second' ELSE now() + interval '1 hour' END",
            (sites,),
        )
        conn.commit()
    started = time.perf_counter()
    counts = monitor.run(budget_seconds=0)
    elapsed = time.perf_counter() - started
    if counts["checked"] != sites or counts["failed"]:
        raise SystemExit(f"expected {sites} good checks, got {counts}")
    return sites / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="10,000 sites")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--concurrency", type=int, default=UptimePolicy.concurrency)
    args = parser.parse_args()
    site_count, baseline_count, rounds = (10_000, 40, 3) if args.full else (600, 20, 3)
    ca = ThrowAwayCa("bench CA")
    context, ca_file = ca.server_context("*.example.com"), ca.ca_file
    server = _serve(context, args.latency_ms / 1000)
    address = f"127.0.0.1:{server.server_port}"
    with environment() as env:
        container = configure(env.settings)
        url = env.settings.database_url_for("agistaffers")
        container.maintain_partitions()
        with psycopg.connect(url) as conn:
            _sites(conn, site_count)
            # The business plan's 1-minute interval: the 10,000 sites a minute.
            conn.execute("UPDATE customers SET plan = 'business'")
            conn.execute("INSERT INTO uptime_checks (site_id) SELECT id FROM customer_sites")
            conn.commit()
        print(f"postgres: {env.postgres}; {site_count} sites; answers after {args.latency_ms:.0f} ms")
        pooled = _monitor(container, address, ca_file, args.concurrency)
        sequential = _monitor(container, address, ca_file, 1)
        rates, baseline = [], []
        for _ in range(rounds):
            baseline.append(_one_pass(url, sequential, baseline_count))
            rates.append(_one_pass(url, pooled, site_count))
        print(f"checks/s, concurrency {args.concurrency}: {spread(rates)}")
        print(f"checks/s, one at a time ({baseline_count} sites): {spread(baseline)}")
        with psycopg.connect(url) as conn:
            samples = conn.execute("SELECT count(*) FROM metric_samples WHERE metric = 'up'").fetchone()
        print(f"up samples stored: {samples[0] if samples else 0}")
        container.close()
    server.shutdown()
    median, base = statistics.median(rates), statistics.median(baseline)
    print(
        json.dumps(
            {
                "benchmark": "uptime_checks",
                "full": args.full,
                "sites": site_count,
                "latency_ms": args.latency_ms,
                "concurrency": args.concurrency,
                "checks_per_s": round(median, 1),
                "sequential_checks_per_s": round(base, 1),
                "pooled_vs_sequential": round(median / base, 1),
                "sites_per_minute": round(median * 60),
                "fits_10000_a_minute": median * 60 >= 10_000,
            }
        )
    )


if __name__ == "__main__":
    main()
