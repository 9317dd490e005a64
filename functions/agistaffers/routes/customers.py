"""Customers: a customer's own company profile, and the staff back office over every customer."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from functions.agistaffers.composition import container
from functions.agistaffers.http import CUSTOMER_USERS, SIGNED_IN, STAFF, caller, path_id, query_args, route
from functions.agistaffers.responses import CustomerPage, CustomerReply
from functions.agistaffers.schemas import Cancel, ChangePlan, CustomerListQuery, CustomerProfilePatch, Suspend
from functions.agistaffers.services.accounts import require_customer
from functions.platform.http import Call

bp = Blueprint(__name__)


@route(bp, "/customer", methods=["GET"], roles=CUSTOMER_USERS, response=CustomerReply)
def my_customer(call: Call) -> dict[str, Any]:
    actor = caller(call)
    return {"customer": container().customers.get(actor, require_customer(actor))}


@route(bp, "/customer", methods=["PATCH"], roles=CUSTOMER_USERS, body=CustomerProfilePatch, response=CustomerReply)
def update_my_customer(call: Call) -> dict[str, Any]:
    actor = caller(call)
    changes = call.json(CustomerProfilePatch).changes()
    return {"customer": container().customers.update_profile(actor, require_customer(actor), changes)}


@route(bp, "/customers", methods=["GET"], roles=STAFF, query=CustomerListQuery, response=CustomerPage)
def list_customers(call: Call) -> dict[str, Any]:
    query = call.query_model(CustomerListQuery)
    return container().customers.list(caller(call), **query_args(query))


@route(bp, "/customers/{customer_id}", methods=["GET"], roles=SIGNED_IN, response=CustomerReply)
def get_customer(call: Call) -> dict[str, Any]:
    return {"customer": container().customers.get(caller(call), path_id(call, "customer_id", "customer"))}


@route(
    bp, "/customers/{customer_id}", methods=["PATCH"], roles=STAFF, body=CustomerProfilePatch, response=CustomerReply
)
def update_customer(call: Call) -> dict[str, Any]:
    customer_id = path_id(call, "customer_id", "customer")
    changes = call.json(CustomerProfilePatch).changes()
    return {"customer": container().customers.update_profile(caller(call), customer_id, changes)}


@route(bp, "/customers/{customer_id}/activate", methods=["POST"], roles=STAFF, response=CustomerReply, errors=(409,))
def activate_customer(call: Call) -> dict[str, Any]:
    return {"customer": container().customers.activate(caller(call), path_id(call, "customer_id", "customer"))}


@route(
    bp,
    "/customers/{customer_id}/suspend",
    methods=["POST"],
    roles=STAFF,
    body=Suspend,
    response=CustomerReply,
    errors=(409,),
)
def suspend_customer(call: Call) -> dict[str, Any]:
    customer_id = path_id(call, "customer_id", "customer")
    form = call.json(Suspend)
    return {"customer": container().customers.suspend(caller(call), customer_id, form.reason)}


@route(bp, "/customers/{customer_id}/reinstate", methods=["POST"], roles=STAFF, response=CustomerReply, errors=(409,))
def reinstate_customer(call: Call) -> dict[str, Any]:
    return {"customer": container().customers.reinstate(caller(call), path_id(call, "customer_id", "customer"))}


@route(
    bp,
    "/customers/{customer_id}/cancel",
    methods=["POST"],
    roles=STAFF,
    body=Cancel,
    response=CustomerReply,
    errors=(409,),
)
def cancel_customer(call: Call) -> dict[str, Any]:
    customer_id = path_id(call, "customer_id", "customer")
    form = call.json(Cancel)
    return {"customer": container().customers.cancel(caller(call), customer_id, form.reason)}


@route(
    bp,
    "/customers/{customer_id}/plan",
    methods=["PUT"],
    roles=STAFF,
    body=ChangePlan,
    response=CustomerReply,
    errors=(409,),
)
def change_plan(call: Call) -> dict[str, Any]:
    customer_id = path_id(call, "customer_id", "customer")
    form = call.json(ChangePlan)
    return {"customer": container().customers.change_plan(caller(call), customer_id, form.plan)}
