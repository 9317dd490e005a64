"""Response-body building blocks both products' ``responses`` modules use (pydantic v2).

They describe answers for the API's document (``functions/platform/openapi.py``), which the contract
fuzz checks every answer against; the handlers keep returning plain data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class Reply(BaseModel):
    """A response body: the fields every answer carries; an answer may carry more (``extra="allow"``),
    never fewer."""

    model_config = ConfigDict(extra="allow")


class Health(Reply):
    """``GET /healthz``: each dependency's state."""

    status: Literal["ok", "degraded"]
    checks: dict[str, str]


class PushSubscription(Reply):
    """A browser's push subscription as both products store it (never its keys)."""

    id: UUID
    endpoint: str
    endpoint_hash: str
    created_at: datetime
    updated_at: datetime


class PushSubscriptionReply(Reply):
    subscription: PushSubscription
