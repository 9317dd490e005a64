"""AGI Staffers services, and the small helpers they share: keyset cursors and LIKE patterns.

Cursors are opaque to clients: base64url of a JSON ``[created_at, id]`` pair naming the last row of
the previous page. Anything else is ``ValidationFailed(code="invalid_cursor")``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from functions.platform.ports import Row, TransactionalDatabase
from shared.errors import ValidationFailed

MAX_PAGE_SIZE = 100


def encode_cursor(row: Row) -> str:
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, UUID(row_id)
    except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
        # ValueError covers bad base64 text, bad JSON and bad UUIDs; TypeError and AttributeError a
        # JSON value of the wrong shape (a number, a list of three).
        raise ValidationFailed("the cursor is not one this API issued", code="invalid_cursor") from exc


def page_size(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationFailed(f"limit is a whole number from 1 to {MAX_PAGE_SIZE}", code="invalid_limit")
    return limit


def like_pattern(text: str) -> str:
    """A substring pattern for ILIKE in which the user's %, _ and \\ are literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_pattern(q: Any) -> str:
    """A search term (``q``) as an ILIKE substring pattern; 1 to 200 characters, no NUL."""
    if not isinstance(q, str) or not q.strip() or len(q) > 200 or "\x00" in q:
        raise ValidationFailed("q is 1 to 200 characters", code="invalid_query")
    return like_pattern(q.strip())


def newest_first(
    db: TransactionalDatabase,
    select: str,
    alias: str,
    where: list[str],
    params: dict[str, Any],
    *,
    limit: int,
    cursor: str | None,
    shape: Callable[[Row], dict[str, Any]],
) -> dict[str, Any]:
    """One keyset page of ``select`` (``SELECT … FROM table alias``), newest first by (created_at, id):
    ``{"items", "next_cursor"}``. ``where`` and ``params`` hold the caller's filters."""
    if cursor is not None:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
        where.append(f"({alias}.created_at, {alias}.id) < (%(cursor_at)s, %(cursor_id)s)")
    with db.transaction() as conn:
        rows = conn.execute(
            f"{select} WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY {alias}.created_at DESC, {alias}.id DESC LIMIT %(limit)s",
            {**params, "limit": limit + 1},
        ).fetchall()
    page = rows[:limit]
    return {
        "items": [shape(row) for row in page],
        "next_cursor": encode_cursor(page[-1]) if len(rows) > limit else None,
    }


def parse_uuid(value: Any) -> UUID | None:
    """``value`` as a UUID, or None when it is not one (callers answer 404: a malformed id names nothing)."""
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None
