"""Alert evaluation: each (rule, site) has one alert whose state moves
``inactive → pending → firing → resolved`` on the minute rollups; every firing is an incident (when it
fired, when it resolved, its peak), and every change to or from ``firing`` is one notification.

The value judged is the average of the site's metric in the newest built minute bucket (within the
last ``STALE_AFTER``); no recent value counts as no breach, so an agent that stops reporting resolves
its alerts instead of freezing them firing (an uptime alert covers the silence).

Failure model, and why:
- Two evaluators at once (a Lambda retry, an overlapping schedule): each takes the alerts it judges
  with ``FOR UPDATE SKIP LOCKED``, so an alert is judged by one of them; a later run sees the state
  the first committed and finds nothing to change.
- Exactly one notification per state change: it is an outbox row written in the transaction that
  changes the state, with ``dedup_key = alert:{incident}:{state}``; the outbox's unique index refuses
  a second one even if the same change were computed twice, and a rollback takes both back.
- A resolution is never lost: it is a state change like firing, written the same way, and an alert
  cannot fire again before it resolved (one open incident per alert).
- Flapping is damped by ``for`` (a breach must last that long before firing) and ``keep_firing_for``
  (a firing alert resolves only after that long without a breach). A rule with short durations can
  still flap, so the alert itself is the last line: one that fired ``FLAP_FIRINGS`` times within
  ``FLAP_WINDOW`` keeps firing until ``FLAP_HOLD`` without a breach (at least), so a metric flipping
  every minute costs at most two fire/resolve pairs an hour, then one incident that spans the flapping.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from functions.agistaffers.services.domain_events import ALERT_TOPIC
from functions.agistaffers.services.rollups import watermark
from functions.platform.outbox import Outbox
from functions.platform.ports import Row, TransactionalDatabase

STALE_AFTER = timedelta(minutes=3)
FLAP_FIRINGS = 2
FLAP_WINDOW = timedelta(hours=1)
FLAP_HOLD = timedelta(minutes=10)
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

# One alert per (rule, site) for every rule that applies: a site's own rule for a metric and
# comparison replaces its plan's default.
_ENSURE_ALERTS = """
INSERT INTO alerts (rule_id, site_id)
SELECT r.id, s.id
FROM customer_sites s
JOIN customers c ON c.id = s.customer_id
JOIN alert_rules r ON r.site_id = s.id OR (r.plan = c.plan AND NOT EXISTS (
    SELECT 1 FROM alert_rules own WHERE own.site_id = s.id AND own.metric = r.metric AND own.comparison = r.comparison))
WHERE s.status <> 'deleted'
ON CONFLICT (rule_id, site_id) DO NOTHING
"""

_CANDIDATES = """
SELECT a.id, a.site_id, a.state, a.pending_since, a.last_breach_at, a.incident_id,
       r.metric, r.comparison, r.threshold, r.for_seconds, r.keep_firing_for_seconds,
       s.domain, latest.value
FROM alerts a
JOIN alert_rules r ON r.id = a.rule_id
JOIN customer_sites s ON s.id = a.site_id AND s.status <> 'deleted'
LEFT JOIN LATERAL (
    SELECT m.sum / m.count AS value FROM metric_rollups_1m m
    WHERE m.site_id = a.site_id AND m.metric = r.metric AND m.bucket >= %(since)s AND m.bucket < %(until)s
    ORDER BY m.bucket DESC LIMIT 1
) latest ON TRUE
WHERE latest.value IS NOT NULL OR a.state IN ('pending', 'firing')
FOR UPDATE OF a SKIP LOCKED
"""


class AlertEvaluator:
    def __init__(self, db: TransactionalDatabase, outbox: Outbox, invalidate: Callable[[], None]) -> None:
        self._db = db
        self._outbox = outbox
        self._invalidate = invalidate  # told after a state changed (dashboards and status pages show states)

    def evaluate(self, now: datetime | None = None) -> dict[str, int]:
        """Judge every alert that has a recent value or is pending/firing; returns transition counts."""
        moment = now or datetime.now(UTC)
        counts = {"evaluated": 0, "pending": 0, "firing": 0, "resolved": 0, "inactive": 0}
        with self._db.transaction() as conn:
            conn.execute(_ENSURE_ALERTS)
            until = watermark(conn, "1m")
            if until is None:
                return counts
            for row in conn.execute(_CANDIDATES, {"since": until - STALE_AFTER, "until": until}).fetchall():
                counts["evaluated"] += 1
                new_state = self._judge(conn, row, moment)
                if new_state is not None:
                    counts[new_state] += 1
        if any(counts[state] for state in ("pending", "firing", "resolved", "inactive")):
            self._invalidate()
        return counts

    def _judge(self, conn: Connection[Row], alert: Row, now: datetime) -> str | None:
        value = alert["value"]
        breach = value is not None and COMPARE[alert["comparison"]](value, alert["threshold"])
        state = alert["state"]
        if breach:
            if state == "firing":
                conn.execute(
                    "UPDATE alerts SET value = %s, last_breach_at = %s, evaluated_at = %s WHERE id = %s",
                    (value, now, now, alert["id"]),
                )
                conn.execute(
                    "UPDATE incidents SET peak = greatest(peak, %s) WHERE id = %s", (value, alert["incident_id"])
                )
                return None
            pending_since = alert["pending_since"] if state == "pending" else now
            if now - pending_since >= timedelta(seconds=alert["for_seconds"]):
                return self._fire(conn, alert, value, pending_since, now)
            self._set(conn, alert["id"], "pending", value, now, pending_since=pending_since)
            return None if state == "pending" else "pending"
        if state == "pending":
            self._set(conn, alert["id"], "inactive", value, now)
            return "inactive"
        if state == "firing":
            quiet_for = now - (alert["last_breach_at"] or now)
            if quiet_for >= timedelta(seconds=alert["keep_firing_for_seconds"]) and (
                quiet_for >= FLAP_HOLD or not self._flapping(conn, alert["id"], now)
            ):
                return self._resolve(conn, alert, value, now)
        conn.execute("UPDATE alerts SET value = %s, evaluated_at = %s WHERE id = %s", (value, now, alert["id"]))
        return None

    @staticmethod
    def _flapping(conn: Connection[Row], alert_id: Any, now: datetime) -> bool:
        """Whether the alert fired ``FLAP_FIRINGS`` times (this firing included) within ``FLAP_WINDOW``."""
        fired = conn.execute(
            "SELECT count(*) AS n FROM incidents WHERE alert_id = %s AND opened_at > %s",
            (alert_id, now - FLAP_WINDOW),
        ).fetchone()
        return fired is not None and int(fired["n"]) >= FLAP_FIRINGS

    @staticmethod
    def _set(
        conn: Connection[Row], alert_id: Any, state: str, value: Any, now: datetime, *, pending_since: Any = None
    ) -> None:
        conn.execute(
            "UPDATE alerts SET state = %s, value = %s, pending_since = %s, evaluated_at = %s WHERE id = %s",
            (state, value, pending_since, now, alert_id),
        )

    def _fire(self, conn: Connection[Row], alert: Row, value: float, since: datetime, now: datetime) -> str:
        title = f"{alert['metric']} {alert['comparison']} {alert['threshold']:g} on {alert['domain']}"
        incident = conn.execute(
            "INSERT INTO incidents (site_id, alert_id, kind, title, opened_at, peak) "
            "VALUES (%s, %s, 'alert', %s, %s, %s) RETURNING id",
            (alert["site_id"], alert["id"], title, now, value),
        ).fetchone()
        assert incident is not None
        conn.execute(
            "UPDATE alerts SET state = 'firing', value = %s, pending_since = %s, last_breach_at = %s, "
            "incident_id = %s, evaluated_at = %s WHERE id = %s",
            (value, since, now, incident["id"], now, alert["id"]),
        )
        announce(conn, self._outbox, alert, incident["id"], state="firing", value=value, title=title, now=now)
        return "firing"

    def _resolve(self, conn: Connection[Row], alert: Row, value: Any, now: datetime) -> str:
        incident = conn.execute(
            "UPDATE incidents SET resolved_at = %s WHERE id = %s RETURNING title", (now, alert["incident_id"])
        ).fetchone()
        conn.execute(
            "UPDATE alerts SET state = 'resolved', value = %s, pending_since = NULL, incident_id = NULL, "
            "evaluated_at = %s WHERE id = %s",
            (value, now, alert["id"]),
        )
        title = incident["title"] if incident else ""
        announce(conn, self._outbox, alert, alert["incident_id"], state="resolved", value=value, title=title, now=now)
        return "resolved"


def announce(
    conn: Connection[Row],
    outbox: Outbox,
    alert: Row,
    incident_id: Any,
    *,
    state: str,
    value: Any,
    title: str,
    now: datetime,
) -> None:
    """The one notification of an alert's change to ``state`` (every channel fans out from it)."""
    payload = {
        "alert_id": alert["id"],
        "incident_id": incident_id,
        "site_id": alert["site_id"],
        "domain": alert["domain"],
        "metric": alert["metric"],
        "state": state,
        "value": value,
        "title": title,
        "at": now.isoformat(),
    }
    outbox.enqueue(conn, ALERT_TOPIC, payload, dedup_key=f"alert:{incident_id}:{state}")


_FIRING_AMONG = """
SELECT a.id, a.site_id, a.value, a.incident_id, r.metric, s.domain, i.title
FROM alerts a
JOIN alert_rules r ON r.id = a.rule_id
JOIN customer_sites s ON s.id = a.site_id
JOIN incidents i ON i.id = a.incident_id
WHERE a.state = 'firing' AND a.id = ANY(%s)
FOR UPDATE OF a
"""


def retire(conn: Connection[Row], outbox: Outbox, alert_ids: list[Any], now: datetime) -> int:
    """Alerts about to be deleted (their rule deleted, or replaced by a site's own): each one firing
    has its incident resolved and announced, so no firing is left without its resolution. Returns
    how many were firing. The caller deletes the alerts in the same transaction."""
    firing = conn.execute(_FIRING_AMONG, (alert_ids,)).fetchall()
    for alert in firing:
        conn.execute("UPDATE incidents SET resolved_at = %s WHERE id = %s", (now, alert["incident_id"]))
        announce(
            conn,
            outbox,
            alert,
            alert["incident_id"],
            state="resolved",
            value=alert["value"],
            title=alert["title"],
            now=now,
        )
    return len(firing)
