"""Events: create, read, update, delete and the public listing.

Access: anyone reads published and cancelled events; drafts are visible to their organizer and to
admins only (to others they do not exist: 404); only the organizer or an admin changes an event.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import unicodedata
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from functions.services.ports import Row, TransactionalDatabase
from shared.envelope import Identity
from shared.errors import BadRequest, Conflict, Forbidden, NotFound

EVENT_COLUMNS = (
    "id, user_id, title, slug, description, event_date, ends_at, time_zone, location, category, status, "
    "capacity, registered_count, images, metadata, published_at, created_at, updated_at"
)
# Allowed status changes; a cancelled event is final and a published one never returns to draft.
_TRANSITIONS = {
    "draft": {"draft", "published", "cancelled"},
    "published": {"published", "cancelled"},
    "cancelled": {"cancelled"},
}
_UPDATABLE = ("title", "description", "event_date", "ends_at", "time_zone", "location", "category", "capacity")


def public_event(row: Row) -> dict[str, Any]:
    event = {key: row[key] for key in row if key not in ("registered_count", "user_id")}
    event["organizer_id"] = row["user_id"]
    event["seats_left"] = row["capacity"] - row["registered_count"]
    return event


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:100].strip("-")
    return slug or "event"


def encode_cursor(row: Row) -> str:
    raw = json.dumps([row["event_date"].isoformat(), str(row["id"])]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        event_date, event_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(event_date), UUID(event_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadRequest("the cursor is not one this API issued", code="bad_cursor") from exc


def can_manage(identity: Identity | None, row: Row) -> bool:
    return identity is not None and (identity.role == "admin" or str(row["user_id"]) == identity.user_id)


class EventService:
    def __init__(self, db: TransactionalDatabase) -> None:
        self._db = db

    def create(self, organizer: Identity, fields: dict[str, Any]) -> dict[str, Any]:
        explicit_slug = fields.pop("slug", None)
        base_slug = explicit_slug or slugify(fields["title"])
        columns = [*fields, "user_id", "slug"]
        published_at = "now()" if fields.get("status") == "published" else "NULL"
        statement = (
            f"INSERT INTO events ({', '.join(columns)}, published_at) "
            f"VALUES ({', '.join(['%s'] * len(columns))}, {published_at}) RETURNING {EVENT_COLUMNS}"
        )
        for attempt in range(5):
            # A taken generated slug gets a short random suffix; a slug never changes once given.
            slug = base_slug if attempt == 0 else f"{base_slug[:110]}-{secrets.token_hex(3)}"
            try:
                with self._db.transaction() as conn:
                    row = conn.execute(statement, [*fields.values(), organizer.user_id, slug]).fetchone()
                assert row is not None
                return public_event(row)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "events_slug_key":
                    raise
                if explicit_slug:
                    raise Conflict("this slug is taken", code="slug_taken") from exc
        raise Conflict("could not find a free slug for this title", code="slug_taken")

    def _visible_row(self, conn: psycopg.Connection[Row], event_id: str, viewer: Identity | None) -> Row:
        row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,)).fetchone()
        if row is None or (row["status"] == "draft" and not can_manage(viewer, row)):
            raise NotFound("event not found")
        return row

    def get(self, event_id: str, viewer: Identity | None) -> dict[str, Any]:
        with self._db.transaction() as conn:
            return public_event(self._visible_row(conn, event_id, viewer))

    def list_published(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        params: list[Any] = []
        after = ""
        if cursor:
            event_date, event_id = decode_cursor(cursor)
            after = "AND (event_date, id) < (%s, %s)"
            params += [event_date, event_id]
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE status = 'published' {after} "
                "ORDER BY event_date DESC, id DESC LIMIT %s",
                [*params, limit + 1],
            ).fetchall()
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
        return {"items": [public_event(row) for row in page], "next_cursor": next_cursor}

    def update(self, event_id: str, actor: Identity, changes: dict[str, Any]) -> dict[str, Any]:
        with self._db.transaction() as conn:
            current = self._visible_row(conn, event_id, actor)
            if not can_manage(actor, current):
                raise Forbidden("only the organizer or an admin may change this event")
            if current["status"] == "cancelled" and changes:
                raise Conflict("a cancelled event cannot be changed", code="event_cancelled")
            new_status = changes.get("status", current["status"])
            if new_status not in _TRANSITIONS[current["status"]]:
                raise Conflict(
                    f"an event cannot go from {current['status']} to {new_status}", code="invalid_transition"
                )
            if changes.get("capacity") is not None and changes["capacity"] < current["registered_count"]:
                raise Conflict(
                    "capacity cannot go below the number of registered attendees",
                    code="capacity_below_registrations",
                    details={"registered": current["registered_count"]},
                )
            start = changes.get("event_date", current["event_date"])
            end = changes.get("ends_at", current["ends_at"])
            if end is not None and end < start:
                raise Conflict("the event cannot end before it starts", code="invalid_dates")
            assignments = [f"{name} = %s" for name in _UPDATABLE if name in changes]
            values = [changes[name] for name in _UPDATABLE if name in changes]
            if new_status != current["status"]:
                assignments.append("status = %s")
                values.append(new_status)
                if new_status == "published":
                    assignments.append("published_at = now()")
            if not assignments:
                return public_event(current)
            row = conn.execute(
                f"UPDATE events SET {', '.join(assignments)}, updated_at = now() WHERE id = %s "
                f"RETURNING {EVENT_COLUMNS}",
                [*values, event_id],
            ).fetchone()
        assert row is not None
        return public_event(row)

    def delete(self, event_id: str, actor: Identity) -> None:
        with self._db.transaction() as conn:
            current = self._visible_row(conn, event_id, actor)
            if not can_manage(actor, current):
                raise Forbidden("only the organizer or an admin may delete this event")
            has_people = conn.execute(
                "SELECT 1 FROM event_registrations WHERE event_id = %s AND status <> 'cancelled' LIMIT 1",
                (event_id,),
            ).fetchone()
            if has_people:
                raise Conflict(
                    "this event has registrations; cancel it instead so attendees are told",
                    code="event_has_registrations",
                )
            conn.execute("DELETE FROM events WHERE id = %s", (event_id,))
