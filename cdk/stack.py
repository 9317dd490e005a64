"""The AWS side of agistack: the Chalice app (API, queue and schedule handlers) and what it talks to."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from chalice.cdk import Chalice
from constructs import Construct

from cdk.staging import stage_chalice_project

REPO_ROOT = Path(__file__).resolve().parent.parent

# Chalice's @app.on_sqs_message(queue=...) refers to queues by name, so the names are fixed (and
# therefore one deployment per account and region).
DOMAIN_EVENTS_QUEUE_NAME = "agistack-domain-events"
IMAGE_UPLOADS_QUEUE_NAME = "agistack-image-uploads"
EVENT_BUS_NAME = "agistack"
UPLOADS_PREFIX = "uploads/"

# Lambda timeout of the Chalice functions; SQS visibility must be at least 6x the consumer's timeout
# (AWS guidance for Lambda event sources) or messages are redelivered while still being processed.
HANDLER_TIMEOUT = cdk.Duration.seconds(30)
DOMAIN_EVENTS_VISIBILITY = cdk.Duration.seconds(180)
IMAGE_MEMORY_MB = 1769
IMAGE_TIMEOUT_S = 60
# Leaves room to give the image handler up to 60 s (a per-function `lambda_timeout`): 6 x 60.
IMAGE_UPLOADS_VISIBILITY = cdk.Duration.seconds(360)
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION = cdk.Duration.days(14)

SERVERLESS_FUNCTION = "AWS::Serverless::Function"


class AgistackStack(cdk.Stack):
    """Buckets, queues, event bus, secrets and the Chalice app wired to them."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str = "prod",
        allowed_origins: Sequence[str] = (),
        repo_root: Path = REPO_ROOT,
        lambda_memory_mb: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.app_stage = stage

        self.media_bucket = self._media_bucket(allowed_origins)
        self.backup_bucket = self._backup_bucket()
        self.domain_events_queue = self._queue_with_dlq(
            "DomainEvents", DOMAIN_EVENTS_QUEUE_NAME, DOMAIN_EVENTS_VISIBILITY
        )
        self.image_uploads_queue = self._queue_with_dlq(
            "ImageUploads", IMAGE_UPLOADS_QUEUE_NAME, IMAGE_UPLOADS_VISIBILITY
        )
        # Chalice cannot use @app.on_s3_event under CloudFormation, so uploads reach the image
        # handler as S3 event records inside SQS messages.
        self.media_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.image_uploads_queue),
            s3.NotificationKeyFilter(prefix=UPLOADS_PREFIX),
        )
        self.event_bus = events.EventBus(self, "EventBus", event_bus_name=EVENT_BUS_NAME)
        self.domain_events_rule = events.Rule(
            self,
            "DomainEventsRule",
            event_bus=self.event_bus,
            description="Forward agistack domain events to the domain-events queue",
            event_pattern=events.EventPattern(source=events.Match.prefix("agistack.")),
            targets=[targets.SqsQueue(self.domain_events_queue)],
        )

        self.database_url_secret = self._secret("DatabaseUrl", "database-url", "PostgreSQL URL")
        self.redis_url_secret = self._secret("RedisUrl", "redis-url", "Redis URL")
        self.edge_signing_secret = self._secret(
            "EdgeSigningKey",
            "edge-signing-key",
            "HMAC key shared with the gateway worker",
            generate=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        )

        self.chalice = self._chalice_app(repo_root, lambda_memory_mb)
        self._grant_chalice_role()
        self._outputs()

    # --- storage -------------------------------------------------------------------------------

    def _media_bucket(self, allowed_origins: Sequence[str]) -> s3.Bucket:
        cors = (
            [
                # Browsers upload with a presigned POST straight to S3.
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.POST, s3.HttpMethods.GET, s3.HttpMethods.HEAD],
                    allowed_origins=list(allowed_origins),
                    allowed_headers=["*"],
                    exposed_headers=["ETag"],
                    max_age=3000,
                )
            ]
            if allowed_origins
            else None
        )
        return s3.Bucket(
            self,
            "MediaBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=False,
            cors=cors,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
                # The image handler moves each upload to originals/; what is still here after a week
                # never reached it (the DLQ alarm says why) and is only paying for storage.
                s3.LifecycleRule(id="expire-stale-uploads", prefix="uploads/", expiration=cdk.Duration.days(7)),
            ],
            # User content: never deleted together with the stack.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _backup_bucket(self) -> s3.Bucket:
        return s3.Bucket(
            self,
            "BackupBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="archive-then-expire",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.GLACIER,
                            transition_after=cdk.Duration.days(30),
                        )
                    ],
                    expiration=cdk.Duration.days(365),
                    noncurrent_version_expiration=cdk.Duration.days(30),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    # --- messaging -------------------------------------------------------------------------------

    def _queue_with_dlq(self, construct_id: str, name: str, visibility: cdk.Duration) -> sqs.Queue:
        # SSE-SQS rather than KMS: S3 notifications and EventBridge can deliver to it without a key
        # policy (the AWS-managed alias/aws/sqs key would refuse them).
        dlq = sqs.Queue(
            self,
            f"{construct_id}Dlq",
            queue_name=f"{name}-dlq",
            retention_period=DLQ_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        return sqs.Queue(
            self,
            f"{construct_id}Queue",
            queue_name=name,
            visibility_timeout=visibility,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=MAX_RECEIVE_COUNT),
        )

    def _secret(
        self,
        construct_id: str,
        name: str,
        description: str,
        generate: secretsmanager.SecretStringGenerator | None = None,
    ) -> secretsmanager.Secret:
        # Only the ARN reaches the template and the Lambda environment; the value is generated by
        # Secrets Manager (a placeholder for the URLs, to be overwritten with put-secret-value).
        return secretsmanager.Secret(
            self,
            f"{construct_id}Secret",
            secret_name=f"agistack/{self.app_stage}/{name}",
            description=f"agistack {self.app_stage}: {description}",
            generate_secret_string=generate
            or secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=32),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    # --- compute -------------------------------------------------------------------------------

    def lambda_environment(self) -> dict[str, str]:
        """Environment of every Chalice function: names and ARNs only, never secret values.

        Static settings (AGISTACK_STAGE, LOG_LEVEL) are in the staged .chalice/config.json.
        """
        return {
            "MEDIA_BUCKET": self.media_bucket.bucket_name,
            "BACKUP_BUCKET": self.backup_bucket.bucket_name,
            "DOMAIN_EVENTS_QUEUE": self.domain_events_queue.queue_name,
            "IMAGE_UPLOADS_QUEUE": self.image_uploads_queue.queue_name,
            "EVENT_BUS_NAME": self.event_bus.event_bus_name,
            "DATABASE_URL_SECRET_ARN": self.database_url_secret.secret_arn,
            "REDIS_URL_SECRET_ARN": self.redis_url_secret.secret_arn,
            "EDGE_SIGNING_SECRET_ARN": self.edge_signing_secret.secret_arn,
        }

    def _chalice_app(self, repo_root: Path, lambda_memory_mb: int) -> Chalice:
        stage = cdk.Stage.of(self)
        if stage is None:
            raise RuntimeError("AgistackStack must be created inside a cdk.App or cdk.Stage")
        # Under the cloud assembly dir: generated, gitignored, and per-assembly (tests use their own).
        work = Path(stage.outdir) / "chalice-src" / self.artifact_id
        # The construct names the Chalice stage after its scope's path; config.json must use it.
        chalice_stage = self.to_string()
        source_dir = stage_chalice_project(
            repo_root,
            work / "project",
            product="stepperslife",
            stage=chalice_stage,
            environment={"AGISTACK_STAGE": self.app_stage, "LOG_LEVEL": "INFO"},
            stage_settings={
                "lambda_timeout": int(HANDLER_TIMEOUT.to_seconds()),
                "lambda_memory_size": lambda_memory_mb,
                # benchmarks/images.py: at 1769 MB a Lambda has one full vCPU; a 24 MP photo takes
                # about 1 s there and peaks near 130 MiB (the 50 MP budget's worst case near 500 MiB).
                "lambda_functions": {
                    "image_uploaded": {"lambda_memory_size": IMAGE_MEMORY_MB, "lambda_timeout": IMAGE_TIMEOUT_S}
                },
            },
        )
        with _chalice_packaging_sandbox(work):
            chalice = Chalice(
                self,
                "Api",
                source_dir=str(source_dir),
                # CDK tokens (resolved at deploy time) can only enter through stage_config.
                stage_config={"environment_variables": self.lambda_environment()},
            )
        _report_sqs_batch_item_failures(chalice, work)
        return chalice

    def chalice_functions(self) -> list[cdk.CfnResource]:
        """The AWS::Serverless::Function resources Chalice generated (one per route set/handler)."""
        return [
            child
            for child in self.chalice.sam_template.node.children
            if isinstance(child, cdk.CfnResource) and child.cfn_resource_type == SERVERLESS_FUNCTION
        ]

    def _grant_chalice_role(self) -> None:
        functions = self.chalice_functions()
        if not functions:
            # No routes or handlers yet: Chalice generates no role to grant to.
            cdk.Annotations.of(self).add_warning_v2(
                "agistack:no-functions", "The Chalice app defines no routes or handlers"
            )
            return
        role = self.chalice.get_role("DefaultRole")
        # Consuming from the queues needs no grant here: Chalice's own DefaultRole policy already
        # allows sqs:ReceiveMessage/DeleteMessage/GetQueueAttributes for its SQS event sources.
        grants = [
            self.media_bucket.grant_read_write(role),
            self.backup_bucket.grant_put(role),
            self.domain_events_queue.grant_send_messages(role),
            self.image_uploads_queue.grant_send_messages(role),
            self.event_bus.grant_put_events_to(role),
            self.database_url_secret.grant_read(role),
            self.redis_url_secret.grant_read(role),
            self.edge_signing_secret.grant_read(role),
        ]
        # The grants land in a separate AWS::IAM::Policy that nothing in the SAM template references;
        # without DependsOn a function (a schedule, the first request) could run before it exists.
        for grant in grants:
            grant.apply_before(*functions)
        # The queues need no such DependsOn: the environment variables refer to them (GetAtt).

    def _outputs(self) -> None:
        rest_api = self.chalice.sam_template.node.try_find_child("RestAPI")
        if isinstance(rest_api, cdk.CfnResource):
            cdk.CfnOutput(
                self,
                "ApiUrl",
                description="Base URL of the Chalice REST API (the gateway worker's origin)",
                value=cdk.Fn.sub(
                    "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/",
                    {"Api": rest_api.ref},
                ),
            )
        outputs: Mapping[str, str] = {
            "MediaBucketName": self.media_bucket.bucket_name,
            "BackupBucketName": self.backup_bucket.bucket_name,
            "DomainEventsQueueUrl": self.domain_events_queue.queue_url,
            "ImageUploadsQueueUrl": self.image_uploads_queue.queue_url,
            "EventBusName": self.event_bus.event_bus_name,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)


def _report_sqs_batch_item_failures(chalice: Chalice, work: Path) -> None:
    """Turn on ReportBatchItemFailures for every SQS event source Chalice generated.

    The handlers return Lambda's {"batchItemFailures": [...]} (functions/queues.py). Without this
    setting Lambda ignores that answer and deletes the whole batch, failed messages included.
    Chalice 1.34 cannot set it, and the event definitions cannot be read back through jsii, so
    they are read from the SAM template the construct wrote under chalice.out/.
    """
    templates = sorted((work / "chalice.out").glob("*/sam.json"))
    if len(templates) != 1:
        raise RuntimeError(f"expected one Chalice SAM template under {work / 'chalice.out'}: {templates}")
    sam = json.loads(templates[0].read_text(encoding="utf-8"))
    for logical_id, resource in sam.get("Resources", {}).items():
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        function = chalice.get_resource(logical_id)
        for event_name, event in resource.get("Properties", {}).get("Events", {}).items():
            if event.get("Type") == "SQS":
                function.add_property_override(
                    f"Events.{event_name}.Properties.FunctionResponseTypes", ["ReportBatchItemFailures"]
                )


@contextlib.contextmanager
def _chalice_packaging_sandbox(workdir: Path) -> Iterator[None]:
    """Contain the side effects of Chalice's packager to this construct.

    It writes `chalice.out/` under the current directory, imports the project's `app.py` as the
    top-level module `app` (cached in sys.modules: a second package would silently reuse it), extends
    sys.path with the project and its vendor dir, and copies the stage's environment variables (CDK
    token strings here) into os.environ. All of that is undone on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # One uuid-named package dir per synth; the previous ones are no longer needed.
    shutil.rmtree(workdir / "chalice.out", ignore_errors=True)
    saved_environ = dict(os.environ)
    saved_path = list(sys.path)
    saved_app = sys.modules.pop("app", None)
    try:
        with contextlib.chdir(workdir):
            yield
    finally:
        for key in set(os.environ) - set(saved_environ):
            del os.environ[key]
        os.environ.update(saved_environ)
        sys.path[:] = saved_path
        sys.modules.pop("app", None)
        if saved_app is not None:
            sys.modules["app"] = saved_app
