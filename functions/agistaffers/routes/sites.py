"""Customer sites: a customer's users manage their own; staff see and steer all of them.

Another customer's site, a deleted one and a malformed id are all 404 ``site_not_found``: whether
an id exists elsewhere is not disclosed.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from functions.agistaffers.composition import container
from functions.agistaffers.http import CUSTOMER_USERS, SIGNED_IN, caller, path_id, query_args, route
from functions.agistaffers.responses import NewSiteReply, SitePage, SiteReply
from functions.agistaffers.schemas import SiteCreate, SiteListQuery, SitePatch
from functions.platform.http import Call

bp = Blueprint(__name__)


@route(
    bp,
    "/sites",
    methods=["POST"],
    roles=CUSTOMER_USERS,
    status=201,
    idempotent=True,
    body=SiteCreate,
    response=NewSiteReply,
    errors=(409,),
)
def add_site(call: Call) -> dict[str, Any]:
    form = call.json(SiteCreate)
    return {"site": container().sites.add(caller(call), form.domain, label=form.label)}


@route(bp, "/sites", methods=["GET"], roles=SIGNED_IN, query=SiteListQuery, response=SitePage)
def list_sites(call: Call) -> dict[str, Any]:
    query = call.query_model(SiteListQuery)
    return container().sites.list(caller(call), **query_args(query))


@route(bp, "/sites/{site_id}", methods=["GET"], roles=SIGNED_IN, response=SiteReply)
def get_site(call: Call) -> dict[str, Any]:
    return {"site": container().sites.get(caller(call), path_id(call, "site_id", "site"))}


@route(bp, "/sites/{site_id}", methods=["PATCH"], roles=SIGNED_IN, body=SitePatch, response=SiteReply, errors=(409,))
def update_site(call: Call) -> dict[str, Any]:
    site_id = path_id(call, "site_id", "site")
    form = call.json(SitePatch)
    return {"site": container().sites.update(caller(call), site_id, form.changes())}


@route(bp, "/sites/{site_id}", methods=["DELETE"], roles=CUSTOMER_USERS, status=204, errors=(409,))
def delete_site(call: Call) -> Response:
    container().sites.delete(caller(call), path_id(call, "site_id", "site"))
    return Response(body="", status_code=204)
