"""Path parameters that name rows: a malformed id is a 404, as an unknown one is."""

from __future__ import annotations

from uuid import UUID

from functions.platform.http import Call
from shared.errors import NotFound


def uuid_param(call: Call, name: str, what: str) -> str:
    try:
        return str(UUID(call.params[name]))
    except ValueError:
        raise NotFound(f"{what} not found") from None


def event_id(call: Call) -> str:
    return uuid_param(call, "event_id", "event")
