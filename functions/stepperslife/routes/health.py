"""``GET /healthz``: each dependency's state, unsigned (it discloses nothing)."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from functions.platform.http import ANYONE, Call, json_response
from functions.stepperslife.composition import container
from functions.stepperslife.http import route

bp = Blueprint(__name__)


@route(bp, "/healthz", methods=["GET"], roles=ANYONE, signed=False)
def healthz(call: Call) -> Response:
    checks = container().health()
    healthy = all(state in ("up", "not configured") for state in checks.values())
    return json_response(200 if healthy else 503, {"status": "ok" if healthy else "degraded", "checks": checks})
