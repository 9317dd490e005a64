"""``GET/PUT /api/me/preferences``: served from USER_PREFS_KV (``prefs:{user_id}``), written through.

A read comes from KV; on a miss it is read from the origin (``GET /me/preferences``) and KV is
filled. A write is validated here (the origin's own rules, so a bad document never costs an origin
call), sent to the origin's ``PUT /me/preferences`` (the durable copy, which recommendations and
notifications read), and the origin's answer is what KV keeps. KV takes one write per second per
key, hence the tight per-user rate limit on writes; a reader at another location may see the
previous preferences for up to ~60 s (KV propagation).
"""

from __future__ import annotations

import json
import re
from typing import Any

from edge_workers.core.context import Exchange, GatewayDeps
from edge_workers.core.http import EdgeResponse, Headers
from edge_workers.core.upstream import call_origin, relay
from shared import jsonbody
from shared.errors import BadRequest, ValidationFailed

KEY_PREFIX = "prefs:"
ORIGIN_PATH = "/me/preferences"
MAX_CATEGORIES = 20
MAX_LOCATIONS = 10
MAX_LOCATION_LENGTH = 100
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULTS: dict[str, Any] = {"categories": [], "locations": [], "notify": False, "digest": False}
_NO_STORE = {"cache-control": "private, no-store"}


def prefs_key(user_id: str) -> str:
    return KEY_PREFIX + user_id


def _problem(field: str, message: str) -> dict[str, Any]:
    return {"loc": [field], "msg": message}


def validate(document: Any) -> dict[str, Any]:
    """The preferences in canonical form, or ``ValidationFailed`` listing every problem."""
    if not isinstance(document, dict):
        raise ValidationFailed("preferences must be a JSON object", details=[_problem("body", "not an object")])
    problems = [_problem(name, "unknown field") for name in sorted(set(document) - set(DEFAULTS))]
    categories = document.get("categories", [])
    if (
        not isinstance(categories, list)
        or len(categories) > MAX_CATEGORIES
        or not all(isinstance(item, str) and len(item) <= 64 and _SLUG.match(item) for item in categories)
    ):
        problems.append(_problem("categories", f"at most {MAX_CATEGORIES} lower-case slugs"))
    locations = document.get("locations", [])
    if (
        not isinstance(locations, list)
        or len(locations) > MAX_LOCATIONS
        or not all(
            isinstance(item, str) and 1 <= len(item) <= MAX_LOCATION_LENGTH and not _CONTROL.search(item)
            for item in locations
        )
    ):
        problems.append(_problem("locations", f"at most {MAX_LOCATIONS} names of 1-{MAX_LOCATION_LENGTH} characters"))
    for flag in ("notify", "digest"):
        if not isinstance(document.get(flag, False), bool):
            problems.append(_problem(flag, "must be true or false"))
    if problems:
        raise ValidationFailed("the preferences are invalid", details=problems)
    return {name: document.get(name, default) for name, default in DEFAULTS.items()}


def _from_origin(body: bytes) -> dict[str, Any] | None:
    """The preferences in an origin answer ``{"preferences": {...}}``, if it is well-formed."""
    try:
        return validate(json.loads(body)["preferences"])
    except (ValueError, KeyError, TypeError, ValidationFailed):
        return None


async def handle_preferences(exchange: Exchange, deps: GatewayDeps, body: bytes) -> EdgeResponse:
    identity = exchange.identity
    route = exchange.route
    if identity is None or route is None or route.origin is None:
        raise RuntimeError("the preferences route must require an identity and name an origin")
    store = deps.kv.USER_PREFS_KV
    key = prefs_key(identity.user_id)
    method = exchange.request.method
    if method in ("GET", "HEAD"):
        stored = await store.get(key)
        if stored is not None:
            try:
                return EdgeResponse.json(200, {"preferences": validate(json.loads(stored))}, Headers(_NO_STORE))
            except (ValueError, ValidationFailed):
                pass  # not a record this code wrote: read the origin's copy and replace it
        headers = Headers({"accept": "application/json"})
        response = await call_origin(
            deps,
            exchange,
            origin=route.origin,
            method="GET",
            target=ORIGIN_PATH,
            headers=headers,
            body=b"",
            identity=identity,
        )
    else:
        try:
            document = jsonbody.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest("the body is not valid JSON", code="malformed_json") from exc
        canonical = json.dumps(validate(document), separators=(",", ":")).encode()
        headers = Headers({"content-type": "application/json", "accept": "application/json"})
        response = await call_origin(
            deps,
            exchange,
            origin=route.origin,
            method="PUT",
            target=ORIGIN_PATH,
            headers=headers,
            body=canonical,
            identity=identity,
        )
    response = relay(response)
    preferences = _from_origin(response.body) if response.status == 200 else None
    if preferences is not None:
        exchange.defer(store.put(key, json.dumps(preferences, separators=(",", ":"))))
    response.headers.set("cache-control", "private, no-store")
    return response
