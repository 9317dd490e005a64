"""Alerting: rules per site (a customer's owner) and per plan (staff), a site's alert history, the
customer's webhooks and staff's push subscriptions.

Access: a customer's users read their sites' rules and history, owners change them (the services
decide on the role the database holds now); plan defaults and push subscriptions are staff's.
Another customer's site, rule or webhook is 404.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from functions.agistaffers.composition import container
from functions.agistaffers.http import CUSTOMER_USERS, SIGNED_IN, STAFF, caller, path_id, route
from functions.agistaffers.responses import (
    AlertHistory,
    AlertRuleReply,
    NewWebhook,
    PlanAlertRules,
    SiteAlertRules,
    Webhooks,
)
from functions.agistaffers.schemas import AlertRuleCreate, AlertRulePatch, WebhookCreate
from functions.platform.http import Call, json_response
from functions.platform.responses import PushSubscriptionReply
from functions.platform.schemas import PushSubscriptionIn, PushSubscriptionRef

bp = Blueprint(__name__)


@route(bp, "/sites/{site_id}/alert-rules", methods=["GET"], roles=SIGNED_IN, response=SiteAlertRules)
def site_rules(call: Call) -> dict[str, Any]:
    return container().alert_rules.for_site(caller(call), path_id(call, "site_id", "site"))


@route(
    bp,
    "/sites/{site_id}/alert-rules",
    methods=["POST"],
    roles=SIGNED_IN,
    status=201,
    body=AlertRuleCreate,
    response=AlertRuleReply,
    errors=(403, 409),
)
def add_site_rule(call: Call) -> dict[str, Any]:
    form = call.json(AlertRuleCreate)
    site_id = path_id(call, "site_id", "site")
    return {"rule": container().alert_rules.create_for_site(caller(call), site_id, form.model_dump())}


@route(bp, "/plans/{plan}/alert-rules", methods=["GET"], roles=STAFF, response=PlanAlertRules, errors=(404,))
def plan_rules(call: Call) -> dict[str, Any]:
    return container().alert_rules.for_plan(caller(call), call.params["plan"])


@route(
    bp,
    "/plans/{plan}/alert-rules",
    methods=["POST"],
    roles=STAFF,
    status=201,
    body=AlertRuleCreate,
    response=AlertRuleReply,
    errors=(404, 409),
)
def add_plan_rule(call: Call) -> dict[str, Any]:
    form = call.json(AlertRuleCreate)
    return {"rule": container().alert_rules.create_for_plan(caller(call), call.params["plan"], form.model_dump())}


@route(
    bp,
    "/alert-rules/{rule_id}",
    methods=["PATCH"],
    roles=SIGNED_IN,
    body=AlertRulePatch,
    response=AlertRuleReply,
    errors=(403, 409),
)
def change_rule(call: Call) -> dict[str, Any]:
    form = call.json(AlertRulePatch)
    rule_id = path_id(call, "rule_id", "alert_rule")
    return {"rule": container().alert_rules.update(caller(call), rule_id, form.changes())}


@route(bp, "/alert-rules/{rule_id}", methods=["DELETE"], roles=SIGNED_IN, status=204, errors=(403, 409))
def delete_rule(call: Call) -> Response:
    container().alert_rules.delete(caller(call), path_id(call, "rule_id", "alert_rule"))
    return Response(body="", status_code=204)


@route(bp, "/sites/{site_id}/alerts", methods=["GET"], roles=SIGNED_IN, response=AlertHistory)
def site_alerts(call: Call) -> dict[str, Any]:
    return container().alert_rules.history(caller(call), path_id(call, "site_id", "site"))


@route(bp, "/webhooks", methods=["GET"], roles=CUSTOMER_USERS, response=Webhooks)
def list_webhooks(call: Call) -> dict[str, Any]:
    return container().webhooks.list(caller(call))


@route(
    bp,
    "/webhooks",
    methods=["POST"],
    roles=CUSTOMER_USERS,
    status=201,
    body=WebhookCreate,
    response=NewWebhook,
    errors=(403, 409),
)
def add_webhook(call: Call) -> dict[str, Any]:
    return container().webhooks.register(caller(call), call.json(WebhookCreate).url)


@route(bp, "/webhooks/{webhook_id}", methods=["DELETE"], roles=CUSTOMER_USERS, status=204, errors=(403,))
def delete_webhook(call: Call) -> Response:
    container().webhooks.delete(caller(call), path_id(call, "webhook_id", "webhook"))
    return Response(body="", status_code=204)


@route(
    bp,
    "/push/subscriptions",
    methods=["POST"],
    roles=STAFF,
    status=201,
    statuses=(200,),
    body=PushSubscriptionIn,
    response=PushSubscriptionReply,
)
def subscribe(call: Call) -> Response:
    form = call.json(PushSubscriptionIn)
    subscription, created = container().staff_push.subscribe(
        caller(call), form.endpoint, form.keys.p256dh, form.keys.auth
    )
    return json_response(201 if created else 200, {"subscription": subscription})


@route(bp, "/push/subscriptions", methods=["DELETE"], roles=STAFF, status=204, body=PushSubscriptionRef, errors=(404,))
def unsubscribe(call: Call) -> Response:
    container().staff_push.unsubscribe(caller(call), call.json(PushSubscriptionRef).endpoint)
    return Response(body="", status_code=204)
