"""Event pictures: the upload form (HTTP) and the processing of what lands in S3 (SQS).

S3 ObjectCreated (``uploads/`` prefix) → SQS → ``image_uploaded``: Chalice's CDK construct cannot
package ``on_s3_event`` handlers, so the notification goes through a queue, which also brings retries,
partial batch failures and a dead-letter queue.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal
from uuid import UUID

from chalice.app import Blueprint, SQSEvent, SQSRecord

from functions.platform import topology
from functions.platform.http import ORGANIZERS, Call, route
from functions.platform.queues import process_batch
from functions.stepperslife.composition import container
from functions.stepperslife.schemas import Strict
from functions.stepperslife.services.uploads import BadNotification, parse_s3_notification
from shared.errors import NotFound

log = logging.getLogger("agistack.images")

bp = Blueprint(__name__)


class ImageUploadRequest(Strict):
    content_type: Literal["image/jpeg", "image/png", "image/webp", "image/avif", "image/gif"]


def _event_id(call: Call) -> str:
    try:
        return str(UUID(call.params["event_id"]))
    except ValueError:
        raise NotFound("event not found") from None


@route(bp, "/events/{event_id}/images", methods=["POST"], roles=ORGANIZERS, status=201, idempotent=True)
def start_image_upload(call: Call) -> dict[str, Any]:
    """A presigned S3 POST for one picture; the organizer of the event or an admin only."""
    form = call.json(ImageUploadRequest)
    return container().uploads.start_upload(_event_id(call), call.require_identity(), form.content_type)


def _process_uploads(body: str, *, attempt: int) -> None:
    for upload in parse_s3_notification(body):
        final = attempt >= topology.IMAGE_UPLOADS.max_receive_count
        outcome = container().uploads.handle(upload, attempt=attempt, final_attempt=final)
        log.info("upload %s: %s (delivery %d)", upload.key, outcome, attempt)


def _receive_count(record: SQSRecord) -> int:
    try:
        return int(record.to_dict().get("attributes", {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


@bp.on_sqs_message(queue=topology.IMAGE_UPLOADS.name, batch_size=topology.IMAGE_UPLOADS.batch_size)
def image_uploaded(event: SQSEvent) -> dict[str, Any]:
    """Each message separately, so that its receive count tells whether it is its last delivery (the
    one whose receive count is the queue's max_receive_count: the next stop is the DLQ)."""
    failures: list[dict[str, str]] = []
    for record in event:
        handle = functools.partial(_process_uploads, attempt=_receive_count(record))
        failures += process_batch([record], handle, permanent=BadNotification)["batchItemFailures"]
    return {"batchItemFailures": failures}
