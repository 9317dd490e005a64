"""The push router's handlers: browser subscriptions in PUSH_SUBS_KV and at the origin, and the VAPID key.

``POST /push/subscriptions`` takes ``PushSubscription.toJSON()``: an https endpoint on a public host
(no IP literal outside public space, no localhost/.local/.internal names, port 443 only), a
``p256dh`` key that decodes to an uncompressed P-256 point (65 bytes) and a 16-byte ``auth``
secret, both base64url. Workers cannot resolve DNS, so the edge checks the host's syntax and IP
literals; the origin resolves the name and checks every address before it sends (``shared.net``).
The origin keeps the durable copy (it is called first: no edge copy without a durable one); the edge
copy is ``push:{sha256(endpoint)}``, the key the origin's pruning deletes too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Any
from urllib.parse import urlsplit

from edge_workers.core.b64 import b64url_decode, is_p256_public_key
from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeResponse, Headers
from edge_workers.core.upstream import call_origin, relay
from shared.errors import BadRequest, ValidationFailed
from shared.net import MAX_URL_LENGTH, is_public_address

KEY_PREFIX = "push:"
ORIGIN_PATH = "/push/subscriptions"
AUTH_SECRET_BYTES = 16
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Names that are numbers in disguise: resolvers read "127.1", "0x7f.1" or "2130706433" as IPv4.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"loc": [field], "msg": message}], code="invalid_subscription")


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode("utf-8")).hexdigest()


def check_endpoint(endpoint: Any) -> str:
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_URL_LENGTH:
        raise _invalid("endpoint", f"the endpoint must be a URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise _invalid("endpoint", "the endpoint is not a URL") from exc
    if parts.scheme != "https" or parts.username is not None or parts.password is not None:
        raise _invalid("endpoint", "the endpoint must be an https URL without credentials")
    if port not in (None, 443):
        raise _invalid("endpoint", "the endpoint must use the https port")
    host = (parts.hostname or "").lower()
    if not _public_host(host):
        raise _invalid("endpoint", "the endpoint's host is not a public internet host")
    return endpoint


def _public_host(host: str) -> bool:
    try:
        return is_public_address(ipaddress.ip_address(host))
    except ValueError:
        pass  # a name, checked below
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return False
    if _NUMERIC_LABEL.match(labels[-1]) or host == "localhost":
        return False
    return not host.endswith(_LOCAL_SUFFIXES)


def _key(keys: dict[str, Any], name: str, check: Any) -> str:
    value = keys.get(name)
    try:
        if not isinstance(value, str) or not check(b64url_decode(value)):
            raise ValueError(name)
    except ValueError as exc:
        raise _invalid(f"keys.{name}", f"keys.{name} is not a valid base64url key") from exc
    return value


def validate_subscription(document: Any) -> dict[str, Any]:
    """``{"endpoint", "keys": {"p256dh", "auth"}}`` from a browser's subscription, or 422."""
    if not isinstance(document, dict):
        raise _invalid("body", "the subscription must be a JSON object")
    unknown = sorted(set(document) - {"endpoint", "expirationTime", "keys"})
    if unknown:
        raise _invalid(unknown[0], "unknown field")
    expiration = document.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int | float)):
        raise _invalid("expirationTime", "expirationTime must be null or a number")
    endpoint = check_endpoint(document.get("endpoint"))
    keys = document.get("keys")
    if not isinstance(keys, dict):
        raise _invalid("keys", "keys must be an object with p256dh and auth")
    p256dh = _key(keys, "p256dh", is_p256_public_key)
    auth = _key(keys, "auth", lambda raw: len(raw) == AUTH_SECRET_BYTES)
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
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
            raise _invalid("endpoint", "the endpoint to remove is missing")
        subscription = {"endpoint": endpoint}
    store = deps.kv.PUSH_SUBS_KV
    key = KEY_PREFIX + endpoint_hash(subscription["endpoint"])
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
