"""Accounts: ``POST /users`` (sign-up) and ``POST /auth/login`` (the edge keeps the session)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from functions.platform.http import ANYONE, Call
from functions.stepperslife.composition import container
from functions.stepperslife.http import route
from functions.stepperslife.schemas import Login, SignUp

bp = Blueprint(__name__)


@route(bp, "/users", methods=["POST"], roles=ANYONE, status=201)
def sign_up(call: Call) -> dict[str, Any]:
    form = call.json(SignUp)
    return {"user": container().users.sign_up(email=form.email, name=form.name, password=form.password)}


@route(bp, "/auth/login", methods=["POST"], roles=ANYONE)
def login(call: Call) -> dict[str, Any]:
    """Checks the password and returns the identity; the edge puts it in a session."""
    form = call.json(Login)
    return {"user": container().users.authenticate(email=form.email, password=form.password)}
