"""The Chalice application: the one object that Lambda runs and that `agistack dev` serves locally.

Each route states its access rule; the handlers only parse, call a service and shape the output.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from uuid import UUID

from chalice.app import Chalice, Rate, Response, SQSEvent

from functions.composition import container
from functions.config import IMAGE_UPLOADS_QUEUE
from functions.http import ANYONE, AUTHENTICATED, ORGANIZERS, Call, json_response, route
from functions.queues import process_batch
from functions.schemas import EventCreate, EventListQuery, EventPatch, Login, SignUp
from functions.services.uploads import BadNotification, parse_s3_notification
from shared.errors import NotFound

app = Chalice(app_name="agistack-api")
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


@route(app, "/events", methods=["GET"], roles=ANYONE)
def list_events(call: Call) -> dict[str, Any]:
    query = call.query_model(EventListQuery)
    return container().events.list_published(limit=query.limit, cursor=query.cursor)


@route(app, "/events", methods=["POST"], roles=ORGANIZERS, status=201)
def create_event(call: Call) -> dict[str, Any]:
    form = call.json(EventCreate)
    return {"event": container().events.create(call.require_identity(), form.model_dump())}


@route(app, "/events/{event_id}", methods=["GET"], roles=ANYONE)
def get_event(call: Call) -> dict[str, Any]:
    return {"event": container().events.get(_event_id(call), call.identity)}


@route(app, "/events/{event_id}", methods=["PATCH"], roles=AUTHENTICATED)
def update_event(call: Call) -> dict[str, Any]:
    event_id = _event_id(call)
    form = call.json(EventPatch)
    changes = form.model_dump(include=form.model_fields_set)
    return {"event": container().events.update(event_id, call.require_identity(), changes)}


@route(app, "/events/{event_id}", methods=["DELETE"], roles=AUTHENTICATED)
def delete_event(call: Call) -> Response:
    container().events.delete(_event_id(call), call.require_identity())
    return Response(body="", status_code=204)


@route(app, "/events/{event_id}/registrations", methods=["POST"], roles=AUTHENTICATED, status=201)
def register(call: Call) -> dict[str, Any]:
    return {"registration": container().registrations.register(_event_id(call), call.require_identity())}


@route(app, "/me/registrations", methods=["GET"], roles=AUTHENTICATED)
def my_registrations(call: Call) -> dict[str, Any]:
    return {"items": container().registrations.list_for_user(call.require_identity())}


# --- queue and schedule handlers ------------------------------------------------------------------


def _record_uploads(body: str) -> None:
    for upload in parse_s3_notification(body):
        entry = container().uploads.record(upload)
        app.log.info("upload %s %s", upload.key, "recorded" if entry else "skipped: event is gone")


@app.on_sqs_message(queue=IMAGE_UPLOADS_QUEUE, batch_size=10)
def image_uploaded(event: SQSEvent) -> dict[str, Any]:
    """S3 ObjectCreated (uploads/ prefix) → SQS → here. Idempotent by object key."""
    return process_batch(event, _record_uploads, permanent=BadNotification)


@app.schedule(Rate(1, unit=Rate.DAYS), name="reconcile_seat_counters")
def reconcile_seat_counters(event: Any) -> dict[str, Any]:
    fixed = container().registrations.reconcile_seat_counters()
    if fixed:
        app.log.warning("repaired seat counters: %s", fixed)
    return {"repaired": len(fixed)}
