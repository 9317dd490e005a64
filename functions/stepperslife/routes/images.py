"""Event pictures: the upload form (HTTP) and the processing of what lands in S3 (SQS).

S3 ObjectCreated (``uploads/`` prefix) → SQS → ``image_uploaded``: Chalice's CDK construct cannot
package ``on_s3_event`` handlers, so the notification goes through a queue, which also brings retries,
partial batch failures and a dead-letter queue.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from chalice.app import Blueprint, SQSEvent

from functions.platform import topology
from functions.platform.http import Call
from functions.platform.queues import QueueMessage, process_batch
from functions.stepperslife.composition import container
from functions.stepperslife.http import ORGANIZERS, route
from functions.stepperslife.responses import UploadForm
from functions.stepperslife.routes.params import event_id
from functions.stepperslife.schemas import Strict
from functions.stepperslife.services.uploads import BadNotification, parse_s3_notification
from shared.envelope import STEPPERSLIFE

log = logging.getLogger("agistack.images")

bp = Blueprint(__name__)


class ImageUploadRequest(Strict):
    content_type: Literal["image/jpeg", "image/png", "image/webp", "image/avif", "image/gif"]


@route(
    bp,
    "/events/{event_id}/images",
    methods=["POST"],
    roles=ORGANIZERS,
    status=201,
    idempotent=True,
    body=ImageUploadRequest,
    response=UploadForm,
)
def start_image_upload(call: Call) -> dict[str, Any]:
    """A presigned S3 POST for one picture; the organizer of the event or an admin only."""
    form = call.json(ImageUploadRequest)
    return container().uploads.start_upload(event_id(call), call.require_identity(), form.content_type)


def _process_uploads(message: QueueMessage) -> None:
    """The message's receive count tells whether this is its last delivery: the one whose receive
    count is the queue's max_receive_count (the next stop is the DLQ)."""
    attempt = message.receive_count
    final = attempt >= topology.IMAGE_UPLOADS.max_receive_count
    for upload in parse_s3_notification(message.body):
        outcome = container().uploads.handle(upload, attempt=attempt, final_attempt=final)
        log.info("upload %s: %s (delivery %d)", upload.key, outcome, attempt)


@bp.on_sqs_message(queue=topology.IMAGE_UPLOADS.name, batch_size=topology.IMAGE_UPLOADS.batch_size)
def image_uploaded(event: SQSEvent) -> dict[str, Any]:
    return process_batch(
        event, _process_uploads, permanent=BadNotification, service=STEPPERSLIFE, queue=topology.IMAGE_UPLOADS.name
    )
