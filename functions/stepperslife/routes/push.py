"""Push subscriptions at the origin: the durable copy behind the edge's push router.

The push router validates and stores a browser's subscription in PUSH_SUBS_KV and forwards it here;
the origin validates again (it trusts no input) and keeps it in PostgreSQL, where the notification
fan-out reads it.
"""

from __future__ import annotations

from typing import Annotated

from chalice.app import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field

from functions.platform.http import Call, json_response
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, route
from functions.stepperslife.responses import PushSubscriptionReply
from shared.net import MAX_URL_LENGTH

bp = Blueprint(__name__)

Endpoint = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]


class PushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    p256dh: Annotated[str, Field(min_length=1, max_length=100)]
    auth: Annotated[str, Field(min_length=1, max_length=40)]


class PushSubscriptionIn(BaseModel):
    """``PushSubscription.toJSON()`` as a browser sends it (``expirationTime`` is accepted, unused)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    endpoint: Endpoint
    keys: PushKeys
    expirationTime: int | None = None


class PushSubscriptionRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    endpoint: Endpoint


@route(
    bp,
    "/push/subscriptions",
    methods=["POST"],
    roles=AUTHENTICATED,
    status=201,
    statuses=(200,),
    body=PushSubscriptionIn,
    response=PushSubscriptionReply,
)
def subscribe(call: Call) -> Response:
    form = call.json(PushSubscriptionIn)
    subscription, created = container().push.subscribe(
        call.require_identity(), form.endpoint, form.keys.p256dh, form.keys.auth
    )
    return json_response(201 if created else 200, {"subscription": subscription})


@route(
    bp,
    "/push/subscriptions",
    methods=["DELETE"],
    roles=AUTHENTICATED,
    status=204,
    body=PushSubscriptionRef,
    errors=(404,),
)
def unsubscribe(call: Call) -> Response:
    form = call.json(PushSubscriptionRef)
    container().push.unsubscribe(call.require_identity(), form.endpoint)
    return Response(body="", status_code=204)
