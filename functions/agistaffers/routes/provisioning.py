"""Provisioning: a site's onboarding progress (its customer and staff), staff retry and cancel, and the
handlers that run the sagas: the provisioning queue (one message per step) and the schedule that sends
what the outbox holds and re-sends a message for every run that is due."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, CloudWatchEvent, Rate, SQSEvent

from functions.agistaffers.composition import container
from functions.agistaffers.http import SIGNED_IN, STAFF, caller, path_id, route
from functions.agistaffers.responses import OnboardingReply
from functions.platform import topology
from functions.platform.http import Call
from functions.platform.processing import PoisonMessage
from functions.platform.queues import process_batch
from functions.platform.tracing import in_new_trace
from shared.envelope import AGISTAFFERS

bp = Blueprint(__name__)

RETENTION_DAYS = 14


@route(bp, "/sites/{site_id}/onboarding", methods=["GET"], roles=SIGNED_IN, response=OnboardingReply)
def onboarding_progress(call: Call) -> dict[str, Any]:
    site_id = path_id(call, "site_id", "site")
    container().sites.get(caller(call), site_id)  # 404 unless the caller may see the site
    return {"onboarding": container().provisioning.progress(site_id)}


@route(bp, "/sites/{site_id}/onboarding/retry", methods=["POST"], roles=STAFF, response=OnboardingReply, errors=(409,))
def retry_onboarding(call: Call) -> dict[str, Any]:
    return {"onboarding": container().provisioning.retry(caller(call), path_id(call, "site_id", "site"))}


@route(bp, "/sites/{site_id}/onboarding/cancel", methods=["POST"], roles=STAFF, response=OnboardingReply, errors=(409,))
def cancel_onboarding(call: Call) -> dict[str, Any]:
    return {"onboarding": container().provisioning.cancel(caller(call), path_id(call, "site_id", "site"))}


@bp.on_sqs_message(queue=topology.AGI_PROVISIONING.name, batch_size=topology.AGI_PROVISIONING.batch_size)
def provision(event: SQSEvent) -> dict[str, Any]:
    """Saga steps, welcome mails, customer status changes; only failed messages come back."""
    return process_batch(
        event,
        container().provisioning_messages.handle,
        permanent=PoisonMessage,
        service=AGISTAFFERS,
        queue=topology.AGI_PROVISIONING.name,
    )


@bp.schedule(Rate(1, unit=Rate.MINUTES))
@in_new_trace
def kick_provisioning(event: CloudWatchEvent) -> dict[str, int]:
    """Sends what the requests' own flush left behind, then a message for every run that is due."""
    published = container().outbox_relay.flush_all()
    return {"published": published, "due_runs": container().provisioning.engine.kick_due()}


@bp.schedule(Rate(1, unit=Rate.DAYS))
@in_new_trace
def prune_provisioning_records(event: CloudWatchEvent) -> dict[str, int]:
    return {
        "outbox": container().outbox_relay.prune(RETENTION_DAYS),
        "claims": container().provisioning_messages.prune(),
    }
