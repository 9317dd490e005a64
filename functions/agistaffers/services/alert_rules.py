"""Alert rules and alert history: a customer's owner manages their sites' rules, staff the defaults
of every plan (a site's own rule for a metric and comparison replaces its plan's).

Who may do what: a customer's users read their sites' rules and history; its owners (and staff)
change them; staff alone change plan defaults. Another customer's site or rule, a deleted site and a
malformed id are all 404, as in the sites API.

Failure model:
- A second rule for the same (site or plan, metric, comparison) is 409 ``alert_rule_exists``: the
  unique indexes decide, so two requests at once cannot both create one.
- A rule that disappears (deleted, or a plan default replaced by the site's own rule) takes its
  alerts with it; a firing one is resolved and announced first (``alerts.retire``), in the same
  transaction, so a customer never keeps an incident open that nothing will ever resolve.
- Changing a rule keeps its alert and state: the next evaluation judges it on the new threshold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import Connection

from functions.agistaffers.services import parse_uuid
from functions.agistaffers.services.accounts import Actor, check_writable, require_customer, require_owner
from functions.agistaffers.services.alerts import COMPARE, retire
from functions.agistaffers.services.metrics import CUSTOM_METRIC, METRICS
from functions.platform.outbox import Outbox
from functions.platform.ports import Row, TransactionalDatabase
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed

MAX_DURATION_SECONDS = 86400  # what the table allows: a day
MAX_HISTORY = 100
_RULE_COLUMNS = (
    "r.id, r.site_id, r.plan, r.metric, r.comparison, r.threshold, r.for_seconds, r.keep_firing_for_seconds, "
    "r.created_at"
)
_CHANGEABLE = ("threshold", "for_seconds", "keep_firing_for_seconds")
_PLAN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def _rule_not_found() -> NotFound:
    return NotFound("alert rule not found", code="alert_rule_not_found")


def _site_not_found() -> NotFound:
    return NotFound("site not found", code="site_not_found")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"loc": [field], "msg": message}], code="invalid_alert_rule")


def check_rule(fields: Mapping[str, Any]) -> None:
    """The meaning of a rule's fields (the request schema already checked their types): a metric
    agents can send, a known comparison, a finite threshold, durations within a day."""
    if "metric" in fields and not (fields["metric"] in METRICS or CUSTOM_METRIC.match(fields["metric"])):
        raise _invalid("metric", "metric is not a known metric nor custom.<name> (see the ingest's naming rule)")
    if "comparison" in fields and fields["comparison"] not in COMPARE:
        raise _invalid("comparison", f"comparison is one of {', '.join(COMPARE)}")
    if "threshold" in fields:
        threshold = fields["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
            raise _invalid("threshold", "threshold must be a finite number")
    for name in ("for_seconds", "keep_firing_for_seconds"):
        value = fields.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DURATION_SECONDS:
            raise _invalid(name, f"{name} is a whole number of seconds from 0 to {MAX_DURATION_SECONDS}")


def _rule(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in _RULE_COLUMNS.replace("r.", "").split(", ")}


class AlertRules:
    def __init__(self, db: TransactionalDatabase, outbox: Outbox, invalidate: Callable[[], None]) -> None:
        self._db = db
        self._outbox = outbox
        self._invalidate = invalidate  # told after alerts were resolved (dashboards show alert states)

    # --- a site's rules ---------------------------------------------------------------------------

    def for_site(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        """The site's own rules and its plan's defaults (``replaced`` when an own rule takes over)."""
        with self._db.transaction() as conn:
            site = self._site(conn, actor, site_id)
            own = conn.execute(
                f"SELECT {_RULE_COLUMNS} FROM alert_rules r WHERE r.site_id = %s ORDER BY r.metric, r.comparison",
                (site["id"],),
            ).fetchall()
            defaults = self._plan_rules(conn, site["plan"])
        replaced = {(rule["metric"], rule["comparison"]) for rule in own}
        plan_rules = [{**_rule(row), "replaced": (row["metric"], row["comparison"]) in replaced} for row in defaults]
        return {"rules": [_rule(row) for row in own], "plan_rules": plan_rules}

    def create_for_site(self, actor: Actor, site_id: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
        check_rule(fields)
        with self._db.transaction() as conn:
            site = self._site(conn, actor, site_id, write=True)
            rule = self._insert(conn, "site_id", site["id"], fields)
            # The plan's default for this metric and comparison no longer applies to the site.
            replaced = conn.execute(
                "SELECT a.id FROM alerts a JOIN alert_rules r ON r.id = a.rule_id "
                "WHERE a.site_id = %s AND r.plan IS NOT NULL AND r.metric = %s AND r.comparison = %s",
                (site["id"], fields["metric"], fields["comparison"]),
            ).fetchall()
            resolved = self._drop_alerts(conn, [row["id"] for row in replaced])
        if resolved:
            self._invalidate()
        return rule

    # --- plan defaults (staff) --------------------------------------------------------------------

    def for_plan(self, actor: Actor, plan: str) -> dict[str, Any]:
        self._require_staff(actor)
        with self._db.transaction() as conn:
            self._plan(conn, plan)
            return {"rules": [_rule(row) for row in self._plan_rules(conn, plan)]}

    def create_for_plan(self, actor: Actor, plan: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        self._require_staff(actor)
        check_rule(fields)
        with self._db.transaction() as conn:
            self._plan(conn, plan)
            return self._insert(conn, "plan", plan, fields)

    # --- any rule by id -----------------------------------------------------------------------------

    def update(self, actor: Actor, rule_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a rule's threshold or durations (its metric and comparison are what it is: delete
        it and create another to change those)."""
        unknown = set(changes) - set(_CHANGEABLE)
        if unknown or not changes:
            raise _invalid(sorted(unknown)[0] if unknown else "body", f"only {', '.join(_CHANGEABLE)} can change")
        check_rule(changes)
        with self._db.transaction() as conn:
            self._writable_rule(conn, actor, rule_id)
            assignments = ", ".join(f"{name} = %({name})s" for name in changes)
            row = conn.execute(
                f"UPDATE alert_rules r SET {assignments} WHERE r.id = %(id)s RETURNING {_RULE_COLUMNS}",
                {**changes, "id": parse_uuid(rule_id)},
            ).fetchone()
        assert row is not None
        return _rule(row)

    def delete(self, actor: Actor, rule_id: Any) -> None:
        with self._db.transaction() as conn:
            rule = self._writable_rule(conn, actor, rule_id)
            alerts = conn.execute("SELECT id FROM alerts WHERE rule_id = %s", (rule["id"],)).fetchall()
            resolved = self._drop_alerts(conn, [row["id"] for row in alerts])
            conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule["id"],))
        if resolved:
            self._invalidate()

    # --- history ------------------------------------------------------------------------------------

    def history(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        """The site's alerts as they stand and its alert incidents, newest first: when each fired,
        when it resolved (null while firing) and its peak value."""
        with self._db.transaction() as conn:
            site = self._site(conn, actor, site_id)
            alerts = conn.execute(
                "SELECT a.id, a.rule_id, r.metric, r.comparison, r.threshold, a.state, a.value, a.evaluated_at, "
                "a.incident_id FROM alerts a JOIN alert_rules r ON r.id = a.rule_id WHERE a.site_id = %s "
                "ORDER BY r.metric, r.comparison",
                (site["id"],),
            ).fetchall()
            incidents = conn.execute(
                "SELECT id, alert_id, title, opened_at AS fired_at, resolved_at, peak, acknowledged_at "
                "FROM incidents WHERE site_id = %s AND kind = 'alert' ORDER BY opened_at DESC, id LIMIT %s",
                (site["id"], MAX_HISTORY),
            ).fetchall()
        return {"alerts": alerts, "incidents": incidents}

    # --- helpers --------------------------------------------------------------------------------------

    @staticmethod
    def _require_staff(actor: Actor) -> None:
        if not actor.is_staff:
            raise Forbidden("plan defaults are staff's to manage", code="staff_only")

    @staticmethod
    def _plan(conn: Connection[Row], plan: str) -> None:
        if (
            not _PLAN_NAME.match(plan)
            or conn.execute("SELECT 1 FROM plans WHERE name = %s", (plan,)).fetchone() is None
        ):
            raise NotFound("plan not found", code="plan_not_found")

    @staticmethod
    def _plan_rules(conn: Connection[Row], plan: str) -> list[Row]:
        return conn.execute(
            f"SELECT {_RULE_COLUMNS} FROM alert_rules r WHERE r.plan = %s ORDER BY r.metric, r.comparison", (plan,)
        ).fetchall()

    @staticmethod
    def _site(conn: Connection[Row], actor: Actor, site_id: Any, *, write: bool = False) -> Row:
        """The site as ``actor`` may see it (staff any live site; a customer's users their own), with its
        plan; ``write`` also requires an owner (or staff) of a writable customer and locks the site."""
        parsed = parse_uuid(site_id)
        if parsed is None:
            raise _site_not_found()
        customer_id = None if actor.is_staff else (require_owner(actor) if write else require_customer(actor))
        row = conn.execute(
            "SELECT s.id, c.plan, c.status AS customer_status FROM customer_sites s "
            "JOIN customers c ON c.id = s.customer_id "
            "WHERE s.id = %s AND s.status <> 'deleted' AND (%s::uuid IS NULL OR s.customer_id = %s::uuid)"
            + (" FOR UPDATE OF s" if write else ""),
            (parsed, customer_id, customer_id),
        ).fetchone()
        if row is None:
            raise _site_not_found()
        if write and customer_id is not None:
            check_writable(row["customer_status"])
        return row

    @staticmethod
    def _writable_rule(conn: Connection[Row], actor: Actor, rule_id: Any) -> Row:
        """The rule locked for a change: staff any; a customer's owner their own sites' rules only
        (a plan default or another customer's rule is not found)."""
        parsed = parse_uuid(rule_id)
        if parsed is None:
            raise _rule_not_found()
        customer_id = None if actor.is_staff else require_customer(actor)
        rule = conn.execute(
            "SELECT r.id, c.status AS customer_status FROM alert_rules r "
            "LEFT JOIN customer_sites s ON s.id = r.site_id LEFT JOIN customers c ON c.id = s.customer_id "
            "WHERE r.id = %s AND (%s::uuid IS NULL OR (s.customer_id = %s::uuid AND s.status <> 'deleted')) "
            "FOR UPDATE OF r",
            (parsed, customer_id, customer_id),
        ).fetchone()
        if rule is None:
            raise _rule_not_found()
        if customer_id is not None:
            require_owner(actor)
            check_writable(rule["customer_status"])
        return rule

    def _insert(
        self, conn: Connection[Row], owner_column: str, owner: Any, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        values = {
            "owner": owner,
            "metric": fields["metric"],
            "comparison": fields["comparison"],
            "threshold": float(fields["threshold"]),
            "for_seconds": fields.get("for_seconds", 0),
            "keep_firing_for_seconds": fields.get("keep_firing_for_seconds", 0),
        }
        try:
            with conn.transaction():
                row = conn.execute(
                    f"INSERT INTO alert_rules AS r ({owner_column}, metric, comparison, threshold, for_seconds, "
                    "keep_firing_for_seconds) VALUES (%(owner)s, %(metric)s, %(comparison)s, %(threshold)s, "
                    f"%(for_seconds)s, %(keep_firing_for_seconds)s) RETURNING {_RULE_COLUMNS}",
                    values,
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise Conflict(
                f"a rule for {values['metric']} {values['comparison']} exists already: change it instead",
                code="alert_rule_exists",
            ) from None
        assert row is not None
        return _rule(row)

    def _drop_alerts(self, conn: Connection[Row], alert_ids: list[Any]) -> int:
        """Delete the alerts, resolving the firing ones first; returns how many were firing."""
        if not alert_ids:
            return 0
        resolved = retire(conn, self._outbox, alert_ids, datetime.now(UTC))
        conn.execute("DELETE FROM alerts WHERE id = ANY(%s)", (alert_ids,))
        return resolved
