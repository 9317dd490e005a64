"""Monitoring: the agents' ingest, the dashboards, the incident log, the public status page, and the
schedules that keep the data moving (partitions, rollups, alert evaluation, uptime checks).

``POST /metrics`` carries no session: the site's ingest token (``Authorization: Bearer`` or
``X-Ingest-Token``) is its credential, checked by the service. ``GET /status/{slug}`` is public HTML
the edge may keep briefly. The schedules are plain ``rate()`` handlers: Lambda and EventBridge in
the cloud, ``agistack dev``'s scheduler locally, ``agistack run NAME`` by hand.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, CloudWatchEvent, Rate, Response

from functions.agistaffers.composition import container
from functions.agistaffers.http import CUSTOMER_USERS, SIGNED_IN, STAFF, caller, path_id, query_args, route
from functions.agistaffers.responses import (
    CustomerDashboard,
    IncidentPage,
    IncidentReply,
    IngestReport,
    IngestToken,
    SiteMetrics,
    SiteUptime,
    StaffOverview,
)
from functions.agistaffers.schemas import IncidentListQuery, MetricsQuery
from functions.agistaffers.services.metrics import parse_batch, token_from_headers
from functions.agistaffers.status_page import render
from functions.platform.http import ANYONE, Call
from functions.platform.tracing import in_new_trace

bp = Blueprint(__name__)
# How long the edge (and browsers) may keep a status page: short, it shows the current state.
STATUS_PAGE_MAX_AGE = 30


@route(bp, "/metrics", methods=["POST"], roles=ANYONE, response=IngestReport, errors=(400, 413, 415, 422))
def ingest_metrics(call: Call) -> dict[str, Any]:
    content_type = call.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    ingest = container().metrics
    site = ingest.site_for_token(token_from_headers(call.headers))
    return ingest.ingest_for(site, parse_batch(call.body, content_type))


@route(bp, "/sites/{site_id}/ingest-token", methods=["POST"], roles=SIGNED_IN, response=IngestToken)
def rotate_ingest_token(call: Call) -> dict[str, Any]:
    return container().sites.rotate_ingest_token(caller(call), path_id(call, "site_id", "site"))


@route(bp, "/sites/{site_id}/metrics", methods=["GET"], roles=SIGNED_IN, query=MetricsQuery, response=SiteMetrics)
def site_metrics(call: Call) -> dict[str, Any]:
    query = call.query_model(MetricsQuery)
    return container().dashboards.site_metrics(caller(call), path_id(call, "site_id", "site"), query.range)


@route(bp, "/sites/{site_id}/uptime", methods=["GET"], roles=SIGNED_IN, response=SiteUptime)
def site_uptime(call: Call) -> dict[str, Any]:
    site = container().sites.get(caller(call), path_id(call, "site_id", "site"))  # 404 unless visible
    return {"uptime": container().uptime.state(site["id"])}


@route(bp, "/dashboard", methods=["GET"], roles=CUSTOMER_USERS, response=CustomerDashboard)
def customer_dashboard(call: Call) -> dict[str, Any]:
    return container().dashboards.customer_overview(caller(call))


@route(bp, "/monitoring/overview", methods=["GET"], roles=STAFF, response=StaffOverview)
def staff_overview(call: Call) -> dict[str, Any]:
    return container().dashboards.staff_overview(caller(call))


@route(
    bp, "/incidents", methods=["GET"], roles=SIGNED_IN, query=IncidentListQuery, response=IncidentPage, errors=(404,)
)
def list_incidents(call: Call) -> dict[str, Any]:
    return container().incidents.list(caller(call), **query_args(call.query_model(IncidentListQuery)))


@route(bp, "/incidents/{incident_id}", methods=["GET"], roles=SIGNED_IN, response=IncidentReply)
def get_incident(call: Call) -> dict[str, Any]:
    incident_id = path_id(call, "incident_id", "incident")
    return {"incident": container().incidents.get(caller(call), incident_id)}


@route(bp, "/incidents/{incident_id}/acknowledge", methods=["POST"], roles=STAFF, response=IncidentReply)
def acknowledge_incident(call: Call) -> dict[str, Any]:
    incident_id = path_id(call, "incident_id", "incident")
    return {"incident": container().incidents.acknowledge(caller(call), incident_id)}


@route(bp, "/status/{slug}", methods=["GET"], roles=ANYONE, media_type="text/html")
def status_page(call: Call) -> Response:
    page = container().status_pages.page(call.params["slug"])
    return Response(
        body=render(page),
        status_code=200,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": f"public, max-age={STATUS_PAGE_MAX_AGE}, s-maxage={STATUS_PAGE_MAX_AGE}",
        },
    )


@bp.schedule(Rate(1, unit=Rate.HOURS))
@in_new_trace
def maintain_metric_partitions(event: CloudWatchEvent) -> dict[str, int]:
    return container().maintain_partitions()


@bp.schedule(Rate(1, unit=Rate.MINUTES))
@in_new_trace
def roll_up_metrics(event: CloudWatchEvent) -> dict[str, Any]:
    return container().roll_up()


@bp.schedule(Rate(1, unit=Rate.MINUTES))
@in_new_trace
def evaluate_alerts(event: CloudWatchEvent) -> dict[str, int]:
    return container().evaluate_alerts()


@bp.schedule(Rate(1, unit=Rate.MINUTES))
@in_new_trace
def check_uptime(event: CloudWatchEvent) -> dict[str, int]:
    return container().check_uptime()
