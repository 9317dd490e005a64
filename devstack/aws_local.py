"""The cloud resources the functions need, created on a local AWS endpoint (moto, MinIO, LocalStack),
and the wiring the cloud would provide: SQS queues feeding the Chalice handlers, the mail sender
verified in SES.

Queues, their DLQs, visibility timeouts and receive counts, and the upload notification come from
functions.platform.topology, as in the CDK stack: a handler behaves locally as it does on Lambda
(a failed message comes back after the same visibility timeout and reaches the DLQ after the same
number of deliveries)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any

from functions.platform import topology
from functions.platform.config import Settings

log = logging.getLogger("agistack.dev.aws")


def client(settings: Settings, service: str) -> Any:
    import boto3

    session = boto3.session.Session(region_name=settings.aws.region)
    return session.client(service, endpoint_url=settings.aws.endpoint_url)  # type: ignore[call-overload]


def ensure_resources(settings: Settings) -> dict[str, str]:
    """Buckets, queues with DLQs, the event bus, and S3 ObjectCreated(uploads/) → image queue.

    Idempotent: each create is a no-op when the resource exists. Returns queue name → URL."""
    s3, sqs, events = client(settings, "s3"), client(settings, "sqs"), client(settings, "events")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=settings.aws.media_bucket)
    _ensure_backup_bucket(s3, settings.aws.backup_bucket)
    queue_urls = {queue.name: _ensure_queue(sqs, queue) for queue in topology.QUEUES}
    uploads_arn = sqs.get_queue_attributes(
        QueueUrl=queue_urls[topology.IMAGE_UPLOADS.name], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=settings.aws.media_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": uploads_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": topology.UPLOAD_NOTIFICATION_PREFIX}]}
                    },
                }
            ]
        },
    )
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=settings.aws.event_bus_name)
    if settings.mail.sender:
        # SES sends only from a verified identity (moto checks it too).
        ses = client(settings, "sesv2")
        with contextlib.suppress(ses.exceptions.AlreadyExistsException):
            ses.create_email_identity(EmailIdentity=settings.mail.sender)
    return queue_urls


def _ensure_backup_bucket(s3: Any, bucket: str) -> None:
    """Versioned, with Object Lock in compliance mode, as cdk/stack.py makes it: the local stack then
    refuses to delete a backup younger than its retention, as AWS does. Object Lock can only be
    turned on as the bucket is created, so an existing bucket is left as it is (asked first: in
    us-east-1 creating a bucket one already owns succeeds)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError:
        pass  # not there (404) or not ours (403): creating it says which
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    shortest = min(kind.retention_days for kind in topology.BACKUP_KINDS)
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": shortest}},
        },
    )


def _ensure_queue(sqs: Any, queue: topology.Queue) -> str:
    """The queue and its DLQ with the topology's attributes; returns the queue's URL."""
    retention = str(queue.dlq_retention_days * 86400)
    dlq_url = _create_or_update(sqs, queue.dlq_name, {"MessageRetentionPeriod": retention})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)})
    return _create_or_update(
        sqs, queue.name, {"RedrivePolicy": redrive, "VisibilityTimeout": str(queue.visibility_seconds)}
    )


def _create_or_update(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except sqs.exceptions.QueueNameExists:
        # The queue exists with other attributes (someone tuned it, or an older version made it): put ours back.
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url


class QueuePump(threading.Thread):
    """Long-polls one SQS queue and hands each batch to a Chalice SQS handler, as Lambda's event
    source mapping does: messages reported in batchItemFailures (or the whole batch when the handler
    raises) stay on the queue, come back after the visibility timeout, and reach the DLQ in the end."""

    def __init__(self, settings: Settings, queue_url: str, handler: Any, name: str, batch_size: int) -> None:
        super().__init__(name=f"sqs-{name}", daemon=True)
        self._sqs = client(settings, "sqs")
        self._queue_url = queue_url
        self._queue_arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self._handler = handler
        self._batch_size = batch_size
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.drain_once(wait_seconds=1)
            except Exception as error:
                if self._stopping.is_set():  # moto went away under a receive as the stack stopped
                    log.info("queue pump %s stopped mid-receive: %s", self.name, type(error).__name__)
                    return
                log.exception("queue pump %s failed; retrying", self.name)
                self._stopping.wait(1.0)

    def drain_once(self, wait_seconds: int = 0) -> int:
        """Deliver one batch; returns how many messages were received."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(message) for message in messages]}
        from chalice.local import LambdaContext

        try:
            result = self._handler(event, LambdaContext(self.name, 512, max_runtime_ms=60_000))
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        except Exception:
            log.exception("handler %s raised: the whole batch will be retried", self.name)
            failed = {message["MessageId"] for message in messages}
        done = [message for message in messages if message["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {
                # Lambda's event spells the fields of a message attribute in camel case.
                name: {"stringValue": value.get("StringValue"), "dataType": value.get("DataType")}
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": self._queue_arn.split(":")[3],
        }
