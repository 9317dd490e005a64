"""AGI Staffers' Chalice application: the object its Lambda functions run and `agistack dev` serves.

It only registers blueprints, one per resource; each route states its access rule there.
"""

from __future__ import annotations

import logging
import os

from chalice.app import Chalice

from functions.agistaffers.routes import accounts, customers, provisioning, sites, team

app = Chalice(app_name="agistack-agistaffers")
for blueprint in (accounts.bp, sites.bp, customers.bp, team.bp, provisioning.bp):
    app.register_blueprint(blueprint)
app.log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
logging.getLogger("agistack").setLevel(os.environ.get("LOG_LEVEL", "INFO"))
