"""The public status page's data: a customer's sites, their current state, uptime over 24 h, 7 d,
30 d and 90 d, a 90-day bar of daily uptime, and open and recent incidents.

Uptime is the share of ``up`` samples that were 1, read from the hourly rollups (90 days of a site
is at most 2,160 rows, summed per day in SQL: ~90 rows per site reach Python), plus the minute
rollups since the hourly watermark, so the last hour counts too. A day without samples is "no data",
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

_UPTIME_SQL = """
SELECT site_id, date_trunc('day', bucket, 'UTC') AS day, sum(sum) AS up, sum(count) AS n,
       sum(sum) FILTER (WHERE bucket >= %(d24h)s) AS up_24h, sum(count) FILTER (WHERE bucket >= %(d24h)s) AS n_24h,
       sum(sum) FILTER (WHERE bucket >= %(d7d)s) AS up_7d, sum(count) FILTER (WHERE bucket >= %(d7d)s) AS n_7d,
       sum(sum) FILTER (WHERE bucket >= %(d30d)s) AS up_30d, sum(count) FILTER (WHERE bucket >= %(d30d)s) AS n_30d
FROM (
    SELECT site_id, bucket, sum, count FROM metric_rollups_1h
    WHERE metric = 'up' AND site_id = ANY(%(sites)s) AND bucket >= %(d90d)s AND bucket < %(hours_done)s
    UNION ALL
    SELECT site_id, bucket, sum, count FROM metric_rollups_1m
    WHERE metric = 'up' AND site_id = ANY(%(sites)s) AND bucket >= %(hours_done)s
) buckets
GROUP BY 1, 2
"""


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

    def load(self, slug: str) -> Any:
        """The page's data read from the rollups now (``page`` caches it); None for no such page."""
        now = datetime.now(UTC)
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
            customer = found.fetchone()
            if customer is None:
                return None  # cached like a page: probing slugs costs PostgreSQL nothing more
            sites = listed.fetchall()
            ids = [site["id"] for site in sites]
            params: dict[str, Any] = {"sites": ids, "hours_done": hours_done}
            params.update({f"d{name}": now - span for name, span in WINDOWS.items()})
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
