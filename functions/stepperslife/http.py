"""SteppersLife's route decorator and roles: the platform's HTTP glue bound to this product."""

from __future__ import annotations

from functions.platform.http import Router
from functions.stepperslife.composition import container
from shared.envelope import STEPPERSLIFE

AUTHENTICATED = frozenset({"user", "customer", "admin"})
ORGANIZERS = frozenset({"user", "admin"})

route = Router(STEPPERSLIFE, container)
