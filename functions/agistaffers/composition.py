"""AGI Staffers' composition root: configuration in, concrete adapters and services out.

Nothing below this module reads the environment or constructs a client. It works against the
``agistaffers`` database only: SteppersLife's data is another business's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from functions.agistaffers.services.accounts import AccountService
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.plans import PlanService
from functions.agistaffers.services.sites import SiteService
from functions.platform.adapters.postgres import Database
from functions.platform.cache import Cache
from functions.platform.claims import Claims
from functions.platform.composition import Installed, health, redis_client
from functions.platform.config import Settings
from functions.platform.idempotency import IdempotencyKeys
from functions.platform.login_throttle import LoginThrottle
from shared.envelope import AGISTAFFERS, Identity


@dataclass
class Container:
    settings: Settings

    @cached_property
    def agistaffers_db(self) -> Database:
        return Database(self.settings.database_url_for("agistaffers"), name="agistaffers")

    @cached_property
    def redis(self) -> Any:
        return redis_client(self.settings)

    @cached_property
    def cache(self) -> Cache:
        return Cache(self.redis)

    @cached_property
    def claims(self) -> Claims:
        return Claims(self.agistaffers_db)

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.claims)

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.agistaffers_db, throttle=LoginThrottle(self.redis, AGISTAFFERS))

    def current_identity(self, identity: Identity) -> Identity:
        return self.accounts.current_identity(identity)

    @cached_property
    def plans(self) -> PlanService:
        return PlanService(self.agistaffers_db)

    @cached_property
    def customers(self) -> CustomerService:
        return CustomerService(self.agistaffers_db)

    @cached_property
    def sites(self) -> SiteService:
        return SiteService(self.agistaffers_db)

    def health(self) -> dict[str, str]:
        return health({"postgres": self.agistaffers_db, "redis": self.redis})

    def close(self) -> None:
        if "agistaffers_db" in self.__dict__:
            self.agistaffers_db.close()


_installed = Installed(Container)
configure = _installed.configure
container = _installed.get
