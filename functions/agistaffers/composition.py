"""AGI Staffers' composition root: configuration in, concrete adapters and services out.

Nothing below this module reads the environment or constructs a client. It works against the
``agistaffers`` database only: SteppersLife's data is another business's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from functions.agistaffers.services import alerts, partitions
from functions.agistaffers.services.accounts import AccountService
from functions.agistaffers.services.alerts import AlertEvaluator
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.dashboards import Dashboards
from functions.agistaffers.services.metrics import MetricsIngest
from functions.agistaffers.services.plans import PlanService
from functions.agistaffers.services.rollups import Rollups
from functions.agistaffers.services.sites import SiteService
from functions.agistaffers.services.status import StatusPages
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

    @cached_property
    def metrics(self) -> MetricsIngest:
        return MetricsIngest(self.db)

    @cached_property
    def dashboards(self) -> Dashboards:
        return Dashboards(self.db, self.cache, self.sites)

    @cached_property
    def status_pages(self) -> StatusPages:
        return StatusPages(self.db, self.cache)

    @cached_property
    def rollups(self) -> Rollups:
        return Rollups(self.db, self.dashboards.invalidate)

    @cached_property
    def alerts(self) -> AlertEvaluator:
        return AlertEvaluator(self.db, alerts.outbox, self.dashboards.invalidate)

    # The schedules' use cases, named once for the Lambda handlers and the dev stack.

    def maintain_partitions(self) -> dict[str, int]:
        with self.db.transaction() as conn:
            return partitions.maintain(conn, datetime.now(UTC))

    def roll_up(self) -> dict[str, Any]:
        return {run.name: run.buckets for run in self.rollups.run()}

    def evaluate_alerts(self) -> dict[str, int]:
        return self.alerts.evaluate()


_installed = Installed(Container)
configure = _installed.configure
container = _installed.get
