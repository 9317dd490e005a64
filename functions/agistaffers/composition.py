"""AGI Staffers' composition root: configuration in, concrete adapters and services out.

Nothing below this module reads the environment or constructs a client. It works against the
``agistaffers`` database only: SteppersLife's data is another business's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from functions.agistaffers.services.accounts import AccountService
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.plans import PlanService
from functions.agistaffers.services.sites import SiteService
from functions.platform.composition import Installed, ProductContainer
from functions.platform.login_throttle import LoginThrottle
from shared.envelope import AGISTAFFERS, Identity


@dataclass
class Container(ProductContainer):
    database_name = "agistaffers"

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.db, throttle=LoginThrottle(self.redis, AGISTAFFERS))

    def current_identity(self, identity: Identity) -> Identity:
        return self.accounts.current_identity(identity)

    @cached_property
    def plans(self) -> PlanService:
        return PlanService(self.db)

    @cached_property
    def customers(self) -> CustomerService:
        return CustomerService(self.db)

    @cached_property
    def sites(self) -> SiteService:
        return SiteService(self.db)


_installed = Installed(Container)
configure = _installed.configure
container = _installed.get
