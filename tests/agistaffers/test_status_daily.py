"""The status page's closed days come from ``site_uptime_daily``: each row equals its day's hourly
rollups, a late sample re-derives its (closed) day, and the page shows exactly the figures it shows
when it reads every hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from functions.agistaffers.composition import container
from functions.agistaffers.services import partitions, rollups
from functions.agistaffers.services.sites import SiteService
from tests.agistaffers.conftest import Tenants

# Hourly rollups are kept (partitions exist) from this many days before today's start: the page's
# 90-day window starts inside the seeded data.
KEPT_DAYS = partitions.STATUS_PAGE_DAYS


@pytest.fixture(autouse=True)
def _container(configured_agi_app: Any) -> None:
    """These tests drive the installed container's services directly (``container()``)."""


def _seed_hours(sql: psycopg.Connection[Any], site_id: Any, hour: datetime, seed: int) -> None:
    """Hourly 'up' rollups with uneven outages (a different pattern per site), from the first kept
    day up to ``hour``."""
    hours = (hour - rollups.floor_to(hour, rollups.DAY)) // rollups.HOUR + 24 * KEPT_DAYS
    sql.execute(
        "INSERT INTO metric_rollups_1h (site_id, metric, bucket, count, min, max, sum, p95) "
        "SELECT %s, 'up', %s - k * interval '1 hour', 60, 0, 1, 60 - (k * %s) %% 7 - (k %% 53 = 0)::int * 30, 1 "
        "FROM generate_series(1, %s) k",
        (site_id, hour, seed, hours),
    )


def _daily_sums_from_hours(sql: psycopg.Connection[Any], before: datetime) -> list[tuple[Any, ...]]:
    return sql.execute(
        "SELECT site_id, date_trunc('day', bucket, 'UTC'), sum(sum), sum(count) FROM metric_rollups_1h "
        "WHERE metric = 'up' AND bucket < %s GROUP BY 1, 2 ORDER BY 1, 2",
        (before,),
    ).fetchall()


def test_daily_uptime_equals_the_hours_and_the_page_is_unchanged(
    tenants: Tenants, sites: SiteService, sql: psycopg.Connection[Any], agistaffers_url: str
) -> None:
    hour = rollups.floor_to(datetime.now(UTC), rollups.HOUR)
    owner = tenants.owner(plan="business", company="Daily Sums")
    for index, seed in enumerate((3, 5)):
        _seed_hours(sql, sites.add(owner, f"daily{index}.example.com")["id"], hour, seed)
    sql.execute(
        "INSERT INTO metric_rollups_1m (site_id, metric, bucket, count, min, max, sum, p95) "
        "SELECT id, 'up', %s + interval '1 minute', 1, 0, 0, 0, 0 FROM customer_sites",
        (hour,),
    )
    sql.execute("INSERT INTO rollup_watermarks (name, done_until) VALUES ('1h', %s)", (hour,))
    slug = sql.execute("SELECT status_slug FROM customers WHERE id = %s", (owner.customer_id,)).fetchone()
    assert slug is not None
    pages = container().status_pages
    # Windows that start mid-day, and (the hour's start) on an hour boundary.
    moments = (hour + timedelta(minutes=37), hour, hour + timedelta(minutes=59, seconds=59))
    from_hours = [pages.load(slug[0], now=moment) for moment in moments]

    with psycopg.connect(agistaffers_url, row_factory=dict_row) as conn:
        run = rollups.roll_up_days(conn, rollups.RollupRun("1h", None, None, 0))
    today = rollups.floor_to(hour, rollups.DAY)
    assert run.end == today and run.start == today - timedelta(days=partitions.STATUS_PAGE_DAYS + 1)
    daily = sql.execute("SELECT site_id, day, up, samples FROM site_uptime_daily ORDER BY 1, 2").fetchall()
    assert len(daily) == 2 * KEPT_DAYS
    assert daily == _daily_sums_from_hours(sql, today)

    from_days = [pages.load(slug[0], now=moment) for moment in moments]
    assert from_days == from_hours
    uptimes = [site["uptime"] for page in from_days for site in page["sites"]]
    assert all(0 < value < 100 for figures in uptimes for value in figures.values())
    assert len({value for figures in uptimes for value in figures.values()}) > 4  # the windows differ


def test_a_late_sample_re_derives_its_closed_day(
    tenants: Tenants, sites: SiteService, sql: psycopg.Connection[Any]
) -> None:
    site_for_ingest = sites.add(tenants.owner(plan="business", company="Late Co"), "late.example.com")
    midnight = rollups.floor_to(datetime.now(UTC), rollups.DAY)
    yesterday = midnight - rollups.DAY
    sql.execute(
        "INSERT INTO rollup_watermarks (name, done_until) VALUES ('1m', %s)", (midnight - timedelta(minutes=10),)
    )
    ingest, token = container().metrics, site_for_ingest["ingest_token"]
    ingest.ingest(
        token, [{"metric": "up", "value": 1, "at": (midnight - timedelta(minutes=m)).timestamp()} for m in (5, 3)]
    )
    runs = container().rollups.run(now=midnight + timedelta(minutes=1, seconds=5))
    assert [run.end for run in runs] == [midnight + timedelta(minutes=1), midnight, midnight]

    def day_row() -> Any:
        return sql.execute(
            "SELECT up, samples FROM site_uptime_daily WHERE site_id = %s AND day = %s",
            (site_for_ingest["id"], yesterday),
        ).fetchone()

    assert day_row() == (2.0, 2)
    # A failed check's sample arrives late, inside the skew window, for yesterday's last minute; the next
    # run (the day's hours and day already built) folds it into the minute, the hour and the day.
    ingest.ingest(token, [{"metric": "up", "value": 0, "at": (midnight - timedelta(seconds=30)).timestamp()}])
    runs = container().rollups.run(now=midnight + timedelta(minutes=2, seconds=5))
    assert runs[2].start == yesterday
    assert day_row() == (2.0, 3)
    assert sql.execute("SELECT name FROM rollup_watermarks ORDER BY name").fetchall() == [("1d",), ("1h",), ("1m",)]
    # Nothing new: the day is not rebuilt again.
    assert container().rollups.run(now=midnight + timedelta(minutes=5, seconds=5))[2].start is None


def test_daily_uptime_is_kept_as_long_as_the_hourly_rollups(
    tenants: Tenants, sites: SiteService, sql: psycopg.Connection[Any], agistaffers_url: str
) -> None:
    site_id = sites.add(tenants.owner(plan="business", company="Kept Co"), "kept.example.com")["id"]
    today = rollups.floor_to(datetime.now(UTC), rollups.DAY)
    with psycopg.connect(agistaffers_url, row_factory=dict_row) as conn:
        hourly_days = dict(partitions.retentions(conn))["metric_rollups_1h"]
    first_kept = today - timedelta(days=hourly_days)
    sql.execute(
        "INSERT INTO site_uptime_daily (site_id, day, up, samples) VALUES (%s, %s, 1, 1), (%s, %s, 1, 1)",
        (site_id, first_kept - rollups.DAY, site_id, first_kept),
    )
    with psycopg.connect(agistaffers_url, row_factory=dict_row) as conn:
        partitions.maintain(conn, datetime.now(UTC))
    assert sql.execute("SELECT day FROM site_uptime_daily").fetchall() == [(first_kept,)]
