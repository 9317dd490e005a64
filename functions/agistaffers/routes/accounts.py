"""Sign-up, login, the caller's own account, the plans on offer, and the API's description."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from functions.agistaffers.cache_policy import PLANS_KEY, TTL_STATIC_METADATA
from functions.agistaffers.composition import container
from functions.agistaffers.http import SIGNED_IN, caller, route
from functions.agistaffers.responses import LoginReply, MeReply, Plans, SignUpReply
from functions.agistaffers.schemas import Login, SignUp
from functions.platform import openapi
from functions.platform.http import ANYONE, Call, health_response, public_read_response
from functions.platform.responses import Health

bp = Blueprint(__name__)
openapi.serve(route, bp, title="AGI Staffers API", version="1", server="/api/agi")


@route(bp, "/healthz", methods=["GET"], roles=ANYONE, signed=False, response=Health, statuses=(503,))
def healthz(call: Call) -> Response:
    return health_response(container().health())


@route(bp, "/signup", methods=["POST"], roles=ANYONE, status=201, body=SignUp, response=SignUpReply, errors=(409,))
def sign_up(call: Call) -> dict[str, Any]:
    """A new customer (pending) and its owner; the edge has checked Turnstile."""
    form = call.json(SignUp)
    return container().accounts.sign_up(form.company_name, form.email, form.password, form.plan, name=form.name)


@route(bp, "/auth/login", methods=["POST"], roles=ANYONE, body=Login, response=LoginReply, errors=(429,))
def login(call: Call) -> dict[str, Any]:
    """Checks the password and returns the identity; the edge puts it in an AGI Staffers session."""
    form = call.json(Login)
    return container().accounts.authenticate(form.email, form.password)


@route(bp, "/auth/logout-all", methods=["POST"], roles=SIGNED_IN, status=204)
def logout_everywhere(call: Call) -> Response:
    """Every session of the caller's account ends, this one included."""
    container().accounts.end_sessions(caller(call))
    return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})


@route(bp, "/me", methods=["GET"], roles=SIGNED_IN, response=MeReply)
def me(call: Call) -> dict[str, Any]:
    return container().accounts.me(caller(call))


@route(bp, "/plans", methods=["GET"], roles=ANYONE, response=Plans)
def plans(call: Call) -> Response:
    """The plans and their limits: the same for everyone, cached as static metadata."""
    items, hit = container().cache.get_or_load(PLANS_KEY, TTL_STATIC_METADATA, container().plans.list)
    return public_read_response(call, {"items": items}, cache_hit=hit)
