"""Metrics ingest, rollups and the status page on real PostgreSQL and Redis.

    python -m benchmarks.metrics_ingest          # short (shared machines): seconds
    python -m benchmarks.metrics_ingest --full   # the issue's sizes: 10,000 sites, 1,000,000 COPY rows

Figures (median and spread over rounds):
- COPY: ``copy_samples`` (the ingest's own DB part: binary COPY) of samples in batches of
  5,000 per transaction, no HTTP, into today's partition (where live samples land: BRIN only, the
  site B-tree comes once the day has closed); the baseline, in the same run, interleaved batch by
  batch: plain ``executemany`` (psycopg 3: pipelined) of rows of the same shape, in the same batches
  and the same kind of transaction: only the statement differs. Each round's samples are new
  (timestamps move on), as live agents' are.
- API: the real Chalice app through ``chalice.test.Client``, signed like the edge signs, requests of
  1,000 samples each (JSON parse, validation, token check, COPY).
- Rollup lag: every site sends one sample per metric for a minute; when the minute closes the rollup
  runs; the lag is how long that run takes (the minute's buckets readable after it). The scheduled
  rollup fires every minute, so a bucket is at most this lag plus one interval old.
- Status page: 3 sites with 90 days of hourly rollups; the page loaded from the rollups (uncached)
  and rendered, p95 (``status_page_p95_ms``: closed days from ``site_uptime_daily``, built by the
  daily rollup); the baseline, the same page before the daily rollup ran (every hour read, p95
  ``status_page_hourly_p95_ms``; ``status_page_vs_hourly`` the ratio of medians); and as served on
  repeated reads within the cache's TTL (``StatusPages.page``: Redis, then rendered), p95
  (``status_page_cached_p95_ms``).
The machine may be shared: the ratio measured in one run is what counts; absolute rates move with load.
JSON line last.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from chalice.test import Client
from psycopg.rows import dict_row

from benchmarks._common import SIGNING_SECRET, environment, percentile, spread
from functions.agistaffers.app import app
from functions.agistaffers.composition import configure
from functions.agistaffers.services import rollups
from functions.agistaffers.services.metrics import COPY_SQL, METRICS, copy_samples
from functions.agistaffers.services.sites import ingest_token_hash
from functions.agistaffers.status_page import render
from shared import envelope

BATCH = 5000
API_BATCH = 1000
# The agent's metrics, minus "up" (one per check) and a custom one: 8 a minute per site.
SITE_METRICS = sorted(METRICS)[:8]


def _sites(conn: psycopg.Connection[Any], count: int) -> list[uuid.UUID]:
    customer = conn.execute(
        "INSERT INTO customers (email, company_name, plan, status) "
        "VALUES (%s, 'Bench Hosting', 'enterprise', 'active') "
        "RETURNING id",
        (f"bench-{secrets.token_hex(4)}@example.com",),
    ).fetchone()
    assert customer is not None
    rows = conn.execute(
        "INSERT INTO customer_sites (customer_id, domain, status) "
        "SELECT %s, 'site' || n || '-' || %s || '.example.com', 'active' FROM generate_series(1, %s) n RETURNING id",
        (customer[0], secrets.token_hex(3), count),
    ).fetchall()
    conn.commit()
    return [row[0] for row in rows]


def hot_windows() -> Iterator[datetime]:
    """Successive 11-minute windows from today's midnight (UTC), one per ``_rows`` call: every call's
    samples are new (no key repeats an earlier round's, as with live agents) and land in today's
    partition, where every live sample lands (BRIN only; closed days get the site B-tree)."""
    start = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC)
    while True:
        yield start
        start += timedelta(minutes=11)


def _rows(sites: list[uuid.UUID], count: int, start: datetime, *, mixed: bool = False) -> list[tuple[Any, ...]]:
    """Samples in ``BATCH``-row batches, each one site's (as the API stores a request: 8 metrics a
    second for 625 s, in time order), sites in turn; ``mixed``: every batch spread over all sites, each
    site's 8 metrics a second."""
    per_second = len(sites) * len(SITE_METRICS) if mixed else len(SITE_METRICS)
    return [
        (
            sites[n % len(sites)] if mixed else sites[(n // BATCH) % len(sites)],
            SITE_METRICS[(n // len(sites)) % len(SITE_METRICS)] if mixed else SITE_METRICS[n % len(SITE_METRICS)],
            start + timedelta(seconds=(n if mixed else n % BATCH) // per_second),
            random.random() * 100,
            None,
        )
        for n in range(count)
    ]


INSERT_SQL = "INSERT INTO metric_samples (site_id, metric, at, value, labels) VALUES (%s, %s, %s, %s, %s)"


def bench_copy_and_executemany(
    url: str, copy_rows: list[tuple[Any, ...]], baseline_rows: list[tuple[Any, ...]]
) -> tuple[float, float]:
    """Rows per second by COPY and by the baseline (plain ``executemany``), one ``BATCH`` per
    transaction each, interleaved batch by batch on one connection (each baseline batch followed by
    its share of COPY batches), so both see the machine in the same state: a shared machine's load
    moves within a second."""
    copy_batches = [copy_rows[offset : offset + BATCH] for offset in range(0, len(copy_rows), BATCH)]
    baseline_batches = [baseline_rows[offset : offset + BATCH] for offset in range(0, len(baseline_rows), BATCH)]
    copy_s = baseline_s = 0.0
    copied = 0
    with psycopg.connect(url) as conn:
        for index, batch in enumerate(baseline_batches):
            started = time.perf_counter()
            with conn.cursor() as cursor:
                cursor.executemany(INSERT_SQL, batch)
            conn.commit()
            baseline_s += time.perf_counter() - started
            share = (index + 1) * len(copy_batches) // len(baseline_batches)
            for copy_batch in copy_batches[copied:share]:
                started = time.perf_counter()
                copy_samples(conn, copy_batch)  # type: ignore[arg-type]
                conn.commit()
                copy_s += time.perf_counter() - started
            copied = share
    return len(copy_rows) / copy_s, len(baseline_rows) / baseline_s


def bench_api(url: str, sites: list[uuid.UUID], requests: int) -> float:
    token = "agi_ingest_bench_" + secrets.token_hex(16)
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE customer_sites SET ingest_token_hash = %s WHERE id = %s", (ingest_token_hash(token), sites[0])
        )
        conn.commit()
    now = time.time()
    bodies = [
        json.dumps(
            {
                "samples": [
                    {"metric": SITE_METRICS[n % 8], "value": random.random() * 100, "at": now - n % 60}
                    for n in range(API_BATCH)
                ]
            }
        ).encode()
        for _ in range(requests)
    ]
    with Client(app) as client:
        started = time.perf_counter()
        for body in bodies:
            headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
            headers.update(
                envelope.sign(
                    SIGNING_SECRET, method="POST", path="/metrics", now=int(time.time()), identity=None, body=body
                )
            )
            response = client.http.post("/metrics", headers=headers, body=body)
            assert response.status_code == 200, response.body
            assert json.loads(response.body)["accepted"] == API_BATCH
        return requests * API_BATCH / (time.perf_counter() - started)


def bench_rollup_lag(container: Any, url: str, sites: list[uuid.UUID], minutes: int) -> list[float]:
    """Each minute: every site posts one sample per metric, then the rollup runs as the minute closes."""
    now = rollups.floor_to(datetime.now(UTC), rollups.MINUTE)
    first = now - timedelta(minutes=minutes)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM rollup_watermarks")
        conn.execute("INSERT INTO rollup_watermarks (name, done_until) VALUES ('1m', %s)", (first,))
        conn.commit()
    lags = []
    for minute in range(minutes):
        start = first + timedelta(minutes=minute)
        rows = [
            (site, metric, start + timedelta(seconds=random.random() * 59), random.random() * 100, None)
            for site in sites
            for metric in SITE_METRICS
        ]
        with psycopg.connect(url) as conn:
            for offset in range(0, len(rows), BATCH):
                copy_samples(conn, rows[offset : offset + BATCH])  # type: ignore[arg-type]
            conn.commit()
        started = time.perf_counter()
        container.rollups.run(now=start + timedelta(minutes=1))
        lags.append(time.perf_counter() - started)
    return lags


def _page_ms(load: Callable[[], Any]) -> float:
    started = time.perf_counter()
    render(load())
    return (time.perf_counter() - started) * 1000


def bench_status_page(container: Any, url: str, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Milliseconds per page: loaded from the hourly rollups alone (the baseline: before the daily
    rollup's first run), loaded with the closed days from ``site_uptime_daily``, and as served
    (cached) on repeats."""
    with psycopg.connect(url) as conn:
        sites = _sites(conn, 3)
        hour_now = rollups.floor_to(datetime.now(UTC), rollups.HOUR)
        for site in sites:
            conn.execute(
                "INSERT INTO metric_rollups_1h (site_id, metric, bucket, count, min, max, sum, p95) "
                "SELECT %s, 'up', %s - n * interval '1 hour', 60, 0, 1, 60 - (n %% 97 = 0)::int, 1 "
                "FROM generate_series(1, 24 * 90) n",
                (site, hour_now),
            )
        conn.execute(
            "INSERT INTO rollup_watermarks (name, done_until) VALUES ('1h', %s) "
            "ON CONFLICT (name) DO UPDATE SET done_until = EXCLUDED.done_until",
            (hour_now,),
        )
        conn.execute("DELETE FROM rollup_watermarks WHERE name = '1d'")
        slug = conn.execute(
            "SELECT status_slug FROM customers WHERE company_name = 'Bench Hosting' ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        conn.commit()
        # Closed days' partitions have statistics by the time anyone reads them (autovacuum analyses
        # after inserts); without them the planner guesses one row per partition.
        conn.execute("ANALYZE metric_rollups_1h")
    assert slug is not None
    pages, page_slug = container.status_pages, slug[0]
    from_hours = [_page_ms(lambda: pages.load(page_slug)) for _ in range(rounds)]
    with psycopg.connect(url, row_factory=dict_row) as rows_conn:
        # The hourly run's daily rollup, first run: the 90 closed days from the hourly rollups.
        rollups.roll_up_days(rows_conn, rollups.RollupRun("1h", None, None, 0))
        rows_conn.commit()
        rows_conn.execute("ANALYZE site_uptime_daily")
    uncached = [_page_ms(lambda: pages.load(page_slug)) for _ in range(rounds)]
    cached = [_page_ms(lambda: pages.page(page_slug)) for _ in range(rounds)]  # Redis after the first
    return from_hours, uncached, cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (10,000 sites, 1,000,000 COPY rows)")
    args = parser.parse_args()
    copy_rows, exec_rows, api_requests, site_count, minutes, page_rounds, rounds = (
        (1_000_000, 50_000, 100, 10_000, 3, 200, 5) if args.full else (100_000, 20_000, 10, 1_000, 2, 100, 5)
    )
    random.seed(7)
    with environment() as env:
        container = configure(env.settings)
        url = env.settings.database_url_for("agistaffers")
        container.maintain_partitions()
        with psycopg.connect(url) as conn:
            sites = _sites(conn, site_count)
        windows = hot_windows()
        print(f"postgres: {env.postgres}; {site_count} sites; COPY SQL: {COPY_SQL}")
        copy_rates, exec_rates, mixed_ratios = [], [], []
        for _ in range(rounds):
            copy_rate, exec_rate = bench_copy_and_executemany(
                url, _rows(sites, copy_rows, next(windows)), _rows(sites, exec_rows, next(windows))
            )
            copy_rates.append(copy_rate)
            exec_rates.append(exec_rate)
            mixed_copy, mixed_exec = bench_copy_and_executemany(
                url,
                _rows(sites, copy_rows, next(windows), mixed=True),
                _rows(sites, exec_rows, next(windows), mixed=True),
            )
            mixed_ratios.append(mixed_copy / mixed_exec)
        print(f"COPY rows/s:        {spread(copy_rates)}")
        print(f"executemany rows/s: {spread(exec_rates)}")
        # Each round's COPY and executemany batches ran interleaved: their ratio is robust to the load of the moment.
        ratios = [copy_rate / exec_rate for copy_rate, exec_rate in zip(copy_rates, exec_rates, strict=True)]
        print(f"COPY / executemany per round: {spread(ratios)}")
        print(f"the same with every batch spread over all {site_count} sites: {spread(mixed_ratios)}")
        api_rates = [bench_api(url, sites, api_requests) for _ in range(rounds)]
        print(f"API rows/s ({API_BATCH} per request): {spread(api_rates)}")
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE metric_samples, metric_rollups_1m, metric_rollups_1h")
            conn.commit()
        lags = bench_rollup_lag(container, url, sites, minutes)
        print(f"rollup lag s ({site_count} sites x {len(SITE_METRICS)} metrics a minute): {spread(lags)}")
        hourly_page, page, cached_page = bench_status_page(container, url, page_rounds)
        print(
            f"status page ms (uncached, 3 sites x 90 days, every hour read: baseline): {spread(hourly_page)}, "
            f"p95 {percentile(hourly_page, 0.95):.2f}"
        )
        print(
            f"status page ms (uncached, closed days from site_uptime_daily): {spread(page)}, "
            f"p95 {percentile(page, 0.95):.2f}"
        )
        print(f"status page ms (served, cached): {spread(cached_page)}, p95 {percentile(cached_page, 0.95):.2f}")
        container.close()
    copy_median = sorted(copy_rates)[len(copy_rates) // 2]
    exec_median = sorted(exec_rates)[len(exec_rates) // 2]
    print(
        json.dumps(
            {
                "benchmark": "metrics_ingest",
                "full": args.full,
                "sites": site_count,
                "copy_rows_per_s": round(copy_median),
                "executemany_rows_per_s": round(exec_median),
                "copy_vs_executemany": round(statistics.median(ratios), 1),
                "copy_vs_executemany_mixed_sites": round(statistics.median(mixed_ratios), 1),
                "api_rows_per_s": round(sorted(api_rates)[len(api_rates) // 2]),
                "rollup_lag_s": round(max(lags), 3),
                "status_page_p95_ms": round(percentile(page, 0.95), 2),
                "status_page_hourly_p95_ms": round(percentile(hourly_page, 0.95), 2),
                "status_page_vs_hourly": round(statistics.median(hourly_page) / statistics.median(page), 1),
                "status_page_cached_p95_ms": round(percentile(cached_page, 0.95), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
