"""Events: the public listing and search, and each event's create, read, update and delete."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from functions.platform.http import ANYONE, Call, public_read_response
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, ORGANIZERS, route
from functions.stepperslife.responses import EventPage, EventReply, SearchResult
from functions.stepperslife.routes.params import event_id
from functions.stepperslife.schemas import EventCreate, EventFilterQuery, EventListQuery, EventPatch, EventSearchQuery
from functions.stepperslife.services.events import EventFilters

bp = Blueprint(__name__)


def _filters(query: EventFilterQuery) -> EventFilters:
    return EventFilters(
        starts_after=query.starts_after,
        starts_before=query.starts_before,
        category=query.category,
        location=query.location,
        organizer_id=str(query.organizer) if query.organizer else None,
        tag=query.tag,
    )


@route(bp, "/events", methods=["GET"], roles=ANYONE, query=EventListQuery, response=EventPage, errors=(400,))
def list_events(call: Call) -> Response:
    query = call.query_model(EventListQuery)
    page, hit = container().events.list_published(
        limit=query.limit, cursor=query.cursor, filters=_filters(query), viewer=call.identity
    )
    return public_read_response(call, page, cache_hit=hit)


@route(
    bp, "/events/search", methods=["GET"], roles=ANYONE, query=EventSearchQuery, response=SearchResult, errors=(400,)
)
def search_events(call: Call) -> Response:
    query = call.query_model(EventSearchQuery)
    return public_read_response(call, container().events.search(query.q, limit=query.limit, filters=_filters(query)))


@route(
    bp,
    "/events",
    methods=["POST"],
    roles=ORGANIZERS,
    status=201,
    idempotent=True,
    body=EventCreate,
    response=EventReply,
)
def create_event(call: Call) -> dict[str, Any]:
    form = call.json(EventCreate)
    return {"event": container().events.create(call.require_identity(), form.model_dump())}


@route(bp, "/events/{event_id}", methods=["GET"], roles=ANYONE, response=EventReply)
def get_event(call: Call) -> Response:
    return public_read_response(call, {"event": container().events.get(event_id(call), call.identity)})


@route(
    bp,
    "/events/{event_id}",
    methods=["PATCH"],
    roles=AUTHENTICATED,
    body=EventPatch,
    response=EventReply,
    errors=(409,),
)
def update_event(call: Call) -> dict[str, Any]:
    event = event_id(call)
    form = call.json(EventPatch)
    changes = form.model_dump(include=form.model_fields_set)
    return {"event": container().events.update(event, call.require_identity(), changes)}


@route(bp, "/events/{event_id}", methods=["DELETE"], roles=AUTHENTICATED, status=204, errors=(409,))
def delete_event(call: Call) -> Response:
    container().events.delete(event_id(call), call.require_identity())
    return Response(body="", status_code=204)
