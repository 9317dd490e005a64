"""Dashboard reads from the rollups, cached in Redis under the seed's keys and TTLs.

Every key carries the version of the ``rollups`` family, which each rollup run (and each alert state
change) bumps: a read after new buckets were built misses and reloads; between runs, readers share
one load (the platform cache's single-flight). Redis down: reads go to PostgreSQL (the cache's rule).

Access: a customer's users read their own sites (another's is 404, as for the site itself); the
overview of every site is staff's. A range longer than the customer's plan retention is clipped to it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from functions.agistaffers.cache_policy import SERVICE, TTL_DASHBOARD, TTL_METRICS_AGGREGATE
from functions.agistaffers.services.accounts import Actor, require_customer
from functions.agistaffers.services.sites import SiteService
from functions.platform import jsonable
from functions.platform.cache import Cache, cache_key
from functions.platform.ports import TransactionalDatabase
from shared.errors import Forbidden, ValidationFailed

ROLLUPS_FAMILY = "rollups"
# A range and the rollup it is read from: minute buckets for a day, hour buckets beyond.
RANGES = {
    "1h": (timedelta(hours=1), "metric_rollups_1m"),
    "24h": (timedelta(hours=24), "metric_rollups_1m"),
    "7d": (timedelta(days=7), "metric_rollups_1h"),
    "30d": (timedelta(days=30), "metric_rollups_1h"),
    "90d": (timedelta(days=90), "metric_rollups_1h"),
}
LATEST_WITHIN = timedelta(minutes=10)


def site_metrics_key(site_id: str, range_name: str, version: int) -> str:
    # The seed's key (agistaffers:metrics:site:{id}:v1), with the range and the rollups' version.
    return cache_key(SERVICE, "metrics", f"site:{site_id}:{range_name}", version)


def overview_key(version: int) -> str:
    return cache_key("monitoring", "dashboard", "overview", version)


def customer_key(customer_id: str, version: int) -> str:
    return cache_key(SERVICE, "dashboard", f"customer:{customer_id}", version)


class Dashboards:
    def __init__(self, db: TransactionalDatabase, cache: Cache, sites: SiteService) -> None:
        self._db = db
        self._cache = cache
        self._sites = sites

    def invalidate(self) -> None:
        """New rollups or alert states: every dashboard read misses from now on."""
        self._cache.bump(SERVICE, ROLLUPS_FAMILY)

    def _version(self) -> int:
        return self._cache.version(SERVICE, ROLLUPS_FAMILY)

    def site_metrics(self, actor: Actor, site_id: Any, range_name: str = "24h") -> dict[str, Any]:
        """Each metric's buckets over the range (count, min, max, avg, p95), oldest first."""
        if range_name not in RANGES:
            raise ValidationFailed(f"range is one of {', '.join(RANGES)}", code="invalid_range")
        site = self._sites.get(actor, site_id)  # the access check: 404 for another customer's site
        key = site_metrics_key(str(site["id"]), range_name, self._version())
        value, hit = self._cache.get_or_load(
            key, TTL_METRICS_AGGREGATE, lambda: self._load_site_metrics(site["id"], range_name)
        )
        return {**value, "cache": "hit" if hit else "miss"}

    def _load_site_metrics(self, site_id: Any, range_name: str) -> Any:
        span, table = RANGES[range_name]
        with self._db.transaction() as conn:
            plan = conn.execute(
                "SELECT p.metrics_retention_days AS days FROM customer_sites s "
                "JOIN customers c ON c.id = s.customer_id "
                "JOIN plans p ON p.name = c.plan WHERE s.id = %s",
                (site_id,),
            ).fetchone()
            now = datetime.now(UTC)
            since = now - min(span, timedelta(days=plan["days"] if plan else 1))
            # ``table`` comes from RANGES, never from the request.
            rows = conn.execute(
                f"SELECT metric, bucket, count, min, max, sum / count AS avg, p95 FROM {table} "
                "WHERE site_id = %s AND bucket >= %s ORDER BY metric, bucket",
                (site_id, since),
            ).fetchall()
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            series.setdefault(row.pop("metric"), []).append(row)
        return jsonable.json_ready(
            {
                "site_id": str(site_id),
                "range": range_name,
                "resolution": "1m" if table.endswith("1m") else "1h",
                "since": since.isoformat(),
                "series": series,
            }
        )

    def customer_overview(self, actor: Actor) -> dict[str, Any]:
        """The customer's sites, each with its latest value per metric and its firing alerts."""
        customer_id = require_customer(actor)
        key = customer_key(customer_id, self._version())
        value, hit = self._cache.get_or_load(key, TTL_DASHBOARD, lambda: self._load_customer(customer_id))
        return {**value, "cache": "hit" if hit else "miss"}

    def _load_customer(self, customer_id: str) -> Any:
        with self._db.transaction() as conn:
            customer = conn.execute("SELECT status_slug FROM customers WHERE id = %s", (customer_id,)).fetchone()
            sites = conn.execute(
                "SELECT s.id, s.domain, s.label, s.status, "
                "(SELECT count(*) FROM alerts a WHERE a.site_id = s.id AND a.state = 'firing') AS firing "
                "FROM customer_sites s WHERE s.customer_id = %s AND s.status <> 'deleted' ORDER BY s.domain",
                (customer_id,),
            ).fetchall()
            latest = conn.execute(
                "SELECT DISTINCT ON (m.site_id, m.metric) m.site_id, m.metric, m.bucket, m.sum / m.count AS value "
                "FROM metric_rollups_1m m WHERE m.site_id = ANY(%s) AND m.bucket >= %s "
                "ORDER BY m.site_id, m.metric, m.bucket DESC",
                ([site["id"] for site in sites], datetime.now(UTC) - LATEST_WITHIN),
            ).fetchall()
        values: dict[Any, dict[str, Any]] = {}
        for row in latest:
            values.setdefault(row["site_id"], {})[row["metric"]] = {"value": row["value"], "at": row["bucket"]}
        return jsonable.json_ready(
            {
                "status_page": f"/status/{customer['status_slug']}" if customer else None,
                "sites": [{**site, "latest": values.get(site["id"], {})} for site in sites],
            }
        )

    def staff_overview(self, actor: Actor) -> dict[str, Any]:
        """Every site's state at a glance: counts by status, alerts by state, open incidents, intake."""
        if not actor.is_staff:
            raise Forbidden("the overview is for staff", code="staff_only")
        value, hit = self._cache.get_or_load(overview_key(self._version()), TTL_DASHBOARD, self._load_overview)
        return {**value, "cache": "hit" if hit else "miss"}

    def _load_overview(self) -> Any:
        with self._db.transaction() as conn:
            sites = conn.execute("SELECT status, count(*) AS n FROM customer_sites GROUP BY status").fetchall()
            alerts = conn.execute("SELECT state, count(*) AS n FROM alerts GROUP BY state").fetchall()
            incidents = conn.execute(
                "SELECT i.id, i.site_id, s.domain, i.kind, i.title, i.opened_at, i.peak, i.acknowledged_at "
                "FROM incidents i JOIN customer_sites s ON s.id = i.site_id WHERE i.resolved_at IS NULL "
                "ORDER BY i.opened_at DESC LIMIT 50"
            ).fetchall()
            intake = conn.execute(
                "SELECT bucket, sum(count) AS samples, count(DISTINCT site_id) AS sites FROM metric_rollups_1m "
                "WHERE bucket >= %s GROUP BY bucket ORDER BY bucket DESC LIMIT 1",
                (datetime.now(UTC) - LATEST_WITHIN,),
            ).fetchone()
        return jsonable.json_ready(
            {
                "sites": {row["status"]: row["n"] for row in sites},
                "alerts": {row["state"]: row["n"] for row in alerts},
                "open_incidents": incidents,
                "last_minute": intake,
            }
        )
