"""Push subscriptions at the origin: the durable copy behind the edge's push router.

The push router validates and stores a browser's subscription in PUSH_SUBS_KV and forwards it here;
the origin validates again (it trusts no input) and keeps it in PostgreSQL, where the notification
fan-out reads it.
"""

from __future__ import annotations

from chalice.app import Blueprint, Response

from functions.platform.http import Call, json_response
from functions.platform.responses import PushSubscriptionReply
from functions.platform.schemas import PushSubscriptionIn, PushSubscriptionRef
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, route

bp = Blueprint(__name__)


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
