"""Accounts: ``POST /users`` (sign-up), ``POST /auth/login`` (the edge keeps the session), ``POST
/auth/logout-all`` (every session of the account ends) and ``POST /me/password``."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from functions.platform.http import ANYONE, Call
from functions.stepperslife.composition import container
from functions.stepperslife.http import AUTHENTICATED, route
from functions.stepperslife.responses import LoginReply, UserReply
from functions.stepperslife.schemas import Login, PasswordChange, SignUp

bp = Blueprint(__name__)


@route(bp, "/users", methods=["POST"], roles=ANYONE, status=201, body=SignUp, response=UserReply, errors=(409,))
def sign_up(call: Call) -> dict[str, Any]:
    form = call.json(SignUp)
    return {"user": container().users.sign_up(email=form.email, name=form.name, password=form.password)}


@route(bp, "/auth/login", methods=["POST"], roles=ANYONE, body=Login, response=LoginReply, errors=(429,))
def login(call: Call) -> dict[str, Any]:
    """Checks the password and returns the identity; the edge puts it in a session."""
    form = call.json(Login)
    return container().users.authenticate(email=form.email, password=form.password)


@route(bp, "/auth/logout-all", methods=["POST"], roles=AUTHENTICATED, status=204)
def logout_everywhere(call: Call) -> Response:
    container().users.end_sessions(call.require_identity())
    return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})


@route(bp, "/me/password", methods=["POST"], roles=AUTHENTICATED, status=204, body=PasswordChange, errors=(429,))
def change_password(call: Call) -> Response:
    """Every session of the account ends with the old password, this one included: sign in again."""
    form = call.json(PasswordChange)
    container().users.change_password(
        call.require_identity(), current_password=form.current_password, new_password=form.new_password
    )
    return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})
