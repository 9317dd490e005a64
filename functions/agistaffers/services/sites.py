"""Sites: the domains a customer hosts with us.

Failure model:
- A site of another customer, a deleted site (for a customer's users) and a malformed id are all
  ``NotFound(code="site_not_found")``: a customer cannot learn that an id exists.
- The plan's ``max_sites`` is counted under a lock on the customer row (``SELECT ... FOR UPDATE``), so
  concurrent adds are serialised per customer and never exceed it (``Conflict(code="plan_limit")``).
- A domain hosted by anyone (not deleted) is ``Conflict(code="domain_taken")``: the partial unique
  index on the normalised domain decides, so there is no check-then-insert race across customers.
- Adding a site of an active customer starts its onboarding run in the same transaction (a pending
  customer's sites start when the customer is activated); deleting marks the site ``deleted`` (its
  domain is free again) and, in the same transaction, cancels its onboarding and queues the teardown
  saga (services/provisioning.py): the use case owns its effects, none is lost to a crash.
- Writes by a customer's users go through ``require_writable`` and again against the locked customer row.
- Each site gets an ingest token (its agent's credential for ``POST /metrics``) when it is added: the
  token is in that answer only, the database keeps its SHA-256; a lost or leaked token is replaced
  with ``rotate_ingest_token``, which voids the old one in the same statement.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg import Connection

from functions.agistaffers.services import newest_first, page_size, parse_uuid, search_pattern
from functions.agistaffers.services.accounts import Actor, check_writable, require_customer, require_writable
from functions.agistaffers.services.domains import normalise_domain
from functions.agistaffers.services.plans import load_plan
from functions.platform.ports import OutboxFlush, Row, TransactionalDatabase
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed

STATUSES = ("provisioning", "active", "suspended", "failed", "deleted")
# Statuses staff may set by hand; provisioning, failed and deleted come from the provisioner and delete().
STAFF_SETTABLE_STATUSES = ("active", "suspended")
MAX_LABEL_LENGTH = 100

INGEST_TOKEN_PREFIX = "agi_ingest_"  # noqa: S105 - a marker that makes a leaked token recognisable, not a secret

SITE_COLUMNS = "s.id, s.customer_id, s.domain, s.label, s.status, s.container_id, s.created_at, s.updated_at"


def public_site(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in SITE_COLUMNS.replace("s.", "").split(", ")}


def ingest_token_hash(token: str) -> str:
    """What the database keeps of an ingest token (tokens are 256 random bits: a plain hash suffices)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_ingest_token() -> tuple[str, str]:
    token = INGEST_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, ingest_token_hash(token)


def _not_found() -> NotFound:
    return NotFound("no such site", code="site_not_found")


def _label(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or not value.strip() or len(value.strip()) > MAX_LABEL_LENGTH:
        raise ValidationFailed(f"label is 1 to {MAX_LABEL_LENGTH} characters", code="invalid_label")
    return value.strip()


class SiteSagas(Protocol):
    """What adding and deleting a site start (``Provisioning``), inside the caller's transaction."""

    def start_onboarding(self, conn: Connection[Row], site_id: str, trigger: str) -> str | None: ...

    def tear_down(self, conn: Connection[Row], site_id: str) -> None: ...


class SiteService:
    def __init__(self, db: TransactionalDatabase, sagas: SiteSagas, outbox: OutboxFlush | None = None) -> None:
        self._db = db
        self._sagas = sagas
        self._outbox = outbox

    def add(self, actor: Actor, domain: str, *, label: str | None = None) -> dict[str, Any]:
        """A new site (status provisioning) for the actor's customer, with its ``ingest_token``: shown
        in this answer only."""
        customer_id = require_customer(actor)
        require_writable(actor)
        name = normalise_domain(domain)
        label = _label(label)
        token, token_hash = _new_ingest_token()
        try:
            with self._db.transaction() as conn:
                # The customer row lock serialises adds (and plan changes) for one customer: the count
                # below cannot be passed by two transactions at once.
                customer = conn.execute(
                    "SELECT status, plan FROM customers WHERE id = %s FOR UPDATE", (customer_id,)
                ).fetchone()
                if customer is None:
                    raise Forbidden("this account no longer exists", code="customer_required")
                check_writable(customer["status"])
                plan = load_plan(conn, customer["plan"])
                used = conn.execute(
                    "SELECT count(*) AS n FROM customer_sites WHERE customer_id = %s AND status <> 'deleted'",
                    (customer_id,),
                ).fetchone()
                assert used is not None
                if used["n"] >= plan.max_sites:
                    raise Conflict(
                        f"the {plan.name} plan allows {plan.max_sites} sites",
                        code="plan_limit",
                        details={"limit": plan.max_sites, "plan": plan.name},
                    )
                row = conn.execute(
                    "INSERT INTO customer_sites AS s (customer_id, domain, label, status, ingest_token_hash) "
                    f"VALUES (%s, %s, %s, 'provisioning', %s) RETURNING {SITE_COLUMNS}",
                    (customer_id, name, label, token_hash),
                ).fetchone()
                assert row is not None
                if customer["status"] == "active":
                    self._sagas.start_onboarding(conn, str(row["id"]), f"onboard:{row['id']}")
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(f"{name} is already hosted here", code="domain_taken", details={"domain": name}) from exc
        self._flush()
        return {**public_site(row), "ingest_token": token}

    def rotate_ingest_token(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        """A new ingest token for the site (the old one stops working at once); shown in this answer only."""
        if not actor.is_staff:
            require_writable(actor)
        token, token_hash = _new_ingest_token()
        with self._db.transaction() as conn:
            site = self._visible(conn, actor, site_id, lock=True)
            if site["status"] == "deleted":
                raise _not_found()
            conn.execute("UPDATE customer_sites SET ingest_token_hash = %s WHERE id = %s", (token_hash, site["id"]))
        return {"site_id": site["id"], "ingest_token": token}

    def _flush(self) -> None:
        if self._outbox is not None:
            self._outbox.flush_after_commit()

    def list(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        q: str | None = None,
        customer_id: Any = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Sites newest first, keyset-paginated. A customer's users see their own, never deleted ones;
        staff see everyone's, deleted ones only when they ask for ``status="deleted"``."""
        limit = page_size(limit)
        where: list[str] = []
        params: dict[str, Any] = {}
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status is one of {', '.join(STATUSES)}", code="invalid_status")
        if actor.is_staff:
            if customer_id is not None:
                parsed = parse_uuid(customer_id)
                if parsed is None:
                    raise ValidationFailed("customer_id is a UUID", code="invalid_customer_id")
                where.append("s.customer_id = %(customer_id)s")
                params["customer_id"] = parsed
        else:
            own = require_customer(actor)
            # Another customer's id is a 404, as reading that customer would be.
            if customer_id is not None and str(parse_uuid(customer_id)) != own:
                raise NotFound("no such customer", code="customer_not_found")
            where.append("s.customer_id = %(customer_id)s")
            params["customer_id"] = own
            where.append("s.status <> 'deleted'")
        if status is not None:
            where.append("s.status = %(status)s")
            params["status"] = status
        elif actor.is_staff:
            where.append("s.status <> 'deleted'")
        if q is not None:
            where.append("(s.domain ILIKE %(q)s OR s.label ILIKE %(q)s)")
            params["q"] = search_pattern(q)
        select = f"SELECT {SITE_COLUMNS} FROM customer_sites s"
        return newest_first(self._db, select, "s", where, params, limit=limit, cursor=cursor, shape=public_site)

    def get(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        with self._db.transaction() as conn:
            return public_site(self._visible(conn, actor, site_id))

    def update(self, actor: Actor, site_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
        """A customer's owner or member changes the label; staff may also set status active/suspended."""
        allowed = ("label", "status") if actor.is_staff else ("label",)
        if not isinstance(changes, dict) or not changes:
            raise ValidationFailed("give at least one field to change", code="no_changes")
        if not actor.is_staff and "status" in changes:
            raise Forbidden("a site's status is set by staff", code="staff_only")
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            raise ValidationFailed("these fields cannot be changed", code="unknown_field", details={"fields": unknown})
        values: dict[str, Any] = {}
        if "label" in changes:
            values["label"] = _label(changes["label"])
        if "status" in changes:
            if changes["status"] not in STAFF_SETTABLE_STATUSES:
                raise ValidationFailed(
                    f"status can be set to {' or '.join(STAFF_SETTABLE_STATUSES)}", code="invalid_status"
                )
            values["status"] = changes["status"]
        if not actor.is_staff:
            require_writable(actor)
        with self._db.transaction() as conn:
            site = self._visible(conn, actor, site_id, lock=True)
            if site["status"] == "deleted":
                raise _not_found()
            # Column names come from ``allowed`` (checked above), never from the request.
            assignments = ", ".join(f"{field} = %({field})s" for field in values)
            row = conn.execute(
                f"UPDATE customer_sites s SET {assignments}, updated_at = now() WHERE s.id = %(id)s "
                f"RETURNING {SITE_COLUMNS}",
                {**values, "id": site["id"]},
            ).fetchone()
            assert row is not None
        return public_site(row)

    def delete(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        """An owner of the customer marks the site deleted; its domain is free again at once."""
        require_customer(actor)
        if actor.role != "owner":
            raise Forbidden("only an owner of the account can delete a site", code="owner_only")
        require_writable(actor)
        with self._db.transaction() as conn:
            site = self._visible(conn, actor, site_id, lock=True)
            row = conn.execute(
                "UPDATE customer_sites s SET status = 'deleted', deleted_at = now(), updated_at = now() "
                f"WHERE s.id = %s RETURNING {SITE_COLUMNS}",
                (site["id"],),
            ).fetchone()
            assert row is not None
            self._sagas.tear_down(conn, str(site["id"]))
        self._flush()
        return public_site(row)

    @staticmethod
    def _visible(conn: Connection[Row], actor: Actor, site_id: Any, *, lock: bool = False) -> Row:
        """The site as ``actor`` may see it: staff any; a customer's users their own, not deleted ones.

        With ``lock``, a customer's user also locks their customer row first (re-checking it is
        writable), in the order add() takes locks, and the site row."""
        parsed: UUID | None = parse_uuid(site_id)
        if parsed is None:
            raise _not_found()
        params: tuple[Any, ...]
        if actor.is_staff:
            where, params = "s.id = %s", (parsed,)
        else:
            customer_id = require_customer(actor)
            if lock:
                customer = conn.execute(
                    "SELECT status FROM customers WHERE id = %s FOR UPDATE", (customer_id,)
                ).fetchone()
                if customer is None:
                    raise _not_found()
                check_writable(customer["status"])
            where, params = "s.id = %s AND s.customer_id = %s AND s.status <> 'deleted'", (parsed, customer_id)
        suffix = " FOR UPDATE OF s" if lock else ""
        row = conn.execute(f"SELECT {SITE_COLUMNS} FROM customer_sites s WHERE {where}{suffix}", params).fetchone()
        if row is None:
            raise _not_found()
        return row
