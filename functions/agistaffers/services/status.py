"""The public status page's data: a customer's sites, their current state, uptime over 24 h, 7 d,
30 d and 90 d, a 90-day bar of daily uptime, and open and recent incidents.

Uptime is the share of ``up`` samples that were 1, read from the rollups: closed days from each
site's daily sums (``site_uptime_daily``, at most 90 rows a site instead of ~2,160 hourly ones), the
days a window starts in and the hours since the daily watermark from the hourly rollups, and the
minute rollups since the hourly watermark, so the last hour counts too. The figures are exactly the
hourly rollups' sums (a daily row is its hours' sum; ``up`` sums are whole numbers, so no rounding
differs), summed per day in SQL: ~90 rows per site reach Python. A day without samples is "no data",
never counted as up. The page is cached per customer slug and rollups version, like the dashboards.

Nothing here needs a session: an unknown slug and a cancelled customer are both ``NotFound``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from functions.agistaffers.cache_policy import SERVICE, TTL_DASHBOARD
from functions.agistaffers.services.dashboards import ROLLUPS_FAMILY
from functions.agistaffers.services.rollups import watermark
from functions.platform import jsonable
from functions.platform.cache import Cache, cache_key
from functions.platform.ports import TransactionalDatabase
from shared.errors import NotFound

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
BAR_DAYS = 90
RECENT_INCIDENTS = timedelta(days=14)
CURRENT_WITHIN = timedelta(minutes=10)

# The page's hourly reads: the day each window's start falls in (4), then the hours since the daily
# rollup's watermark. A fixed number of ranges keeps one prepared statement; an unused one is empty.
_HOUR_RANGES = len(WINDOWS) + 1
_HOURS_BRANCH = """
    SELECT site_id, bucket, sum, count FROM metric_rollups_1h
    WHERE metric = 'up' AND site_id = ANY(%(sites)s) AND bucket >= %(from_{n})s AND bucket < %(to_{n})s"""
_UPTIME_SQL = (
    """
SELECT site_id, date_trunc('day', bucket, 'UTC') AS day, sum(sum) AS up, sum(count) AS n,
       sum(sum) FILTER (WHERE bucket >= %(d24h)s) AS up_24h, sum(count) FILTER (WHERE bucket >= %(d24h)s) AS n_24h,
       sum(sum) FILTER (WHERE bucket >= %(d7d)s) AS up_7d, sum(count) FILTER (WHERE bucket >= %(d7d)s) AS n_7d,
       sum(sum) FILTER (WHERE bucket >= %(d30d)s) AS up_30d, sum(count) FILTER (WHERE bucket >= %(d30d)s) AS n_30d
FROM (
    SELECT site_id, day AS bucket, up AS sum, samples AS count FROM site_uptime_daily
    WHERE site_id = ANY(%(sites)s) AND day >= %(days_from)s AND day < %(days_done)s AND day <> ALL(%(split_days)s)
    UNION ALL"""
    + "\n    UNION ALL".join(_HOURS_BRANCH.format(n=n) for n in range(_HOUR_RANGES))
    + """
    UNION ALL
    SELECT site_id, bucket, sum, count FROM metric_rollups_1m
    WHERE metric = 'up' AND site_id = ANY(%(sites)s) AND bucket >= %(hours_done)s
) buckets
GROUP BY 1, 2
"""
)


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def uptime_ranges(now: datetime, days_done: datetime | None, hours_done: datetime) -> dict[str, Any]:
    """Which closed days the page reads from ``site_uptime_daily`` and which hours from the hourly
    rollups, so that the sums are exactly the hourly rollups' over ``WINDOWS``: a day is read whole
    only if every window's start lies outside it; the day a window starts in is read by the hour."""
    starts = {f"d{name}": now - span for name, span in WINDOWS.items()}
    oldest = starts["d90d"]
    # Days before the daily watermark are built; none if the daily rollup has not run yet.
    days_done = max(oldest, min(days_done or oldest, hours_done))
    split_days = sorted({_day_start(start) for start in starts.values()})
    ranges = [(max(day, oldest), min(day + timedelta(days=1), days_done)) for day in split_days]
    ranges.append((days_done, hours_done))
    ranges += [(hours_done, hours_done)] * (_HOUR_RANGES - len(ranges))  # windows starting on one day
    params: dict[str, Any] = {
        "days_from": _day_start(oldest) + timedelta(days=1),
        "days_done": days_done,
        "split_days": split_days,
        "hours_done": hours_done,
        **starts,
    }
    for n, (start, end) in enumerate(ranges):
        params[f"from_{n}"], params[f"to_{n}"] = start, max(start, end)
    return params


def status_key(slug: str, version: int) -> str:
    return cache_key(SERVICE, "status", slug, version)


class StatusPages:
    def __init__(self, db: TransactionalDatabase, cache: Cache) -> None:
        self._db = db
        self._cache = cache

    def page(self, slug: str) -> dict[str, Any]:
        key = status_key(slug, self._cache.version(SERVICE, ROLLUPS_FAMILY))
        value, _ = self._cache.get_or_load(key, TTL_DASHBOARD, lambda: self.load(slug))
        if value is None:
            raise NotFound("no such status page", code="status_page_not_found")
        return value  # type: ignore[no-any-return]

    def load(self, slug: str, now: datetime | None = None) -> Any:
        """The page's data read from the rollups (``page`` caches it); None for no such page."""
        now = now or datetime.now(UTC)
        with self._db.transaction() as conn:
            # Two round trips in all (pipeline mode): who and which sites, then everything about them.
            with conn.pipeline():
                found = conn.execute(
                    "SELECT id, company_name FROM customers WHERE status_slug = %s AND status <> 'cancelled'", (slug,)
                )
                listed = conn.execute(
                    "SELECT s.id, s.domain, s.label FROM customer_sites s JOIN customers c ON c.id = s.customer_id "
                    "WHERE c.status_slug = %s AND c.status <> 'cancelled' AND s.status <> 'deleted' "
                    "ORDER BY coalesce(s.label, s.domain)",
                    (slug,),
                )
                hours_done = watermark(conn, "1h") or now - timedelta(days=BAR_DAYS)
                days_done = watermark(conn, "1d")
            customer = found.fetchone()
            if customer is None:
                return None  # cached like a page: probing slugs costs PostgreSQL nothing more
            sites = listed.fetchall()
            ids = [site["id"] for site in sites]
            params = {"sites": ids, **uptime_ranges(now, days_done, hours_done)}
            with conn.pipeline():
                # Planning the uptime query over ~91 daily partitions cost as much as running it: a
                # prepared generic plan prunes them at execution instead, with no planning per page.
                conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                by_day = conn.execute(_UPTIME_SQL, params, prepare=True)
                latest = conn.execute(
                    "SELECT DISTINCT ON (site_id) site_id, sum / count AS up FROM metric_rollups_1m "
                    "WHERE metric = 'up' AND site_id = ANY(%s) AND bucket >= %s ORDER BY site_id, bucket DESC",
                    (ids, now - CURRENT_WITHIN),
                )
                alerting = conn.execute(
                    "SELECT site_id, count(*) AS n FROM alerts "
                    "WHERE state = 'firing' AND site_id = ANY(%s) GROUP BY site_id",
                    (ids,),
                )
                # An open downtime incident is the uptime checks' verdict, ahead of the next rollup.
                down_now = conn.execute(
                    "SELECT site_id FROM incidents "
                    "WHERE kind = 'downtime' AND resolved_at IS NULL AND site_id = ANY(%s)",
                    (ids,),
                )
                recent = conn.execute(
                    "SELECT i.id, i.site_id, coalesce(s.label, s.domain) AS site_name, i.kind, i.title, "
                    "i.opened_at, i.resolved_at FROM incidents i "
                    "JOIN customer_sites s ON s.id = i.site_id WHERE i.site_id = ANY(%s) "
                    "AND (i.resolved_at IS NULL OR i.resolved_at >= %s) ORDER BY i.opened_at DESC LIMIT 20",
                    (ids, now - RECENT_INCIDENTS),
                )
            days, current, firing, down, incidents = (
                cursor.fetchall() for cursor in (by_day, latest, alerting, down_now, recent)
            )
        return jsonable.json_ready(
            {
                "company_name": customer["company_name"],
                "generated_at": now,
                "sites": [
                    _site(
                        site,
                        days,
                        current,
                        firing={row["site_id"]: row["n"] for row in firing},
                        down={row["site_id"] for row in down},
                        now=now,
                    )
                    for site in sites
                ],
                "incidents": incidents,
            }
        )


def _ratio(up: Any, n: Any) -> float | None:
    return None if not n else round(100.0 * float(up) / float(n), 3)


def _site(
    site: dict[str, Any],
    days: list[dict[str, Any]],
    current: list[dict[str, Any]],
    *,
    firing: dict[Any, int],
    down: set[Any],
    now: datetime,
) -> dict[str, Any]:
    own = [row for row in days if row["site_id"] == site["id"]]
    totals = {name: [0.0, 0] for name in WINDOWS}
    by_day: dict[str, float | None] = {}
    for row in own:
        by_day[row["day"].astimezone(UTC).date().isoformat()] = _ratio(row["up"], row["n"])
        totals["90d"][0] += row["up"]
        totals["90d"][1] += row["n"]
        for name in ("24h", "7d", "30d"):
            if row[f"n_{name}"]:
                totals[name][0] += row[f"up_{name}"]
                totals[name][1] += row[f"n_{name}"]
    today = now.date()
    bar = [
        {"day": day, "uptime": by_day.get(day)}
        for day in ((today - timedelta(days=offset)).isoformat() for offset in range(BAR_DAYS - 1, -1, -1))
    ]
    latest = next((row["up"] for row in current if row["site_id"] == site["id"]), None)
    if site["id"] in down:
        state = "down"
    elif latest is None:
        state = "unknown"
    elif latest == 0:
        state = "down"
    elif latest < 1 or firing.get(site["id"]):
        state = "degraded"
    else:
        state = "operational"
    return {
        "id": site["id"],
        "name": site["label"] or site["domain"],
        "domain": site["domain"],
        "state": state,
        "uptime": {name: _ratio(up, n) for name, (up, n) in totals.items()},
        "bar": bar,
    }
