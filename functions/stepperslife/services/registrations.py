"""Registrations: a seat while seats last, then the waiting list.

The decision is made inside PostgreSQL (``register_attendee``, migration 0005) under a row lock on
the event: concurrent registrations queue on that lock and can never oversell, and there is no
check-then-insert in the application. Seats are counted in ``events.registered_count``.

After a registration or a cancellation commits, the attendee's cached recommendations are dropped
(they rank by what the person registered for), and a cancellation hands its outbox row (a promotion
from the waiting list) to the transport at once.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import psycopg

from functions.platform.ports import OutboxFlush, Row, TransactionalDatabase
from functions.stepperslife.services.domain_events import outbox
from functions.stepperslife.services.events import can_manage
from functions.stepperslife.services.recommendations import RecommendationService
from shared.envelope import Identity
from shared.errors import Conflict, Forbidden, NotFound

_COLUMNS = "id, user_id, event_id, registration_date, status, waitlist_seq, updated_at"


def _public(conn: psycopg.Connection[Row], row: Row) -> dict[str, Any]:
    registration = {key: row[key] for key in row if key != "waitlist_seq"}
    registration["waitlist_position"] = None
    if row["status"] == "waitlisted":
        position = conn.execute(
            "SELECT count(*) AS ahead FROM event_registrations "
            "WHERE event_id = %s AND status = 'waitlisted' AND waitlist_seq <= %s",
            (row["event_id"], row["waitlist_seq"]),
        ).fetchone()
        assert position is not None
        registration["waitlist_position"] = position["ahead"]
    return registration


class RegistrationService:
    def __init__(
        self, db: TransactionalDatabase, *, recommendations: RecommendationService, outbox: OutboxFlush
    ) -> None:
        self._db = db
        self._recommendations = recommendations
        self._outbox = outbox

    def register(self, event_id: str, attendee: Identity) -> dict[str, Any]:
        """A seat while seats last, else a place on the waiting list (see register_attendee in 0005)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT outcome, registration, waitlist_position FROM register_attendee(%s, %s)",
                (event_id, attendee.user_id),
            ).fetchone()
        assert row is not None
        if row["outcome"] == "not_found":
            raise NotFound("event not found")
        if row["outcome"] == "cancelled":
            raise Conflict("this event is cancelled", code="event_cancelled")
        if row["outcome"] == "past":
            raise Conflict("this event has already taken place", code="event_past")
        registration = {**row["registration"], "waitlist_position": row["waitlist_position"]}
        if row["outcome"] == "already_registered":
            raise Conflict("you are already registered for this event", code="already_registered", details=registration)
        self._recommendations.forget(attendee.user_id)
        return registration

    def cancel(self, event_id: str, attendee: Identity) -> dict[str, Any]:
        """Cancel ``attendee``'s registration; a freed seat goes to the first person waiting, in the same
        transaction, and a notification to them is queued through the outbox."""
        with self._db.transaction() as conn:
            # Lock order event → registrations, as in register(), so the two never deadlock.
            if conn.execute("SELECT 1 FROM events WHERE id = %s FOR UPDATE", (event_id,)).fetchone() is None:
                raise NotFound("event not found")
            current = conn.execute(
                f"SELECT {_COLUMNS} FROM event_registrations WHERE user_id = %s AND event_id = %s FOR UPDATE",
                (attendee.user_id, event_id),
            ).fetchone()
            if current is None or current["status"] == "cancelled":
                raise NotFound("you have no registration for this event")
            if current["status"] == "checked_in":
                raise Conflict("you are already checked in", code="already_checked_in")
            row = conn.execute(
                "UPDATE event_registrations SET status = 'cancelled', waitlist_seq = NULL, updated_at = now() "
                f"WHERE id = %s RETURNING {_COLUMNS}",
                (current["id"],),
            ).fetchone()
            assert row is not None
            promoted = None
            if current["status"] == "registered":
                promoted = self._promote_first_waiting(conn, event_id)
            result = _public(conn, row)
        result["promoted_registration_id"] = promoted["id"] if promoted else None
        self._recommendations.forget(attendee.user_id)
        self._outbox.flush_after_commit()
        return result

    def _promote_first_waiting(self, conn: psycopg.Connection[Row], event_id: str) -> Row | None:
        promoted = conn.execute(
            "UPDATE event_registrations SET status = 'registered', waitlist_seq = NULL, updated_at = now() "
            "WHERE id = (SELECT id FROM event_registrations WHERE event_id = %s AND status = 'waitlisted' "
            f"            ORDER BY waitlist_seq LIMIT 1 FOR UPDATE) RETURNING {_COLUMNS}",
            (event_id,),
        ).fetchone()
        if promoted is None:
            conn.execute("UPDATE events SET registered_count = registered_count - 1 WHERE id = %s", (event_id,))
            return None
        payload = {"registration_id": str(promoted["id"]), "user_id": str(promoted["user_id"]), "event_id": event_id}
        # updated_at tells two promotions of the same registration row apart (cancel, re-register, promoted).
        dedup_key = f"registration.promoted:{promoted['id']}:{promoted['updated_at'].isoformat()}"
        outbox.enqueue(conn, "registration.promoted", payload, dedup_key=dedup_key)
        return promoted

    def _managed_event(self, conn: psycopg.Connection[Row], event_id: str, actor: Identity) -> Row:
        event = conn.execute("SELECT id, user_id, status, title FROM events WHERE id = %s", (event_id,)).fetchone()
        if event is None or (event["status"] == "draft" and not can_manage(actor, event)):
            raise NotFound("event not found")
        if not can_manage(actor, event):
            raise Forbidden("only the organizer or an admin may see or manage attendees")
        return event

    def check_in(self, event_id: str, registration_id: str, actor: Identity) -> dict[str, Any]:
        with self._db.transaction() as conn:
            self._managed_event(conn, event_id, actor)
            current = conn.execute(
                f"SELECT {_COLUMNS} FROM event_registrations WHERE id = %s AND event_id = %s FOR UPDATE",
                (registration_id, event_id),
            ).fetchone()
            if current is None:
                raise NotFound("registration not found")
            if current["status"] == "checked_in":
                return _public(conn, current)  # checking in twice is harmless: the door scanner may retry
            if current["status"] != "registered":
                raise Conflict(f"a {current['status']} registration cannot check in", code="not_registered")
            row = conn.execute(
                f"UPDATE event_registrations SET status = 'checked_in', updated_at = now() WHERE id = %s "
                f"RETURNING {_COLUMNS}",
                (registration_id,),
            ).fetchone()
            assert row is not None
            return _public(conn, row)

    def attendees(self, event_id: str, actor: Identity, status: str | None) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            self._managed_event(conn, event_id, actor)
            rows = conn.execute(
                "SELECT r.id, r.user_id, r.status, r.registration_date, r.updated_at, u.name, u.email, "
                "CASE WHEN r.status = 'waitlisted' THEN "
                "     rank() OVER (PARTITION BY r.status ORDER BY r.waitlist_seq) END AS waitlist_position "
                "FROM event_registrations r JOIN users u ON u.id = r.user_id "
                "WHERE r.event_id = %s AND (%s::text IS NULL OR r.status = %s) "
                "ORDER BY r.status, r.waitlist_seq NULLS FIRST, r.registration_date, r.id",
                (event_id, status, status),
            ).fetchall()
        return [dict(row) for row in rows]

    def list_for_user(self, attendee: Identity) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            # Positions in the same query: one round trip for the whole list, not one per waitlisted row.
            rows = conn.execute(
                "SELECT r.id, r.user_id, r.event_id, r.registration_date, r.status, r.updated_at, "
                "CASE WHEN r.status = 'waitlisted' THEN (SELECT count(*) FROM event_registrations w "
                "  WHERE w.event_id = r.event_id AND w.status = 'waitlisted' AND w.waitlist_seq <= r.waitlist_seq) "
                "END AS waitlist_position "
                "FROM event_registrations r WHERE r.user_id = %s ORDER BY r.registration_date DESC LIMIT 500",
                (attendee.user_id,),
            ).fetchall()
        return [dict(row) for row in rows]

    def reconcile_seat_counters(self) -> list[dict[str, Any]]:
        """Recount each event's seats from its registrations and repair any drift (a daily check).

        The counter is kept in step by every write; this only matters after manual SQL surgery, and it
        reports what it fixed so that the cause is looked for."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "UPDATE events AS e SET registered_count = counted.seats, updated_at = now() "
                "FROM (SELECT ev.id, count(r.id) FILTER (WHERE r.status IN ('registered', 'checked_in')) AS seats "
                "      FROM events AS ev LEFT JOIN event_registrations AS r ON r.event_id = ev.id GROUP BY ev.id) "
                "     AS counted "
                "WHERE e.id = counted.id AND e.registered_count <> counted.seats "
                "RETURNING e.id, e.registered_count"
            ).fetchall()
        return [dict(row) for row in rows]


_CSV_COLUMNS = ("name", "email", "status", "waitlist_position", "registration_date", "id")


def _csv_cell(value: Any) -> str:
    text = "" if value is None else (value.isoformat() if hasattr(value, "isoformat") else str(value))
    # A leading = + - @ would run as a formula when an organizer opens the file in a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def attendees_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in _CSV_COLUMNS])
    return buffer.getvalue()
