"""``GET /healthz``: each dependency's state, unsigned (it discloses nothing); ``GET /openapi.json``:
the API's description, generated from its routes."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from functions.platform import openapi
from functions.platform.http import ANYONE, Call, health_response
from functions.platform.responses import Health
from functions.stepperslife.composition import container
from functions.stepperslife.http import route

bp = Blueprint(__name__)


@route(bp, "/healthz", methods=["GET"], roles=ANYONE, signed=False, response=Health, statuses=(503,))
def healthz(call: Call) -> Response:
    return health_response(container().health())


openapi.serve(route, bp, title="SteppersLife API", version="1", server="/api")
