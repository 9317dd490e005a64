"""Domain events: the outbox relay's schedule and the queue handler that runs each event's steps; the
daily pruning of the outbox and of the claims (steps, Idempotency-Keys, digests)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalice.app import Blueprint, CloudWatchEvent, Rate, SQSEvent

from functions.platform import topology
from functions.platform.idempotency import prune_keys
from functions.platform.processing import PoisonMessage
from functions.platform.queues import process_batch
from functions.platform.tracing import in_new_trace
from functions.stepperslife.composition import container
from shared.envelope import STEPPERSLIFE

bp = Blueprint(__name__)

# SQS keeps a message 14 days at most: no redelivery can need a record older than that.
RETENTION_DAYS = 14


@bp.on_sqs_message(queue=topology.DOMAIN_EVENTS.name, batch_size=topology.DOMAIN_EVENTS.batch_size)
def process_domain_events(event: SQSEvent) -> dict[str, Any]:
    """Enhance, invalidate, notify; only the messages that failed come back (batchItemFailures)."""
    return process_batch(
        event,
        container().event_processor.handle,
        permanent=PoisonMessage,
        service=STEPPERSLIFE,
        queue=topology.DOMAIN_EVENTS.name,
    )


@bp.schedule(Rate(1, unit=Rate.MINUTES))
@in_new_trace
def relay_outbox(event: CloudWatchEvent) -> dict[str, int]:
    """Sends what the requests' own flush left behind (a crash, a transport outage)."""
    return {"published": container().outbox_relay.flush_all()}


@bp.schedule(Rate(1, unit=Rate.DAYS))
@in_new_trace
def prune_domain_event_records(event: CloudWatchEvent) -> dict[str, int]:
    """Keeps the outbox and the claims from growing without bound."""
    return {
        "outbox": container().outbox_relay.prune(RETENTION_DAYS),
        "step_claims": container().event_processor.prune(timedelta(days=RETENTION_DAYS)),
        "idempotency_keys": prune_keys(container().claims),
        "digest_claims": container().engagement.prune(),
    }
