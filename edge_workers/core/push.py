"""The push router's handlers: browser subscriptions in PUSH_SUBS_KV and at the origin, and the VAPID key.

``POST /push/subscriptions`` takes ``PushSubscription.toJSON()``: an https endpoint on a public host
(``shared.net.parse_url``: no IP literal outside public space, embedded IPv4 forms included, no
localhost/.local/.internal names, no ambiguous spelling, port 443 only), a
``p256dh`` key that is an uncompressed point on P-256 and a 16-byte ``auth`` secret, both base64url:
the keys are checked by ``shared.push_subscription``, the check the origin runs too, so the edge
refuses what the origin would refuse. Workers cannot resolve DNS, so the edge checks the host's
syntax and IP literals; the origin resolves the name and checks every address before it sends
(``shared.net``). The origin keeps the durable copy (it is called first: no edge copy without a
durable one); the edge copy's key (``shared.kv_keys``) is the one the origin's pruning deletes.
"""

from __future__ import annotations

import json
from typing import Any

from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeResponse, Headers
from edge_workers.core.upstream import call_origin, relay
from shared import jsonbody
from shared.errors import BadRequest
from shared.kv_keys import endpoint_hash, push_subscription_key
from shared.net import MAX_URL_LENGTH, UnsafeUrl, parse_url
from shared.push_subscription import invalid, validate_keys

ORIGIN_PATH = "/push/subscriptions"


def check_endpoint(endpoint: Any) -> str:
    """An https endpoint on port 443 of a public host, in a spelling every parser reads alike
    (``shared.net.parse_url``, the check the origin's guard runs before it resolves the name)."""
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_URL_LENGTH:
        raise invalid(["endpoint"], f"the endpoint must be a URL of at most {MAX_URL_LENGTH} characters")
    try:
        parse_url(endpoint)
    except UnsafeUrl as exc:
        raise invalid(["endpoint"], f"the endpoint is refused: {exc}") from exc
    return endpoint


def validate_subscription(document: Any) -> dict[str, Any]:
    """``{"endpoint", "keys": {"p256dh", "auth"}}`` from a browser's subscription, or 422."""
    if not isinstance(document, dict):
        raise invalid(["body"], "the subscription must be a JSON object")
    unknown = sorted(set(document) - {"endpoint", "expirationTime", "keys"})
    if unknown:
        raise invalid([unknown[0]], "unknown field")
    expiration = document.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int | float)):
        raise invalid(["expirationTime"], "expirationTime must be null or a number")
    endpoint = check_endpoint(document.get("endpoint"))
    keys = document.get("keys")
    if not isinstance(keys, dict):
        raise invalid(["keys"], "keys must be an object with p256dh and auth")
    p256dh, auth = validate_keys(keys.get("p256dh"), keys.get("auth"))
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}


def _json_body(body: bytes) -> Any:
    try:
        return jsonbody.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the body is not valid JSON", code="malformed_json") from exc


async def handle_subscription(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    identity, route = exchange.identity, exchange.route
    if identity is None or route is None or route.origin is None:
        raise RuntimeError("the subscription route must require an identity and name an origin")
    document = _json_body(body)
    if exchange.request.method == "POST":
        subscription = validate_subscription(document)
    else:
        endpoint = document.get("endpoint") if isinstance(document, dict) else None
        if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_URL_LENGTH:
            raise invalid(["endpoint"], "the endpoint to remove is missing")
        subscription = {"endpoint": endpoint}
    store = deps.kv.PUSH_SUBS_KV
    key = push_subscription_key(endpoint_hash(subscription["endpoint"]))
    response = await call_origin(
        deps,
        exchange,
        origin=route.origin,
        method=exchange.request.method,
        target=ORIGIN_PATH,
        headers=Headers({"content-type": "application/json", "accept": "application/json"}),
        body=json.dumps(subscription, separators=(",", ":")).encode(),
        identity=identity,
    )
    response = relay(response)
    if exchange.request.method == "POST" and response.status in (200, 201):
        record = {**subscription, "user_id": identity.user_id, "created_at": int(deps.clock.now())}
        exchange.defer(store.put(key, json.dumps(record, separators=(",", ":"))))
    elif (
        exchange.request.method == "DELETE"
        and response.status in (200, 204, 404)
        and _owned_by(await store.get(key), identity.user_id)
    ):
        # The origin has no (more) subscription for this user: drop the edge copy too.
        exchange.defer(store.delete(key))
    response.headers.set("cache-control", "no-store")
    return response


def _owned_by(record: str | None, user_id: str) -> bool:
    if record is None:
        return False
    try:
        owner = json.loads(record).get("user_id")
    except (ValueError, AttributeError):
        return True  # unreadable: not worth keeping
    return bool(owner == user_id)


async def handle_vapid_key(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    key = deps.config.vapid_public_key
    if key is None:
        raise RuntimeError("the push router runs only with VAPID_PUBLIC_KEY configured")
    return EdgeResponse.json(200, {"publicKey": key}, Headers({"cache-control": "public, max-age=3600"}))
