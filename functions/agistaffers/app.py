"""AGI Staffers' Chalice application: the object its Lambda functions run and `agistack dev` serves.

It only registers blueprints, one per resource; each route states its access rule there.
"""

from __future__ import annotations

import os

from chalice.app import Chalice

from functions.agistaffers.routes import accounts, alerts, customers, monitoring, provisioning, sites, team
from functions.platform.http import install
from functions.platform.snapstart import register_hooks
from functions.platform.telemetry import configure_logging
from shared.envelope import AGISTAFFERS

app = Chalice(app_name="agistack-agistaffers")
for blueprint in (accounts.bp, sites.bp, customers.bp, team.bp, monitoring.bp, provisioning.bp, alerts.bp):
    app.register_blueprint(blueprint)
install(app)  # unknown paths 404, Chalice's own answers in the error shape
app.log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
configure_logging(AGISTAFFERS)  # JSON lines (Powertools) with the service and the trace id
register_hooks()  # SnapStart: drop connections before the snapshot and after each restore
