"""The signed-in user's own resources: preferences, recommendations and registrations; and the daily
digest of recommended events pushed to those who opted in."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from chalice.app import Blueprint, CloudWatchEvent, Rate

from functions.platform.http import Call
from functions.platform.tracing import in_new_trace
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, route
from functions.stepperslife.responses import PreferencesReply, Recommendations, Registrations
from functions.stepperslife.schemas import Preferences

log = logging.getLogger("agistack.engagement")

bp = Blueprint(__name__)


@route(bp, "/me/preferences", methods=["GET"], roles=AUTHENTICATED, response=PreferencesReply)
def my_preferences(call: Call) -> dict[str, Any]:
    return {"preferences": container().users.preferences(call.require_identity().user_id)}


@route(bp, "/me/preferences", methods=["PUT"], roles=AUTHENTICATED, body=Preferences, response=PreferencesReply)
def set_my_preferences(call: Call) -> dict[str, Any]:
    user_id = call.require_identity().user_id
    return {"preferences": container().users.set_preferences(user_id, call.json(Preferences).model_dump())}


@route(bp, "/me/recommendations", methods=["GET"], roles=AUTHENTICATED, response=Recommendations)
def my_recommendations(call: Call) -> dict[str, Any]:
    return container().recommendations.for_user(call.require_identity().user_id)


@route(bp, "/me/registrations", methods=["GET"], roles=AUTHENTICATED, response=Registrations)
def my_registrations(call: Call) -> dict[str, Any]:
    return {"items": container().registrations.list_for_user(call.require_identity())}


@bp.schedule(Rate(1, unit=Rate.DAYS), name="send_daily_digest")
@in_new_trace
def send_daily_digest(event: CloudWatchEvent) -> dict[str, Any]:
    """User_Engagement: recommended events pushed once a day to those who opted in."""
    report = container().engagement.send_daily_digest(datetime.now(UTC).date())
    log.info("daily digest: %s", report)
    return asdict(report)
