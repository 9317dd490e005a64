"""``GET /healthz``: each dependency's state, unsigned (it discloses nothing)."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from functions.platform.http import ANYONE, Call, health_response
from functions.stepperslife.composition import container
from functions.stepperslife.http import route

bp = Blueprint(__name__)


@route(bp, "/healthz", methods=["GET"], roles=ANYONE, signed=False)
def healthz(call: Call) -> Response:
    return health_response(container().health())
