"""Backup and restore drill of about 1 GB of realistic rows: the measured RTO and its projection to 5 GB.

Fills fresh databases (dropped at the end) with SteppersLife users, events (with descriptions, tags
and the generated search vector) and registrations, and AGI Staffers customers, sites and minute
metrics; then runs a backup of each (pg_dump streamed to moto's S3) and the full restore drill
(download, checks, parallel pg_restore, row counts and sampled checksums, amcheck on every index,
every constraint re-evaluated, smoke queries). The fill happens once; backup + drill then run
``--rounds`` times (default 3) over the same data, and the figures are the rounds' medians (summed over
the databases), each with its spread. The baseline in the same run is the dump itself: the drill's RTO
against the time the dump took (``rto_over_dump``). ``projected_rto_s_5gb`` scales the measured RTO
linearly with the database's size (restore and verification are scans and index builds, linear in
size to first order); the seed's objective is 15 minutes (900 s).

Usage: .venv/bin/python -m benchmarks.backup_restore [--scale 1.0] [--rounds 3]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from benchmarks._common import environment, spread
from devstack.aws_local import ensure_resources
from devstack.services import embedded_pg_bin_dir, start_moto
from functions.agistaffers.services import partitions
from functions.platform.backups.composition import Backups
from functions.platform.config import AwsSettings, BackupSettings, Settings

FIVE_GB = 5e9
RTO_OBJECTIVE_S = 900

STEPPERSLIFE_FILL = (
    """INSERT INTO users (email, name, password_hash, preferences)
       SELECT 'user' || g || '@example.com', 'User ' || g, 'scrypt$' || md5(g::text),
              jsonb_build_object('categories', jsonb_build_array('salsa', 'line-dance'), 'city', 'Chicago')
         FROM generate_series(1, %(users)s) g""",
    """INSERT INTO events (user_id, title, slug, description, event_date, location, category, status, capacity,
                           published_at, tags)
       SELECT u.id, 'Stepping night ' || g, 'event-' || g,
              repeat('An evening of Chicago stepping with live DJs, lessons for beginners and a social dance. ', 8)
                || md5(g::text),
              now() + (g %% 365) * interval '1 day', 'Hall ' || (g %% 50), 'social', 'published', 1000000, now(),
              ARRAY['stepping', 'dance', 'tag' || (g %% 100)]
         FROM generate_series(1, %(events)s) g
         JOIN (SELECT id, row_number() OVER (ORDER BY email) AS n FROM users) u ON u.n = g %% 1000 + 1""",
    """INSERT INTO event_registrations (user_id, event_id, status)
       SELECT u.id, e.id, CASE WHEN (u.n + e.n) %% 10 = 0 THEN 'checked_in' ELSE 'registered' END
         FROM (SELECT id, row_number() OVER (ORDER BY email) AS n FROM users) u
         JOIN (SELECT id, row_number() OVER (ORDER BY slug) AS n FROM events) e
           ON e.n %% %(per_user)s = u.n %% %(per_user)s AND e.n <= %(spread)s""",
)
AGISTAFFERS_FILL = (
    """INSERT INTO customers (email, company_name, plan, status)
       SELECT 'owner@c' || g || '.example', 'Company ' || g, 'business', 'active'
         FROM generate_series(1, %(customers)s) g""",
    """INSERT INTO customer_sites (customer_id, domain, status, label)
       SELECT c.id, 's' || s || '.c' || c.n || '.example', 'active', 'Site ' || s
         FROM (SELECT id, row_number() OVER (ORDER BY email) AS n FROM customers) c, generate_series(1, 4) s""",
    """INSERT INTO metric_samples (site_id, metric, value, at)
       SELECT s.id, t.metric, round((random() * 100)::numeric, 2), now() - m * interval '1 minute'
         FROM (SELECT id FROM customer_sites LIMIT %(sites_with_metrics)s) s,
              (VALUES ('cpu_percent'), ('memory_percent'), ('response_time_ms')) t(metric),
              generate_series(1, %(minutes)s) m""",
)


def fill(settings: Settings, scale: float) -> None:
    sizes = {
        "users": int(100_000 * scale),
        "events": int(60_000 * scale),
        "per_user": 3_000,  # each user registers for spread / per_user = 20 events
        "spread": int(60_000 * scale),
        "customers": int(5_000 * scale),
        "sites_with_metrics": int(4_000 * scale),
        "minutes": 360,  # six hours of minute metrics
    }
    with psycopg.connect(settings.database_url_for("agistaffers"), autocommit=True, row_factory=dict_row) as conn:
        partitions.maintain(conn, datetime.now(UTC))  # the days the metrics fall on
    for database, statements in (("stepperslife", STEPPERSLIFE_FILL), ("agistaffers", AGISTAFFERS_FILL)):
        with psycopg.connect(settings.database_url_for(database), autocommit=True) as conn:
            for statement in statements:
                started = time.monotonic()
                done = conn.execute(statement.encode(), sizes)
                print(
                    f"  fill {database}: {done.rowcount:>10,} rows in {time.monotonic() - started:6.1f} s",
                    flush=True,
                )
            conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 is about 1.3 GB over both databases")
    parser.add_argument("--rounds", type=int, default=3, help="backup + drill rounds over the same data")
    args = parser.parse_args()
    moto = start_moto()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    try:
        with environment() as env:
            bin_dir = os.environ.get("PG_BIN_DIR") or (
                str(embedded_pg_bin_dir()) if env.postgres == "embedded" else None
            )
            settings = dataclasses.replace(
                env.settings,
                aws=AwsSettings(endpoint_url=moto.url),
                backup=BackupSettings(pg_bin_dir=bin_dir, restore_jobs=2),
            )
            ensure_resources(settings)
            print(f"postgres: {env.postgres}; filling (scale {args.scale})...", flush=True)
            fill(settings, args.scale)
            backups = Backups(settings)
            rounds = [run_round(backups, round_number) for round_number in range(1, args.rounds + 1)]
    finally:
        moto.stop()
    for name in ("dump_s", "restore_s", "verify_s", "rto_s"):
        print(f"{name}: {spread([figures[name] for figures in rounds])}")
    median = {name: statistics.median(figures[name] for figures in rounds) for name in rounds[0]}
    rto_values = [figures["rto_s"] for figures in rounds]
    projected = median["rto_s"] * FIVE_GB / median["db_bytes"]
    print(
        f"both: {median['db_bytes'] / 1e9:.2f} GB; median RTO {median['rto_s']:.1f} s (restore "
        f"{median['restore_s']:.1f} + verify {median['verify_s']:.1f}); projected RTO for 5 GB {projected:.0f} s "
        f"(objective {RTO_OBJECTIVE_S} s: {'met' if projected < RTO_OBJECTIVE_S else 'MISSED'}); "
        f"RTO / dump time {median['rto_s'] / median['dump_s']:.2f} (the named baseline: pg_dump of the same data)"
    )
    print(
        json.dumps(
            {
                "db_bytes": int(median["db_bytes"]),
                "dump_bytes": int(median["dump_bytes"]),
                "dump_s": round(median["dump_s"], 2),
                "download_s": round(median["download_s"], 2),
                "restore_s": round(median["restore_s"], 2),
                "verify_s": round(median["verify_s"], 2),
                "rto_s": round(median["rto_s"], 2),
                "rto_s_min": round(min(rto_values), 2),
                "rto_s_max": round(max(rto_values), 2),
                "rounds": len(rounds),
                "restore_mb_per_s": round(median["db_bytes"] / 1e6 / median["restore_s"], 1),
                "projected_rto_s_5gb": round(projected, 1),
                "rto_over_dump": round(median["rto_s"] / median["dump_s"], 2),
                "postgres": env.postgres,
            }
        )
    )


def run_round(backups: Backups, round_number: int) -> dict[str, float]:
    """One backup and full drill of every database; the figures summed over the databases."""
    totals = dict.fromkeys(("db_bytes", "dump_bytes", "dump_s", "download_s", "restore_s", "verify_s"), 0.0)
    for database in backups.databases:
        manifest = backups.create(database, "daily")
        result = backups.drill(database, dump_key=manifest.dump_key)
        if not result.succeeded:
            raise SystemExit(f"drill of {database} failed: {result.failure}")
        print(
            f"round {round_number}, {database}: database {manifest.database_bytes / 1e6:,.0f} MB, "
            f"{manifest.rows:,} rows; dump {manifest.dump_bytes / 1e6:,.0f} MB in {manifest.dump_seconds:.1f} s; "
            f"download {result.download_seconds:.1f} s, restore {result.restore_seconds:.1f} s "
            f"({result.restore_mb_per_s:.1f} MB/s), verify {result.verify_seconds:.1f} s "
            f"({result.indexes_checked} indexes, {result.tables} tables); RTO {result.rto_seconds:.1f} s",
            flush=True,
        )
        totals["db_bytes"] += manifest.database_bytes
        totals["dump_bytes"] += manifest.dump_bytes
        totals["dump_s"] += manifest.dump_seconds
        totals["download_s"] += result.download_seconds
        totals["restore_s"] += result.restore_seconds
        totals["verify_s"] += result.verify_seconds
    totals["rto_s"] = totals["restore_s"] + totals["verify_s"]
    return totals


if __name__ == "__main__":
    main()
