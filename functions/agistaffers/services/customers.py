"""Customers: their lifecycle (staff only), their profile, their plan, and the staff listing.

Failure model:
- Status changes follow ``TRANSITIONS`` and nothing else: any other move (including to the same
  status) is ``Conflict(code="invalid_transition", details={"from", "to"})``. Each one locks the row
  (``SELECT ... FOR UPDATE``) so two operators cannot both move the same customer from one state.
- Another customer's data does not exist for a customer's user: ``NotFound(code="customer_not_found")``,
  never 403, so ids cannot be probed. Staff-only actions are ``Forbidden`` for customers' users.
- Each status change writes a ``customer.status_changed`` outbox row in its transaction: provisioning
  stops, starts, onboards or removes the customer's sites from it (services/provisioning.py), so a
  change is never applied without its effect on the containers, nor the other way round.
- A plan change that would leave more sites (or members) than the new plan allows is
  ``Conflict(code="plan_limit")``; it counts under the same row lock that adding a site takes.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import Connection

from functions.agistaffers.services import newest_first, page_size, parse_uuid, search_pattern
from functions.agistaffers.services.accounts import Actor, check_writable, normalise_email, require_writable
from functions.agistaffers.services.domain_events import CUSTOMER_STATUS_TOPIC
from functions.agistaffers.services.domain_events import outbox as domain_outbox
from functions.agistaffers.services.plans import load_plan
from functions.platform.ports import OutboxFlush, Row, TransactionalDatabase
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed

STATUSES = ("pending", "active", "suspended", "cancelled")
# (from, to): the only moves a customer's status makes. Cancelled is final.
TRANSITIONS = frozenset(
    {
        ("pending", "active"),
        ("pending", "cancelled"),
        ("active", "suspended"),
        ("suspended", "active"),
        ("active", "cancelled"),
        ("suspended", "cancelled"),
    }
)
MAX_REASON_LENGTH = 1000
# Profile fields a customer's owner (or staff) may change, with their largest size.
PROFILE_FIELDS = {"company_name": 255, "phone": 40, "website": 2048, "address": 1000, "billing_email": 255}

CUSTOMER_COLUMNS = (
    "c.id, c.email, c.company_name, c.plan, c.status, c.status_reason, c.status_changed_at, c.phone, c.website, "
    "c.address, c.billing_email, c.created_at, c.updated_at"
)


def public_customer(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in CUSTOMER_COLUMNS.replace("c.", "").split(", ")}


def require_staff(actor: Actor) -> None:
    if not actor.is_staff:
        raise Forbidden("only staff can do this", code="staff_only")


def _not_found() -> NotFound:
    return NotFound("no such customer", code="customer_not_found")


def _customer_id(value: Any) -> UUID:
    parsed = parse_uuid(value)
    if parsed is None:
        raise _not_found()
    return parsed


def _reason(reason: Any) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise ValidationFailed(f"a reason is 1 to {MAX_REASON_LENGTH} characters", code="invalid_reason")
    return reason.strip()


def _profile_value(field: str, value: Any) -> str | None:
    if value is None:
        if field == "company_name":
            raise ValidationFailed("company_name cannot be empty", code="invalid_company_name")
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise ValidationFailed(f"{field} is text", code=f"invalid_{field}")
    text: str = value.strip()
    if not text or len(text) > PROFILE_FIELDS[field]:
        raise ValidationFailed(f"{field} is 1 to {PROFILE_FIELDS[field]} characters", code=f"invalid_{field}")
    if field == "billing_email":
        return normalise_email(text)
    if field == "website" and not text.lower().startswith(("https://", "http://")):
        raise ValidationFailed("website is an http(s) URL", code="invalid_website")
    return text


class CustomerService:
    def __init__(self, db: TransactionalDatabase, outbox: OutboxFlush | None = None) -> None:
        self._db = db
        self._outbox = outbox

    # Lifecycle (staff)

    def activate(self, actor: Actor, customer_id: Any) -> dict[str, Any]:
        """pending -> active (a suspended customer comes back with reinstate())."""
        return self._transition(actor, customer_id, "active", None, expect_from="pending")

    def suspend(self, actor: Actor, customer_id: Any, reason: str) -> dict[str, Any]:
        return self._transition(actor, customer_id, "suspended", _reason(reason))

    def reinstate(self, actor: Actor, customer_id: Any) -> dict[str, Any]:
        return self._transition(actor, customer_id, "active", None, expect_from="suspended")

    def cancel(self, actor: Actor, customer_id: Any, reason: str | None = None) -> dict[str, Any]:
        return self._transition(actor, customer_id, "cancelled", _reason(reason))

    def _transition(
        self, actor: Actor, customer_id: Any, to: str, reason: str | None, *, expect_from: str | None = None
    ) -> dict[str, Any]:
        require_staff(actor)
        parsed = _customer_id(customer_id)
        with self._db.transaction() as conn:
            current = conn.execute("SELECT status FROM customers WHERE id = %s FOR UPDATE", (parsed,)).fetchone()
            if current is None:
                raise _not_found()
            was = current["status"]
            # Both activate() and reinstate() move to active; each from its own state only, so an
            # operator's "reinstate" never silently activates a customer who was never approved.
            if (was, to) not in TRANSITIONS or (expect_from is not None and was != expect_from):
                raise Conflict(
                    f"a {was} customer cannot become {to}",
                    code="invalid_transition",
                    details={"from": was, "to": to},
                )
            row = conn.execute(
                "UPDATE customers c SET status = %s, status_reason = %s, status_changed_at = clock_timestamp(), "
                f"updated_at = now() WHERE c.id = %s RETURNING {CUSTOMER_COLUMNS}",
                (to, reason, parsed),
            ).fetchone()
            assert row is not None
            domain_outbox.enqueue(
                conn,
                CUSTOMER_STATUS_TOPIC,
                {"customer_id": str(parsed), "from": was, "to": to},
                dedup_key=f"customer:{parsed}:{row['status_changed_at'].isoformat()}",
            )
        if self._outbox is not None:
            self._outbox.flush_after_commit()
        return public_customer(row)

    # Reads

    def get(self, actor: Actor, customer_id: Any) -> dict[str, Any]:
        """Staff read any customer; a customer's users read their own; anyone else gets a 404."""
        parsed = _customer_id(customer_id)
        if not actor.is_staff and str(parsed) != actor.customer_id:
            raise _not_found()
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT {CUSTOMER_COLUMNS}, "
                "(SELECT count(*) FROM customer_sites s WHERE s.customer_id = c.id AND s.status <> 'deleted') "
                "AS site_count FROM customers c WHERE c.id = %s",
                (parsed,),
            ).fetchone()
        if row is None:
            raise _not_found()
        return {**public_customer(row), "site_count": row["site_count"]}

    def list(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        plan: str | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Staff listing, newest first, keyset-paginated; ``q`` matches company name or e-mail."""
        require_staff(actor)
        limit = page_size(limit)
        where: list[str] = []
        params: dict[str, Any] = {}
        if status is not None:
            if status not in STATUSES:
                raise ValidationFailed(f"status is one of {', '.join(STATUSES)}", code="invalid_status")
            where.append("c.status = %(status)s")
            params["status"] = status
        if plan is not None:
            if not isinstance(plan, str):
                raise ValidationFailed("plan is a plan name", code="unknown_plan")
            where.append("c.plan = %(plan)s")
            params["plan"] = plan
        if q is not None:
            where.append("(c.company_name ILIKE %(q)s OR c.email ILIKE %(q)s)")
            params["q"] = search_pattern(q)
        select = f"SELECT {CUSTOMER_COLUMNS} FROM customers c"
        return newest_first(self._db, select, "c", where, params, limit=limit, cursor=cursor, shape=public_customer)

    # Changes

    def update_profile(self, actor: Actor, customer_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
        """An owner of the customer (not a member) or staff change the profile fields."""
        parsed = _customer_id(customer_id)
        if not actor.is_staff:
            if str(parsed) != actor.customer_id:
                raise _not_found()
            if actor.role != "owner":
                raise Forbidden("only an owner of the account can do this", code="owner_only")
            require_writable(actor)
        if not isinstance(changes, dict) or not changes:
            raise ValidationFailed("give at least one field to change", code="no_changes")
        unknown = sorted(set(changes) - set(PROFILE_FIELDS))
        if unknown:
            raise ValidationFailed(
                "these fields cannot be changed here", code="unknown_field", details={"fields": unknown}
            )
        values = {field: _profile_value(field, value) for field, value in changes.items()}
        # Column names come from PROFILE_FIELDS (checked above), never from the request.
        assignments = ", ".join(f"{field} = %({field})s" for field in values)
        with self._db.transaction() as conn:
            if not actor.is_staff:
                self._check_writable_locked(conn, parsed)
            row = conn.execute(
                f"UPDATE customers c SET {assignments}, updated_at = now() WHERE c.id = %(id)s "
                f"RETURNING {CUSTOMER_COLUMNS}",
                {**values, "id": parsed},
            ).fetchone()
        if row is None:
            raise _not_found()
        return public_customer(row)

    def change_plan(self, actor: Actor, customer_id: Any, plan: str) -> dict[str, Any]:
        """Staff move a customer to ``plan``; not to one too small for what the customer has now."""
        require_staff(actor)
        parsed = _customer_id(customer_id)
        if not isinstance(plan, str):
            raise ValidationFailed("plan is a plan name", code="unknown_plan")
        with self._db.transaction() as conn:
            new_plan = load_plan(conn, plan)
            # The lock add-site takes, so a site added meanwhile is counted.
            if conn.execute("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (parsed,)).fetchone() is None:
                raise _not_found()
            usage = conn.execute(
                "SELECT (SELECT count(*) FROM customer_sites WHERE customer_id = %(c)s AND status <> 'deleted') "
                "AS sites, (SELECT count(*) FROM users WHERE customer_id = %(c)s AND disabled_at IS NULL) AS members",
                {"c": parsed},
            ).fetchone()
            assert usage is not None
            for resource, limit in (("sites", new_plan.max_sites), ("members", new_plan.max_members)):
                if usage[resource] > limit:
                    raise Conflict(
                        f"the customer has {usage[resource]} {resource}; the {new_plan.name} plan allows {limit}",
                        code="plan_limit",
                        details={"limit": limit, "plan": new_plan.name, "resource": resource, "count": usage[resource]},
                    )
            row = conn.execute(
                f"UPDATE customers c SET plan = %s, updated_at = now() WHERE c.id = %s RETURNING {CUSTOMER_COLUMNS}",
                (new_plan.name, parsed),
            ).fetchone()
            assert row is not None
        return public_customer(row)

    @staticmethod
    def _check_writable_locked(conn: Connection[Row], customer_id: UUID) -> None:
        # The actor's status was read at the start of the request; the locked row is what counts.
        row = conn.execute("SELECT status FROM customers WHERE id = %s FOR UPDATE", (customer_id,)).fetchone()
        if row is None:
            raise _not_found()
        check_writable(row["status"])
