"""The Chalice application: the one object that Lambda runs and that `agistack dev` serves locally.

Each route states its access rule; the handlers only parse, call a service and shape the output.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from chalice.app import Chalice, Rate, Response

from functions.platform.http import ANYONE, Call, json_response, public_read_response
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, ORGANIZERS, route
from functions.stepperslife.routes import images, processing, push
from functions.stepperslife.schemas import (
    AttendeeQuery,
    EventCreate,
    EventFilterQuery,
    EventListQuery,
    EventPatch,
    EventSearchQuery,
    Login,
    Preferences,
    SignUp,
)
from functions.stepperslife.services.events import EventFilters
from functions.stepperslife.services.registrations import attendees_csv
from shared.errors import NotFound

app = Chalice(app_name="agistack-api")
app.register_blueprint(images.bp)  # POST /events/{event_id}/images and the image_uploaded queue handler
app.register_blueprint(processing.bp)  # domain-events queue handler; relay_outbox and pruning schedules
app.register_blueprint(push.bp)  # POST and DELETE /push/subscriptions
app.log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
logging.getLogger("agistack").setLevel(os.environ.get("LOG_LEVEL", "INFO"))


def _event_id(call: Call) -> str:
    try:
        return str(UUID(call.params["event_id"]))
    except ValueError:
        raise NotFound("event not found") from None


@route(app, "/healthz", methods=["GET"], roles=ANYONE, signed=False)
def healthz(call: Call) -> Response:
    checks = container().health()
    healthy = all(state in ("up", "not configured") for state in checks.values())
    return json_response(200 if healthy else 503, {"status": "ok" if healthy else "degraded", "checks": checks})


@route(app, "/users", methods=["POST"], roles=ANYONE, status=201)
def sign_up(call: Call) -> dict[str, Any]:
    form = call.json(SignUp)
    return {"user": container().users.sign_up(email=form.email, name=form.name, password=form.password)}


@route(app, "/auth/login", methods=["POST"], roles=ANYONE)
def login(call: Call) -> dict[str, Any]:
    """Checks the password and returns the identity; the edge puts it in a session."""
    form = call.json(Login)
    return {"user": container().users.authenticate(email=form.email, password=form.password)}


def _filters(query: EventFilterQuery) -> EventFilters:
    return EventFilters(
        starts_after=query.starts_after,
        starts_before=query.starts_before,
        category=query.category,
        location=query.location,
        organizer_id=str(query.organizer) if query.organizer else None,
        tag=query.tag,
    )


def _after_write() -> None:
    """Hand the outbox to the queue now rather than at the next relay tick (best effort)."""
    try:
        container().outbox_relay.flush()
    except Exception:
        app.log.warning("outbox relay failed; the scheduled relay will retry", exc_info=True)


@route(app, "/events", methods=["GET"], roles=ANYONE)
def list_events(call: Call) -> Response:
    query = call.query_model(EventListQuery)
    page, hit = container().events.list_published(limit=query.limit, cursor=query.cursor, filters=_filters(query))
    return public_read_response(call, page, cache_hit=hit)


@route(app, "/events/search", methods=["GET"], roles=ANYONE)
def search_events(call: Call) -> Response:
    query = call.query_model(EventSearchQuery)
    return public_read_response(call, container().events.search(query.q, limit=query.limit, filters=_filters(query)))


@route(app, "/events", methods=["POST"], roles=ORGANIZERS, status=201, idempotent=True)
def create_event(call: Call) -> dict[str, Any]:
    form = call.json(EventCreate)
    event = container().events.create(call.require_identity(), form.model_dump())
    _after_write()
    return {"event": event}


@route(app, "/events/{event_id}", methods=["GET"], roles=ANYONE)
def get_event(call: Call) -> Response:
    return public_read_response(call, {"event": container().events.get(_event_id(call), call.identity)})


@route(app, "/events/{event_id}", methods=["PATCH"], roles=AUTHENTICATED)
def update_event(call: Call) -> dict[str, Any]:
    event_id = _event_id(call)
    form = call.json(EventPatch)
    changes = form.model_dump(include=form.model_fields_set)
    event = container().events.update(event_id, call.require_identity(), changes)
    _after_write()
    return {"event": event}


@route(app, "/events/{event_id}", methods=["DELETE"], roles=AUTHENTICATED)
def delete_event(call: Call) -> Response:
    container().events.delete(_event_id(call), call.require_identity())
    return Response(body="", status_code=204)


@route(app, "/events/{event_id}/registrations", methods=["POST"], roles=AUTHENTICATED, status=201, idempotent=True)
def register(call: Call) -> dict[str, Any]:
    registration = container().registrations.register(_event_id(call), call.require_identity())
    container().recommendations.forget(call.require_identity().user_id)
    return {"registration": registration}


@route(app, "/events/{event_id}/registrations/me", methods=["DELETE"], roles=AUTHENTICATED)
def cancel_registration(call: Call) -> dict[str, Any]:
    registration = container().registrations.cancel(_event_id(call), call.require_identity())
    container().recommendations.forget(call.require_identity().user_id)
    _after_write()
    return {"registration": registration}


@route(app, "/events/{event_id}/registrations", methods=["GET"], roles=AUTHENTICATED)
def list_attendees(call: Call) -> dict[str, Any]:
    query = call.query_model(AttendeeQuery)
    return {"items": container().registrations.attendees(_event_id(call), call.require_identity(), query.status)}


@route(app, "/events/{event_id}/registrations.csv", methods=["GET"], roles=AUTHENTICATED)
def export_attendees(call: Call) -> Response:
    query = call.query_model(AttendeeQuery)
    rows = container().registrations.attendees(_event_id(call), call.require_identity(), query.status)
    return Response(
        body=attendees_csv(rows),
        status_code=200,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="attendees-{_event_id(call)}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


@route(app, "/events/{event_id}/registrations/{registration_id}/check-in", methods=["POST"], roles=AUTHENTICATED)
def check_in(call: Call) -> dict[str, Any]:
    try:
        registration_id = str(UUID(call.params["registration_id"]))
    except ValueError:
        raise NotFound("registration not found") from None
    return {
        "registration": container().registrations.check_in(_event_id(call), registration_id, call.require_identity())
    }


@route(app, "/me/preferences", methods=["GET"], roles=AUTHENTICATED)
def my_preferences(call: Call) -> dict[str, Any]:
    return {"preferences": container().users.preferences(call.require_identity().user_id)}


@route(app, "/me/preferences", methods=["PUT"], roles=AUTHENTICATED)
def set_my_preferences(call: Call) -> dict[str, Any]:
    user_id = call.require_identity().user_id
    preferences = container().users.set_preferences(user_id, call.json(Preferences).model_dump())
    container().recommendations.forget(user_id)
    return {"preferences": preferences}


@route(app, "/me/recommendations", methods=["GET"], roles=AUTHENTICATED)
def my_recommendations(call: Call) -> dict[str, Any]:
    return container().recommendations.for_user(call.require_identity().user_id)


@route(app, "/me/registrations", methods=["GET"], roles=AUTHENTICATED)
def my_registrations(call: Call) -> dict[str, Any]:
    return {"items": container().registrations.list_for_user(call.require_identity())}


# --- queue and schedule handlers ------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.DAYS), name="send_daily_digest")
def send_daily_digest(event: Any) -> dict[str, Any]:
    """User_Engagement: recommended events pushed once a day to those who opted in."""
    report = container().engagement.send_daily_digest(datetime.now(UTC).date())
    app.log.info("daily digest: %s", report)
    return asdict(report)


@app.schedule(Rate(1, unit=Rate.DAYS), name="reconcile_seat_counters")
def reconcile_seat_counters(event: Any) -> dict[str, Any]:
    fixed = container().registrations.reconcile_seat_counters()
    if fixed:
        app.log.warning("repaired seat counters: %s", fixed)
    return {"repaired": len(fixed)}
