"""The incident log: every alert firing, downtime and certificate warning of a site, newest first.

A customer's users see their own sites' incidents (another customer's incident or site is a 404,
as if it did not exist); staff see everyone's and acknowledge them. Acknowledging is idempotent: the
first acknowledgement (who, when) stays, a repeat answers the same incident unchanged.
"""

from __future__ import annotations

from typing import Any

from functions.agistaffers.services import newest_first, page_size, parse_uuid
from functions.agistaffers.services.accounts import Actor, require_customer
from functions.platform import jsonable
from functions.platform.ports import Row, TransactionalDatabase
from shared.errors import Forbidden, NotFound

KINDS = ("alert", "downtime", "certificate")

# opened_at is the log's order; newest_first pages by (created_at, id), hence the alias.
_SELECT = """
SELECT * FROM (
    SELECT i.id, i.site_id, s.domain, s.customer_id, s.status AS site_status, i.kind, i.title,
           i.opened_at AS created_at, i.resolved_at, i.peak, i.acknowledged_by, i.acknowledged_at
    FROM incidents i JOIN customer_sites s ON s.id = i.site_id
) i"""


def _not_found() -> NotFound:
    return NotFound("incident not found", code="incident_not_found")


def public_incident(row: Row) -> dict[str, Any]:
    shaped: dict[str, Any] = jsonable.json_ready(
        {
            "id": row["id"],
            "site_id": row["site_id"],
            "domain": row["domain"],
            "kind": row["kind"],
            "title": row["title"],
            "opened_at": row["created_at"],
            "resolved_at": row["resolved_at"],
            "peak": row["peak"],
            "acknowledged_by": row["acknowledged_by"],
            "acknowledged_at": row["acknowledged_at"],
        }
    )
    return shaped


class Incidents:
    def __init__(self, db: TransactionalDatabase) -> None:
        self._db = db

    def list(
        self,
        actor: Actor,
        *,
        site_id: Any = None,
        kind: str | None = None,
        open: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        where: list[str] = []
        params: dict[str, Any] = {}
        if not actor.is_staff:
            where.append("i.customer_id = %(customer_id)s AND i.site_status <> 'deleted'")
            params["customer_id"] = require_customer(actor)
        if site_id is not None:
            self._require_site(actor, site_id)
            where.append("i.site_id = %(site_id)s")
            params["site_id"] = site_id
        if kind is not None:
            where.append("i.kind = %(kind)s")
            params["kind"] = kind
        if open is not None:
            where.append("i.resolved_at IS NULL" if open else "i.resolved_at IS NOT NULL")
        return newest_first(
            self._db, _SELECT, "i", where, params, limit=page_size(limit), cursor=cursor, shape=public_incident
        )

    def get(self, actor: Actor, incident_id: Any) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute(f"{_SELECT} WHERE i.id = %s", (self._id(incident_id),)).fetchone()
        if row is None or not self._visible(actor, row):
            raise _not_found()
        return public_incident(row)

    def acknowledge(self, actor: Actor, incident_id: Any) -> dict[str, Any]:
        if not actor.is_staff:
            raise Forbidden("incidents are acknowledged by staff", code="staff_only")
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE incidents SET acknowledged_by = %s, acknowledged_at = now() "
                "WHERE id = %s AND acknowledged_at IS NULL",
                (actor.user_id, self._id(incident_id)),
            )
            row = conn.execute(f"{_SELECT} WHERE i.id = %s", (self._id(incident_id),)).fetchone()
        if row is None:
            raise _not_found()
        return public_incident(row)

    @staticmethod
    def _id(incident_id: Any) -> Any:
        parsed = parse_uuid(incident_id)
        if parsed is None:
            raise _not_found()
        return parsed

    @staticmethod
    def _visible(actor: Actor, row: Row) -> bool:
        if actor.is_staff:
            return True
        return str(row["customer_id"]) == require_customer(actor) and row["site_status"] != "deleted"

    def _require_site(self, actor: Actor, site_id: Any) -> None:
        """A site filter must name a site the actor may see: another customer's is a 404."""
        with self._db.transaction() as conn:
            site = conn.execute("SELECT customer_id, status FROM customer_sites WHERE id = %s", (site_id,)).fetchone()
        if site is None or not (
            actor.is_staff or (str(site["customer_id"]) == require_customer(actor) and site["status"] != "deleted")
        ):
            raise NotFound("site not found", code="site_not_found")
