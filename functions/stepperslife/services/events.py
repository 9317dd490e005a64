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
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg

from functions.platform.cache import Cache, cache_key, digest
from functions.platform.jsonable import json_ready
from functions.platform.ports import OutboxFlush, Row, TransactionalDatabase
from functions.stepperslife.cache_policy import TTL_API_RESPONSE
from functions.stepperslife.services.domain_events import outbox
from functions.stepperslife.services.invalidation import CACHE_SERVICE, LIST_FAMILY, EventInvalidation, event_family
from shared.envelope import Identity
from shared.errors import BadRequest, Conflict, Forbidden, NotFound

EVENT_COLUMNS = (
    "id, user_id, title, slug, description, event_date, ends_at, time_zone, location, category, tags, "
    "latitude, longitude, status, capacity, registered_count, images, metadata, published_at, created_at, updated_at"
)
# Allowed status changes; a cancelled event is final and a published one never returns to draft.
_TRANSITIONS = {
    "draft": {"draft", "published", "cancelled"},
    "published": {"published", "cancelled"},
    "cancelled": {"cancelled"},
}
_UPDATABLE = (
    "title",
    "description",
    "event_date",
    "ends_at",
    "time_zone",
    "location",
    "category",
    "tags",
    "latitude",
    "longitude",
    "capacity",
)


# Of a ready picture, what a page needs to show it; everything else in an entry (the content hash, the
# private original's key, camera, lens, capture time, failure reasons) is for the organizer and admins.
_PUBLIC_VARIANT_FIELDS = ("url_width", "width", "height", "format", "content_type", "bytes")


def public_images(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pictures anyone may see (entries as ``services/uploads.py`` writes them): ready ones only,
    with their displayed dimensions, variants (served at ``/img/{event_id}/{id}/{url_width}``),
    blurhash and dominant colour."""
    return [
        {
            "id": entry["id"],
            "width": entry["original"]["width"],
            "height": entry["original"]["height"],
            "variants": [{name: variant[name] for name in _PUBLIC_VARIANT_FIELDS} for variant in entry["variants"]],
            "blurhash": entry["blurhash"],
            "dominant_color": entry["dominant_color"],
        }
        for entry in entries
        if entry.get("status") == "ready"
    ]


def public_event(row: Row, viewer: Identity | None = None) -> dict[str, Any]:
    """The event as ``viewer`` may see it: its organizer and admins get every picture entry, with its
    processing state and metadata; everyone else the ready pictures only (``public_images``)."""
    event = {key: row[key] for key in row if key not in ("registered_count", "user_id")}
    event["organizer_id"] = row["user_id"]
    event["seats_left"] = row["capacity"] - row["registered_count"]
    if not can_manage(viewer, row):
        event["images"] = public_images(row["images"])
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


@dataclass(frozen=True)
class EventFilters:
    """Filters of the public listing and of search; all optional, combined with AND."""

    starts_after: datetime | None = None
    starts_before: datetime | None = None
    category: str | None = None
    location: str | None = None
    organizer_id: str | None = None
    tag: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """SQL to append after a WHERE (each clause starts with AND) and its named parameters."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.starts_after is not None:
            clauses.append("event_date >= %(starts_after)s")
            params["starts_after"] = self.starts_after
        if self.starts_before is not None:
            clauses.append("event_date < %(starts_before)s")
            params["starts_before"] = self.starts_before
        if self.category:
            clauses.append("category = %(category)s")
            params["category"] = self.category
        if self.location:
            # ILIKE with the user's text as data: its % and _ are escaped so they match themselves.
            escaped = self.location.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("location ILIKE %(location)s")
            params["location"] = f"%{escaped}%"
        if self.organizer_id:
            clauses.append("user_id = %(organizer_id)s")
            params["organizer_id"] = self.organizer_id
        if self.tag:
            clauses.append("tags @> ARRAY[%(tag)s]::text[]")
            params["tag"] = self.tag
        return "".join(f" AND {clause}" for clause in clauses), params


_NATURAL_FILTER = re.compile(r'\b(category|tag|location|after|before):("([^"]*)"|(\S+))', re.IGNORECASE)


def parse_search(text: str) -> tuple[str, dict[str, str]]:
    """Split ``salsa category:social after:2027-05-01 location:"New York"`` into words and filters."""
    filters: dict[str, str] = {}

    def take(match: re.Match[str]) -> str:
        filters[match.group(1).lower()] = match.group(3) if match.group(3) is not None else match.group(4)
        return " "

    words = _NATURAL_FILTER.sub(take, text)
    return " ".join(words.split()), filters


class EventService:
    """Each write commits its change and its outbox row together, then makes cached reads miss
    (``EventInvalidation``) and hands the outbox to the transport (``OutboxFlush``)."""

    def __init__(
        self, db: TransactionalDatabase, cache: Cache, *, invalidation: EventInvalidation, outbox: OutboxFlush
    ) -> None:
        self._db = db
        self._cache = cache
        self._invalidation = invalidation
        self._outbox = outbox
        self._has_trigram: bool | None = None

    def _changed(self, conn: psycopg.Connection[Row], row: Row, previous_status: str | None) -> None:
        """Announce a change (outbox, same transaction) and make cached reads miss afterwards."""
        topic = None
        if row["status"] == "published" and previous_status != "published":
            topic = "event.published"
        elif row["status"] == "cancelled" and previous_status != "cancelled":
            topic = "event.cancelled"
        elif row["status"] == "published":
            topic = "event.updated"
        if topic:
            payload = {"event_id": str(row["id"]), "status": row["status"], "updated_at": row["updated_at"].isoformat()}
            outbox.enqueue(conn, topic, payload, dedup_key=f"{topic}:{row['id']}:{row['updated_at'].isoformat()}")

    def _committed(self, event_id: str) -> None:
        """What follows every committed write: cached reads miss, and the outbox goes out now."""
        self._invalidation.invalidate_event(event_id)
        self._outbox.flush_after_commit()

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
                    self._changed(conn, row, None)
                self._committed(str(row["id"]))
                return public_event(row, organizer)
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
        def load() -> dict[str, Any]:
            with self._db.transaction() as conn:
                event: dict[str, Any] = json_ready(public_event(self._visible_row(conn, event_id, viewer), viewer))
                return event

        if viewer is not None:
            return load()
        version = self._cache.version(CACHE_SERVICE, event_family(event_id))
        key = cache_key(CACHE_SERVICE, "event", event_id, version)
        event, _ = self._cache.get_or_load(key, TTL_API_RESPONSE, load)
        return event

    def list_published(
        self, *, limit: int, cursor: str | None, filters: EventFilters | None = None, viewer: Identity | None = None
    ) -> tuple[dict[str, Any], bool]:
        """A page of published events, newest first, with the drafts ``viewer`` may see (their own; an
        admin's: all); returns (page, served_from_cache). Only the anonymous listing is cached."""
        filters = filters or EventFilters()

        def load() -> dict[str, Any]:
            where, params = filters.where()
            visible = "status = 'published'"
            if viewer is not None and viewer.role == "admin":
                visible = "status IN ('published', 'draft')"
            elif viewer is not None:
                visible = "(status = 'published' OR (status = 'draft' AND user_id::text = %(viewer)s))"
                params["viewer"] = viewer.user_id
            if cursor:
                params["cursor_date"], params["cursor_id"] = decode_cursor(cursor)
                where += " AND (event_date, id) < (%(cursor_date)s, %(cursor_id)s)"
            with self._db.transaction() as conn:
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE {visible}{where} "
                    "ORDER BY event_date DESC, id DESC LIMIT %(limit)s",
                    {**params, "limit": limit + 1},
                ).fetchall()
            page = rows[:limit]
            next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
            result: dict[str, Any] = json_ready(
                {"items": [public_event(row) for row in page], "next_cursor": next_cursor}
            )
            return result

        if viewer is not None:
            return load(), False
        version = self._cache.version(CACHE_SERVICE, LIST_FAMILY)
        query = {"limit": limit, "cursor": cursor, **asdict(filters)}
        key = cache_key(CACHE_SERVICE, "events", f"list:{digest(query)}", version)
        return self._cache.get_or_load(key, TTL_API_RESPONSE, load)

    def has_trigram(self) -> bool:
        if self._has_trigram is None:
            with self._db.transaction() as conn:
                found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()
            self._has_trigram = found is not None
        return self._has_trigram

    def search(self, text: str, *, limit: int, filters: EventFilters) -> dict[str, Any]:
        """Published events matching ``text`` by full-text rank, tolerant of typos where pg_trgm exists."""
        words, natural = parse_search(text)
        filters = replace(
            filters,
            category=natural.get("category", filters.category),
            tag=natural.get("tag", filters.tag),
            location=natural.get("location", filters.location),
            starts_after=_date(natural["after"]) if "after" in natural else filters.starts_after,
            starts_before=_date(natural["before"]) if "before" in natural else filters.starts_before,
        )
        where, params = filters.where()
        params |= {"q": words, "limit": limit}
        exact = "search_vector @@ websearch_to_tsquery('english', %(q)s)" if words else "TRUE"
        rank = "ts_rank_cd(search_vector, websearch_to_tsquery('english', %(q)s), 32)" if words else "0"
        fuzzy = self.has_trigram() and bool(words)
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS}, {rank} AS rank FROM events WHERE status = 'published' AND {exact}{where} "
                "ORDER BY rank DESC, event_date DESC, id DESC LIMIT %(limit)s",
                params,
            ).fetchall()
            if fuzzy and len(rows) < limit:
                # Typo tolerance only fills what exact search left empty: trigram matching is far
                # costlier than the full-text index, and exact hits always rank first.
                conn.execute("SET LOCAL pg_trgm.word_similarity_threshold = 0.5")
                rows += conn.execute(
                    f"SELECT {EVENT_COLUMNS}, word_similarity(lower(%(q)s), lower(title)) / 10 AS rank FROM events "
                    f"WHERE status = 'published' AND lower(title) %%> lower(%(q)s) "
                    f"AND id <> ALL(%(found)s){where} ORDER BY rank DESC, event_date DESC, id DESC "
                    "LIMIT %(fill)s",
                    {**params, "found": [row["id"] for row in rows], "fill": limit - len(rows)},
                ).fetchall()
        items = []
        for row in rows:
            item = public_event({key: value for key, value in row.items() if key != "rank"})
            item["rank"] = round(float(row["rank"]), 4)
            items.append(item)
        return {"items": items, "query": words, "filters": natural, "typo_tolerant": fuzzy}

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
            if ("latitude" in changes) != ("longitude" in changes):
                raise Conflict("latitude and longitude change together", code="invalid_coordinates")
            assignments = [f"{name} = %s" for name in _UPDATABLE if name in changes]
            values = [changes[name] for name in _UPDATABLE if name in changes]
            if new_status != current["status"]:
                assignments.append("status = %s")
                values.append(new_status)
                if new_status == "published":
                    assignments.append("published_at = now()")
            if not assignments:
                return public_event(current, actor)
            row = conn.execute(
                f"UPDATE events SET {', '.join(assignments)}, updated_at = now() WHERE id = %s "
                f"RETURNING {EVENT_COLUMNS}",
                [*values, event_id],
            ).fetchone()
            assert row is not None
            self._changed(conn, row, current["status"])
        self._committed(event_id)
        return public_event(row, actor)

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
        self._committed(event_id)


def _date(text: str) -> datetime:
    """A search filter's date; a bare date or naive time is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest("after: and before: take dates like 2027-05-01", code="bad_search_filter") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
