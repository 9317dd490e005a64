"""Incremental rollups: raw samples into 1-minute buckets, 1-minute buckets into 1-hour buckets, and
each site's hourly uptime into closed days (``site_uptime_daily``, the status page's 90-day read).

Each rollup keeps a watermark (``rollup_watermarks.done_until``): every bucket before it is built.
A run builds the buckets from ``done_until - MAX_SKEW_SECONDS`` (so a sample that arrived late, within
the skew the ingest allows, is folded into its bucket) up to the last closed bucket, and moves the
watermark. Only that window of raw data is read: partition pruning and the BRIN index on time keep
the scan to those minutes whatever the table's size.

Failure model, and why:
- A bucket is rebuilt whole from its inputs (``INSERT ... ON CONFLICT DO UPDATE``), never added to:
  a run that dies half-way, or a bucket built twice, leaves the same rows as one clean run.
- Two runs at once (a Lambda retry, an overlapping schedule): the watermark row is taken with
  ``FOR UPDATE SKIP LOCKED``; the second run sees it locked and returns without work.
- The watermark commits with the buckets it covers: either both move or neither.
- A sample older than the fold window (a backfill, an agent that was offline longer) is stored and
  kept, but the buckets it belongs to are not rebuilt: rollups cover what arrives within the skew.
- A day is built once its last hour is, in the hourly run's transaction (under the hourly watermark's
  lock, so two runs cannot interleave the two), and re-derived whenever that run rebuilt one of its
  hours: a daily row always equals the sum of its day's hourly rows. A first run builds the status
  page's 90 days from the hourly rollups already there.
- The hourly p95 is the 95th percentile of the hour's minute p95s (percentiles do not merge exactly;
  this is the usual approximation); count, min, max and sum are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from psycopg import Connection

from functions.agistaffers.services.metrics import MAX_SKEW_SECONDS
from functions.agistaffers.services.partitions import STATUS_PAGE_DAYS
from functions.platform.ports import Row, TransactionalDatabase

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# A first run (an empty watermark table) starts this far back rather than at the beginning of time.
FIRST_RUN_LOOKBACK = timedelta(hours=2)

_MINUTES_SQL = """
INSERT INTO metric_rollups_1m AS r (site_id, metric, bucket, count, min, max, sum, p95)
SELECT site_id, metric, date_trunc('minute', at), count(*), min(value), max(value), sum(value),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY value)
FROM metric_samples WHERE at >= %(start)s AND at < %(end)s
GROUP BY 1, 2, 3
ON CONFLICT (site_id, metric, bucket) DO UPDATE
SET count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum, p95 = EXCLUDED.p95
"""

_HOURS_SQL = """
INSERT INTO metric_rollups_1h AS r (site_id, metric, bucket, count, min, max, sum, p95)
SELECT site_id, metric, date_trunc('hour', bucket), sum(count), min(min), max(max), sum(sum),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY p95)
FROM metric_rollups_1m WHERE bucket >= %(start)s AND bucket < %(end)s
GROUP BY 1, 2, 3
ON CONFLICT (site_id, metric, bucket) DO UPDATE
SET count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum, p95 = EXCLUDED.p95
"""

_DAYS_SQL = """
INSERT INTO site_uptime_daily AS d (site_id, day, up, samples)
SELECT site_id, date_trunc('day', bucket, 'UTC'), sum(sum), sum(count)
FROM metric_rollups_1h WHERE metric = 'up' AND bucket >= %(start)s AND bucket < %(end)s
GROUP BY 1, 2
ON CONFLICT (site_id, day) DO UPDATE SET up = EXCLUDED.up, samples = EXCLUDED.samples
"""


class RollupRun(NamedTuple):
    name: str
    start: datetime | None  # None: nothing to do (or another run holds the watermark)
    end: datetime | None
    buckets: int


def floor_to(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _take_watermark(conn: Connection[Row], name: str, default: datetime) -> datetime | None:
    conn.execute(
        "INSERT INTO rollup_watermarks (name, done_until) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (name, default),
    )
    row = conn.execute(
        "SELECT done_until FROM rollup_watermarks WHERE name = %s FOR UPDATE SKIP LOCKED", (name,)
    ).fetchone()
    return None if row is None else row["done_until"]


def _move_watermark(conn: Connection[Row], name: str, done_until: datetime) -> None:
    conn.execute(
        "UPDATE rollup_watermarks SET done_until = greatest(done_until, %s), updated_at = now() WHERE name = %s",
        (done_until, name),
    )


def watermark(conn: Connection[Row], name: str) -> datetime | None:
    row = conn.execute("SELECT done_until FROM rollup_watermarks WHERE name = %s", (name,)).fetchone()
    return None if row is None else row["done_until"]


def roll_up_minutes(conn: Connection[Row], now: datetime) -> RollupRun:
    """Build the 1-minute buckets that closed since the last run, and rebuild the skew window before."""
    end = floor_to(now, MINUTE)
    done = _take_watermark(conn, "1m", end - FIRST_RUN_LOOKBACK)
    if done is None:
        return RollupRun("1m", None, None, 0)
    start = floor_to(done - timedelta(seconds=MAX_SKEW_SECONDS), MINUTE)
    if start >= end:
        return RollupRun("1m", None, None, 0)
    buckets = conn.execute(_MINUTES_SQL, {"start": start, "end": end}).rowcount
    _move_watermark(conn, "1m", end)
    return RollupRun("1m", start, end, buckets)


def roll_up_hours(conn: Connection[Row], minutes: RollupRun) -> RollupRun:
    """Build the hours whose minutes are all built, and rebuild an hour whose minutes ``minutes`` (the
    minute run just before) rebuilt or the skew window reaches back into."""
    minutes_done = watermark(conn, "1m")
    if minutes_done is None:
        return RollupRun("1h", None, None, 0)
    end = floor_to(minutes_done, HOUR)
    done = _take_watermark(conn, "1h", end)
    if done is None:
        return RollupRun("1h", None, None, 0)
    # The minute rollup rebuilds MAX_SKEW_SECONDS behind its watermark: an hour that window reaches
    # into may have changed since it was built.
    start = min(done, floor_to(minutes_done - timedelta(seconds=MAX_SKEW_SECONDS), HOUR))
    if minutes.start is not None:
        # That run folded late samples into minutes up to MAX_SKEW_SECONDS behind its previous watermark:
        # further back than the new watermark's window when the hour turned in between.
        start = min(start, floor_to(minutes.start, HOUR))
    if start >= end:
        return RollupRun("1h", None, None, 0)
    buckets = conn.execute(_HOURS_SQL, {"start": start, "end": end}).rowcount
    _move_watermark(conn, "1h", end)
    return RollupRun("1h", start, end, buckets)


def roll_up_days(conn: Connection[Row], hours: RollupRun) -> RollupRun:
    """Build each site's uptime for the days whose hours are all built, and re-derive a day one of
    whose hours ``hours`` (this transaction's hourly run) rebuilt. Run it after ``roll_up_hours``."""
    hours_done = watermark(conn, "1h")
    if hours_done is None:
        return RollupRun("1d", None, None, 0)
    end = floor_to(hours_done, DAY)
    done = _take_watermark(conn, "1d", end - timedelta(days=STATUS_PAGE_DAYS + 1))
    if done is None:
        return RollupRun("1d", None, None, 0)
    start = done if hours.start is None else min(done, floor_to(hours.start, DAY))
    if start >= end:
        return RollupRun("1d", None, None, 0)
    buckets = conn.execute(_DAYS_SQL, {"start": start, "end": end}).rowcount
    _move_watermark(conn, "1d", end)
    return RollupRun("1d", start, end, buckets)


class Rollups:
    """Runs both rollups; ``invalidate`` is told when new buckets were built (the dashboards' cache)."""

    def __init__(self, db: TransactionalDatabase, invalidate: Callable[[], None]) -> None:
        self._db = db
        self._invalidate = invalidate

    def run(self, now: datetime | None = None) -> list[RollupRun]:
        """The minutes in one transaction, then the hours and the days they close in another (each
        built from the one before)."""
        moment = now or datetime.now(UTC)
        with self._db.transaction() as conn:
            minutes = roll_up_minutes(conn, moment)
        with self._db.transaction() as conn:
            hours = roll_up_hours(conn, minutes)
            days = roll_up_days(conn, hours)
        if any(run.start is not None for run in (minutes, hours, days)):
            self._invalidate()
        return [minutes, hours, days]
