"""Plans and their limits, read from the ``plans`` table (the rows are the source of truth).

Failure model: an unknown plan name is ``ValidationFailed(code="unknown_plan")``; the limits are
enforced by the services that add sites and members, under a lock on the customer row.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from psycopg import Connection

from functions.platform.ports import Row, TransactionalDatabase
from shared.errors import ValidationFailed

PLAN_COLUMNS = "name, max_sites, max_members, metrics_retention_days, min_check_interval_seconds"


class Plan(NamedTuple):
    name: str
    max_sites: int
    max_members: int
    metrics_retention_days: int
    min_check_interval_seconds: int

    @classmethod
    def from_row(cls, row: Row) -> Plan:
        return cls(
            row["name"],
            row["max_sites"],
            row["max_members"],
            row["metrics_retention_days"],
            row["min_check_interval_seconds"],
        )

    def public(self) -> dict[str, Any]:
        return self._asdict()


def load_plan(conn: Connection[Row], name: str) -> Plan:
    """The plan called ``name``, inside the caller's transaction."""
    row = conn.execute(f"SELECT {PLAN_COLUMNS} FROM plans WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise ValidationFailed(f"there is no plan called {name!r}", code="unknown_plan")
    return Plan.from_row(row)


class PlanService:
    def __init__(self, db: TransactionalDatabase) -> None:
        self._db = db

    def list(self) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            rows = conn.execute(f"SELECT {PLAN_COLUMNS} FROM plans ORDER BY max_sites, name").fetchall()
        return [Plan.from_row(row).public() for row in rows]

    def get(self, name: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            return load_plan(conn, name).public()
