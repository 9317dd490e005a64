"""AGI Staffers' route decorator, roles and caller: the platform's HTTP glue bound to this product.

The session's role is only a first gate: every handler asks the database who the caller is now
(``caller``), so a demotion, a removed member or a cancelled customer takes effect on the next request.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from functions.agistaffers.composition import container
from functions.agistaffers.services.accounts import Actor
from functions.platform.http import Call, Router
from shared.envelope import AGISTAFFERS
from shared.errors import NotFound

# Route gates are coarse on purpose: staff never become a customer's users (the schema forbids it),
# but an owner can be demoted and a member promoted mid-session, so "owner only" is decided by the
# services on the role the database holds now, never by the session's.
SIGNED_IN = frozenset({"owner", "member", "admin"})
CUSTOMER_USERS = frozenset({"owner", "member"})
STAFF = frozenset({"admin"})

route = Router(AGISTAFFERS, container)


def caller(call: Call) -> Actor:
    """The signed-in user as the database says now (401 ``session_revoked`` when gone or disabled)."""
    return container().accounts.actor(call.require_identity().user_id)


def path_id(call: Call, name: str, what: str) -> str:
    """A UUID path parameter; anything else names nothing, so it is a 404 like an unknown id."""
    try:
        return str(UUID(call.params[name]))
    except ValueError:
        raise NotFound(f"{what} not found", code=f"{what}_not_found") from None


def query_args(model: Any) -> dict[str, Any]:
    """A validated query model as keyword arguments for a service's list method."""
    return {name: getattr(model, name) for name in type(model).model_fields}
