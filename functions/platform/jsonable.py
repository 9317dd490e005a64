"""The JSON shape of database values (timestamps, UUIDs, numerics), one definition for the API and caches."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID


def default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=default, separators=(",", ":"))


def json_ready(value: Any) -> Any:
    """Plain JSON types: the shape cached in Redis equals the shape sent to clients."""
    return json.loads(dumps(value))
