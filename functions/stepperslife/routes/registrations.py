"""Registrations of an event: register, cancel, the organizer's attendee list and check-in; and the
daily check of the seat counters."""

from __future__ import annotations

import logging
from typing import Any

from chalice.app import Blueprint, CloudWatchEvent, Rate, Response

from functions.platform.http import Call
from functions.platform.tracing import in_new_trace
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, route
from functions.stepperslife.responses import Attendees, RegistrationReply
from functions.stepperslife.routes.params import event_id, uuid_param
from functions.stepperslife.schemas import AttendeeQuery
from functions.stepperslife.services.registrations import attendees_csv

log = logging.getLogger("agistack.registrations")

bp = Blueprint(__name__)


@route(
    bp,
    "/events/{event_id}/registrations",
    methods=["POST"],
    roles=AUTHENTICATED,
    status=201,
    idempotent=True,
    response=RegistrationReply,
)
def register(call: Call) -> dict[str, Any]:
    return {"registration": container().registrations.register(event_id(call), call.require_identity())}


@route(bp, "/events/{event_id}/registrations/me", methods=["DELETE"], roles=AUTHENTICATED, response=RegistrationReply)
def cancel_registration(call: Call) -> dict[str, Any]:
    return {"registration": container().registrations.cancel(event_id(call), call.require_identity())}


@route(
    bp,
    "/events/{event_id}/registrations",
    methods=["GET"],
    roles=AUTHENTICATED,
    query=AttendeeQuery,
    response=Attendees,
)
def list_attendees(call: Call) -> dict[str, Any]:
    query = call.query_model(AttendeeQuery)
    return {"items": container().registrations.attendees(event_id(call), call.require_identity(), query.status)}


@route(
    bp,
    "/events/{event_id}/registrations.csv",
    methods=["GET"],
    roles=AUTHENTICATED,
    query=AttendeeQuery,
    media_type="text/csv",
)
def export_attendees(call: Call) -> Response:
    query = call.query_model(AttendeeQuery)
    event = event_id(call)
    rows = container().registrations.attendees(event, call.require_identity(), query.status)
    return Response(
        body=attendees_csv(rows),
        status_code=200,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="attendees-{event}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


@route(
    bp,
    "/events/{event_id}/registrations/{registration_id}/check-in",
    methods=["POST"],
    roles=AUTHENTICATED,
    response=RegistrationReply,
    errors=(409,),
)
def check_in(call: Call) -> dict[str, Any]:
    registration_id = uuid_param(call, "registration_id", "registration")
    return {
        "registration": container().registrations.check_in(event_id(call), registration_id, call.require_identity())
    }


@bp.schedule(Rate(1, unit=Rate.DAYS), name="reconcile_seat_counters")
@in_new_trace
def reconcile_seat_counters(event: CloudWatchEvent) -> dict[str, Any]:
    fixed = container().registrations.reconcile_seat_counters()
    if fixed:
        log.warning("repaired seat counters: %s", fixed)
    return {"repaired": len(fixed)}
