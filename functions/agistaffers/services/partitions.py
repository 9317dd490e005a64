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
- The (site, metric, at) B-tree is built on each day's partition once the day has closed
  (``index_closed_days``), not on the parent: every accepted sample lands in today's partition, and
  maintaining a B-tree row by row halves COPY's rate there (``python -m benchmarks.metrics_ingest_indexes``:
  COPY / executemany ~4x with it, ~10-11x with BRIN alone). Nothing reads today's samples by site: the
  rollups read a time range (BRIN), charts read the rollups. Closed days, which per-site raw reads and
  a customer's restore scan, have the B-tree; a late sample into yesterday pays it, as before.
- The B-tree is built ``CONCURRENTLY`` (late samples keep landing) newest day first, a few per run so
  one run stays bounded; a build that died (Lambda timeout, lost connection) leaves an invalid index,
  which the next run drops and builds again.
- Idempotent (``IF NOT EXISTS``, drops of what is listed): two runs at once at worst both create the
  same partition, and one of them waits on the other's lock; the second's B-tree build of a day sees
  the first's still invalid, waits for it, then builds it again: wasted work, never a missing index.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from psycopg import Connection, sql

from functions.platform.ports import Row

DAYS_AHEAD = 3
# B-trees built per run: a day at 10,000 sites is ~115 M rows, minutes of building each.
INDEXES_PER_RUN = 2
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


def btree_name(partition: str) -> str:
    return f"{partition}_site_metric_at_idx"


def index_closed_days(conn: Connection[Row], now: datetime, *, limit: int = INDEXES_PER_RUN) -> list[str]:
    """Build the (site, metric, at) B-tree of closed days' ``metric_samples`` partitions that lack a
    valid one, newest first, at most ``limit``. ``conn`` must be in autocommit mode (``CONCURRENTLY``).
    Returns the partitions indexed."""
    today = now.astimezone(UTC).date()
    valid = {
        row["relname"]
        for row in conn.execute(
            "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indisvalid AND x.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)",
            ("metric_samples",),
        ).fetchall()
    }
    existing = _existing(conn, "metric_samples")
    built: list[str] = []
    for partition in [existing[day] for day in sorted(existing, reverse=True) if day < today]:
        index = btree_name(partition)
        if index in valid:
            continue
        if len(built) == limit:
            break
        # An index of that name that is not valid is a build that died half-way: start it again.
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index)))
        conn.execute(
            sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} (site_id, metric, at)").format(
                sql.Identifier(index), sql.Identifier(partition)
            )
        )
        built.append(partition)
    return built
