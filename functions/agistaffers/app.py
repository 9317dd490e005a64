"""AGI Staffers' Chalice app: a placeholder until its routes land, so that CDK deploys its API."""

from __future__ import annotations

from chalice.app import Chalice

app = Chalice(app_name="agistack-agistaffers")


@app.route("/healthz", methods=["GET"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}
