"""Partition maintenance for the monitoring tables: one partition per UTC day, created ahead, dropped
when the whole day is past retention.

Failure model, and why:
- Retention is a ``DROP TABLE`` of a day's partition, never a bulk ``DELETE``: no dead tuples, no
  vacuum debt, no hour-long transaction on the hottest table.
- ``site_uptime_daily`` (the status page's closed days) is trimmed to the hourly rollups' retention
  by a small ``DELETE`` of the day that aged out.
- Partitions are created ``DAYS_AHEAD`` days ahead, so a schedule that misses a few runs costs nothing;
  the ingest creates a missing one itself if it ever meets one (a fresh database).
- Raw samples live as long as the longest plan's retention (partitions are shared by all sites); a
  shorter plan's reads are clipped to its retention. The status page needs 90 days of hourly rollups
  whatever the plan; minute rollups serve only the last day's charts.
- Every partition, today's included, carries the parent's (site, metric, at) B-tree. Building it only
  once a day has closed (BRIN alone on the hot partition) was measured (benchmarks/metrics_ingest.py
  layout: one site per 5,000-row COPY; ``python -m benchmarks.metrics_ingest_indexes``): COPY /
  executemany went from ~3.8x to 8.8-10.2x (median ~9.3x; no index at all ~11x), not reliably the
  issue's 10x, so the simpler schema stayed.
- Idempotent (``IF NOT EXISTS``, drops of what is listed): two runs at once at worst both create the
  same partition, and one of them waits on the other's lock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from psycopg import Connection, sql

from functions.platform.ports import Row

DAYS_AHEAD = 3
STATUS_PAGE_DAYS = 90


class Retention(NamedTuple):
    table: str
    keep_days: int


def retentions(conn: Connection[Row]) -> tuple[Retention, ...]:
    row = conn.execute("SELECT max(metrics_retention_days) AS days FROM plans").fetchone()
    longest = int(row["days"]) if row and row["days"] else STATUS_PAGE_DAYS
    return (
        Retention("metric_samples", longest),
        Retention("metric_rollups_1m", 2),
        Retention("metric_rollups_1h", max(longest, STATUS_PAGE_DAYS)),
    )


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _existing(conn: Connection[Row], table: str) -> dict[date, str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    found: dict[date, str] = {}
    for row in rows:
        suffix = row["relname"].removeprefix(f"{table}_p")
        if suffix.isdigit() and len(suffix) == 8:
            found[datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC).date()] = row["relname"]
    return found


def maintain(conn: Connection[Row], now: datetime) -> dict[str, int]:
    """Create each table's partitions from its retention's start to ``DAYS_AHEAD`` days ahead; drop
    the days before. Returns how many were created and dropped."""
    today = now.astimezone(UTC).date()
    created = dropped = 0
    kept = retentions(conn)
    for table, keep_days in kept:
        first = today - timedelta(days=keep_days)
        existing = _existing(conn, table)
        for offset in range((today - first).days + DAYS_AHEAD + 1):
            day = first + timedelta(days=offset)
            if day in existing:
                continue
            start = datetime.combine(day, time(), UTC)
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(table, day)),
                    sql.Identifier(table),
                    sql.Literal(start),
                    sql.Literal(start + timedelta(days=1)),
                )
            )
            created += 1
        for day, name in existing.items():
            if day < first:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                dropped += 1
    # Each site's daily uptime (one row a site a day: ~10,000 rows a day, not worth partitions) is
    # kept as long as the hourly rollups it is summed from.
    hourly_days = next(keep_days for table, keep_days in kept if table == "metric_rollups_1h")
    hourly_first = datetime.combine(today - timedelta(days=hourly_days), time(), UTC)
    conn.execute("DELETE FROM site_uptime_daily WHERE day < %s", (hourly_first,))
    return {"created": created, "dropped": dropped}
