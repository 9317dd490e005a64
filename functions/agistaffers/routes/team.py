"""A customer's team: members and invitations (owners manage; members see)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from functions.agistaffers.composition import container
from functions.agistaffers.http import CUSTOMER_USERS, caller, path_id, route
from functions.agistaffers.responses import InvitationReply, Invitations, MemberReply, Members, NewInvitation, UserReply
from functions.agistaffers.schemas import AcceptInvitation, Invite, MemberRoleChange
from functions.platform.http import ANYONE, Call

bp = Blueprint(__name__)


@route(bp, "/team/members", methods=["GET"], roles=CUSTOMER_USERS, response=Members)
def list_members(call: Call) -> dict[str, Any]:
    return {"items": container().accounts.list_members(caller(call))}


@route(
    bp,
    "/team/members/{user_id}",
    methods=["PATCH"],
    roles=CUSTOMER_USERS,
    body=MemberRoleChange,
    response=MemberReply,
    errors=(409,),
)
def change_member_role(call: Call) -> dict[str, Any]:
    user_id = path_id(call, "user_id", "member")
    form = call.json(MemberRoleChange)
    return {"member": container().accounts.change_member_role(caller(call), user_id, form.role)}


@route(bp, "/team/members/{user_id}", methods=["DELETE"], roles=CUSTOMER_USERS, response=MemberReply, errors=(409,))
def remove_member(call: Call) -> dict[str, Any]:
    return {"member": container().accounts.remove_member(caller(call), path_id(call, "user_id", "member"))}


@route(
    bp,
    "/team/invitations",
    methods=["POST"],
    roles=CUSTOMER_USERS,
    status=201,
    idempotent=True,
    body=Invite,
    response=NewInvitation,
)
def invite(call: Call) -> dict[str, Any]:
    """The answer carries the acceptance token once; only its hash is stored."""
    form = call.json(Invite)
    return container().accounts.invite(caller(call), form.email, form.role)


@route(bp, "/team/invitations", methods=["GET"], roles=CUSTOMER_USERS, response=Invitations)
def list_invitations(call: Call) -> dict[str, Any]:
    return {"items": container().accounts.list_invitations(caller(call))}


@route(bp, "/team/invitations/{invitation_id}", methods=["DELETE"], roles=CUSTOMER_USERS, response=InvitationReply)
def revoke_invitation(call: Call) -> dict[str, Any]:
    invitation_id = path_id(call, "invitation_id", "invitation")
    return {"invitation": container().accounts.revoke_invitation(caller(call), invitation_id)}


@route(
    bp,
    "/invitations/accept",
    methods=["POST"],
    roles=ANYONE,
    status=201,
    body=AcceptInvitation,
    response=UserReply,
    errors=(404,),
)
def accept_invitation(call: Call) -> dict[str, Any]:
    form = call.json(AcceptInvitation)
    return {"user": container().accounts.accept_invitation(form.token, form.name, form.password)}
