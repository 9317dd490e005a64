"""AGI Staffers services, and the small helpers they share: keyset cursors and LIKE patterns.

Cursors are opaque to clients: base64url of a JSON ``[created_at, id]`` pair naming the last row of
the previous page. Anything else is ``ValidationFailed(code="invalid_cursor")``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from functions.platform.ports import Row
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
