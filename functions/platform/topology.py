"""Where messages and objects live: queues and their delivery rules, the event bus, buckets, key prefixes.

The one declaration that the Chalice decorators (``@bp.on_sqs_message``), the CDK stack and the
local stack (``devstack.aws_local``) all read, so that what a handler expects (a queue's name, how
often a message comes back before the DLQ, the prefix that triggers the image pipeline) cannot drift
from what is deployed. Standard library only: CDK imports it without the functions' dependencies.

Queue names are fixed rather than generated: Chalice's decorators refer to queues by name, which
also means one deployment per account and region.
"""

from __future__ import annotations

from typing import NamedTuple


class Queue(NamedTuple):
    """An SQS queue consumed by one Lambda handler, with its dead-letter queue."""

    name: str
    # At least 6x the consumer's Lambda timeout (AWS guidance for SQS event sources), otherwise a
    # message comes back while its first delivery is still running.
    visibility_seconds: int
    # Deliveries before SQS moves a message to the DLQ; a handler's last attempt is this one.
    max_receive_count: int
    # Messages per Lambda invocation.
    batch_size: int
    dlq_retention_days: int

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"


# The handler has a 30 s Lambda timeout: 6 x 30.
DOMAIN_EVENTS = Queue(
    "agistack-domain-events", visibility_seconds=180, max_receive_count=5, batch_size=10, dlq_retention_days=14
)
# Room for an image handler timeout of up to 60 s: 6 x 60. About 1 s per 12 MP picture on one vCPU
# (benchmarks/images.py), so a batch of 4 stays far below the timeout.
IMAGE_UPLOADS = Queue(
    "agistack-image-uploads", visibility_seconds=360, max_receive_count=5, batch_size=4, dlq_retention_days=14
)
# AGI Staffers' provisioning: saga steps (one message per step), customer lifecycle events and the welcome
# mail. The handler has a 30 s Lambda timeout: 6 x 30. Ten deliveries: a step that keeps failing is
# also picked up again by the schedule from its records, so the DLQ holds only what is truly poison.
AGI_PROVISIONING = Queue(
    "agistack-agi-provisioning", visibility_seconds=180, max_receive_count=10, batch_size=5, dlq_retention_days=14
)
QUEUES = (DOMAIN_EVENTS, IMAGE_UPLOADS, AGI_PROVISIONING)

EVENT_BUS_NAME = "agistack"
# Every domain event's EventBridge source starts with this; the bus's rule forwards them to DOMAIN_EVENTS.
EVENT_SOURCE_PREFIX = "agistack."

# Bucket names where nothing else names them (locally); in AWS, CloudFormation generates the names and
# the Lambda environment carries them (MEDIA_BUCKET, BACKUP_BUCKET).
MEDIA_BUCKET = "agistack-media"
BACKUP_BUCKET = "agistack-backups"

# The media bucket's layout. Browsers POST to uploads/, whose ObjectCreated notifications feed
# IMAGE_UPLOADS; the image handler writes the private original and the public variants, which the
# edge serves (the public/ layout is the contract in shared/media.py, defined there once).
UPLOADS_PREFIX = "uploads/"
ORIGINALS_PREFIX = "originals/"
UPLOAD_NOTIFICATION_PREFIX = UPLOADS_PREFIX


class BackupKind(NamedTuple):
    """A kind of database backup: its key prefix in the backup bucket and how long it is kept.

    The bucket's Object Lock retention (nobody may delete a backup younger than this) and its
    lifecycle rules (expire after it, archive weekly ones) both come from here (cdk/stack.py)."""

    name: str
    retention_days: int
    # Moved to a long-term storage class by the bucket's lifecycle (weekly archives only).
    archived: bool = False

    @property
    def prefix(self) -> str:
        return f"{self.name}/"


# Every 15 minutes, kept 3 days: the local RPO of 15 minutes (functions/platform/backups/__init__.py).
INCREMENTAL_BACKUP = BackupKind("incremental", retention_days=3)
DAILY_BACKUP = BackupKind("daily", retention_days=35)
WEEKLY_BACKUP = BackupKind("weekly", retention_days=365, archived=True)
BACKUP_KINDS = (INCREMENTAL_BACKUP, DAILY_BACKUP, WEEKLY_BACKUP)
