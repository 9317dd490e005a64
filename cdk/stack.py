"""The AWS side of agistack: the resources the products share, and each product's Chalice app.

Shared here: buckets, queues with their DLQs, the event bus, the secrets, and what the deploy options
(cdk/options.py) add: the VPC (cdk/network.py), the managed database and cache (cdk/data.py); the
media distribution (cdk/media.py) and SnapStart (cdk/snapstart.py). Each product's app (its
functions, role and REST API) is declared in its own module, cdk/stepperslife.py and
cdk/agistaffers.py, with the environment and grants it needs; cdk/product.py holds the mechanics.
Names, visibility timeouts, receive counts and key prefixes come from functions.platform.topology,
which the Chalice decorators and the local stack read too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.agistaffers import AgistaffersApi
from cdk.backups import BackupPath
from cdk.data import ManagedCache, ManagedDatabase
from cdk.dependencies import LAMBDA_RUNTIME, build_dependencies_layer, requirements_key
from cdk.media import MediaDelivery
from cdk.monitoring import Monitoring
from cdk.network import Network
from cdk.options import DeployOptions
from cdk.snapstart import enable_snap_start
from cdk.stepperslife import StepperslifeApi
from functions.platform import topology

REPO_ROOT = Path(__file__).resolve().parent.parent


class AgistackStack(cdk.Stack):
    """Buckets, queues, event bus and secrets, and the products' Chalice apps wired to them."""

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
        self.domain_events_queue = self._queue_with_dlq("DomainEvents", topology.DOMAIN_EVENTS)
        self.image_uploads_queue = self._queue_with_dlq("ImageUploads", topology.IMAGE_UPLOADS)
        self.agi_provisioning_queue = self._queue_with_dlq("AgiProvisioning", topology.AGI_PROVISIONING)
        self.queues: Mapping[str, sqs.Queue] = {
            topology.DOMAIN_EVENTS.name: self.domain_events_queue,
            topology.IMAGE_UPLOADS.name: self.image_uploads_queue,
            topology.AGI_PROVISIONING.name: self.agi_provisioning_queue,
        }
        # Chalice cannot use @app.on_s3_event under CloudFormation, so uploads reach the image
        # handler as S3 event records inside SQS messages.
        self.media_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.image_uploads_queue),
            s3.NotificationKeyFilter(prefix=topology.UPLOAD_NOTIFICATION_PREFIX),
        )
        self.event_bus = events.EventBus(self, "EventBus", event_bus_name=topology.EVENT_BUS_NAME)
        self.domain_events_rule = events.Rule(
            self,
            "DomainEventsRule",
            event_bus=self.event_bus,
            description="Forward agistack domain events to the domain-events queue",
            event_pattern=events.EventPattern(source=events.Match.prefix(topology.EVENT_SOURCE_PREFIX)),
            targets=[targets.SqsQueue(self.domain_events_queue)],
        )

        # The managed database and cache (cdk/options.py), in a VPC the functions then join.
        self.options = DeployOptions.from_context(self)
        interface_endpoints = self.options.vpc_endpoints == "interface"
        self.network = (
            Network(self, "Network", nat=self.options.nat, interface_endpoints=interface_endpoints)
            if self.options.needs_vpc
            else None
        )
        self.database = (
            ManagedDatabase(self, "Database", kind=self.options.database, network=self.network)
            if self.options.managed_database and self.network
            else None
        )
        self.cache = (
            ManagedCache(self, "Cache", name=f"agistack-{stage}", network=self.network)
            if self.options.managed_redis and self.network
            else None
        )
        # External: a placeholder the operator overwrites; managed: composed from the resources.
        self.database_url_secret = self._secret(
            "DatabaseUrl", "database-url", "PostgreSQL URL", value=self.database.url() if self.database else None
        )
        self.redis_url_secret = self._secret(
            "RedisUrl", "redis-url", "Redis URL", value=self.cache.url() if self.cache else None
        )
        self.edge_signing_secret = self._secret(
            "EdgeSigningKey",
            "edge-signing-key",
            "HMAC key shared with the gateway worker",
            generate=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        )
        # Placeholders until an operator stores the real value (put-secret-value); each feature stays
        # off until its plain settings are set in cdk.json as well (VAPID_SUBJECT, FLOWISE_URL...).
        self.vapid_private_key_secret = self._secret("VapidPrivateKey", "vapid-private-key", "web push VAPID key")
        self.flowise_api_key_secret = self._secret("FlowiseApiKey", "flowise-api-key", "flowise bearer token")
        self.cloudflare_api_token_secret = self._secret(
            "CloudflareApiToken", "cloudflare-api-token", "Cloudflare API token (Workers KV Storage: Edit)"
        )
        self.portainer_api_key_secret = self._secret("PortainerApiKey", "portainer-api-key", "Portainer API key")
        # The setting each secret holds, by the name the functions' settings read.
        self.secrets: Mapping[str, secretsmanager.Secret] = {
            "DATABASE_URL": self.database_url_secret,
            "REDIS_URL": self.redis_url_secret,
            "EDGE_SIGNING_SECRET": self.edge_signing_secret,
            "VAPID_PRIVATE_KEY": self.vapid_private_key_secret,
            "FLOWISE_API_KEY": self.flowise_api_key_secret,
            "CLOUDFLARE_API_TOKEN": self.cloudflare_api_token_secret,
            "PORTAINER_API_KEY": self.portainer_api_key_secret,
        }

        self.dependencies_layer = self._dependencies_layer(repo_root / "functions" / "requirements.txt")
        self.stepperslife = StepperslifeApi(self, repo_root=repo_root, lambda_memory_mb=lambda_memory_mb)
        self.agistaffers = AgistaffersApi(self, repo_root=repo_root, lambda_memory_mb=lambda_memory_mb)
        self.products = (self.stepperslife, self.agistaffers)
        for product in self.products:
            if self.network:
                product.join_vpc(self.network)
            if self.options.snap_start:
                enable_snap_start(product)
        # The backups run in SteppersLife's app (functions/platform/backups/routes.py says why).
        self.backups = BackupPath(
            self, "Backups", bucket=self.backup_bucket, app=self.stepperslife, database=self.database
        )
        self.media_delivery = MediaDelivery(self, "MediaDelivery", bucket=self.media_bucket)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            queues=list(self.queues.values()),
            products=list(self.products),
            extra_alarms=[
                *self.backups.alarms,
                *(self.database.alarms if self.database else ()),
                *(self.cache.alarms if self.cache else ()),
            ],
        )
        self._outputs()

    def _dependencies_layer(self, requirements: Path) -> lambda_.LayerVersion:
        """functions/requirements.txt built for the Lambda runtime (cdk/dependencies.py), on every function."""
        self.dependencies_layer_dir = build_dependencies_layer(requirements)
        return lambda_.LayerVersion(
            self,
            "DependenciesLayer",
            # The key already names the contents: CDK need not hash tens of MB on every synth.
            code=lambda_.Code.from_asset(
                str(self.dependencies_layer_dir),
                asset_hash=requirements_key(requirements),
                asset_hash_type=cdk.AssetHashType.CUSTOM,
            ),
            description="agistack functions' third-party packages (functions/requirements.txt)",
            compatible_runtimes=[lambda_.Runtime(LAMBDA_RUNTIME, lambda_.RuntimeFamily.PYTHON)],
            compatible_architectures=[lambda_.Architecture.X86_64],
        )

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
                s3.LifecycleRule(
                    id="expire-stale-uploads", prefix=topology.UPLOADS_PREFIX, expiration=cdk.Duration.days(7)
                ),
            ],
            # User content: never deleted together with the stack.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _backup_bucket(self) -> s3.Bucket:
        """Versioned, encrypted, and under S3 Object Lock in compliance mode.

        Object Lock rather than a bucket policy: a policy denying deletes can be edited away by anyone
        who may edit policies (a stolen admin key, a hurried operator), and it cannot tell a backup's
        age; a compliance-mode lock cannot be shortened or removed by anyone, the root account
        included, until each version's own retain-until date, which the writer sets per kind
        (functions/platform/backups/store.py). The default retention (the shortest kind's) covers a
        version written without one. The functions' role may put and read, never delete.

        The lifecycle follows topology.BACKUP_KINDS: each kind expires the day after its lock ends;
        weekly archives move to Glacier after a day (a drill never reads them; the daily ones cover 35
        days); old versions and unfinished multipart uploads go after a day."""
        shortest = min(kind.retention_days for kind in topology.BACKUP_KINDS)
        rules = [
            s3.LifecycleRule(
                id=f"{kind.name}-retention",
                prefix=kind.prefix,
                expiration=cdk.Duration.days(kind.retention_days + 1),
                noncurrent_version_expiration=cdk.Duration.days(1),
                transitions=(
                    [s3.Transition(storage_class=s3.StorageClass.GLACIER, transition_after=cdk.Duration.days(1))]
                    if kind.archived
                    else None
                ),
            )
            for kind in topology.BACKUP_KINDS
        ]
        rules.append(
            s3.LifecycleRule(
                id="abort-incomplete-multipart", abort_incomplete_multipart_upload_after=cdk.Duration.days(1)
            )
        )
        return s3.Bucket(
            self,
            "BackupBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(cdk.Duration.days(shortest)),
            lifecycle_rules=rules,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    # --- messaging -------------------------------------------------------------------------------

    def _queue_with_dlq(self, construct_id: str, queue: topology.Queue) -> sqs.Queue:
        # SSE-SQS rather than KMS: S3 notifications and EventBridge can deliver to it without a key
        # policy (the AWS-managed alias/aws/sqs key would refuse them).
        dlq = sqs.Queue(
            self,
            f"{construct_id}Dlq",
            queue_name=queue.dlq_name,
            retention_period=cdk.Duration.days(queue.dlq_retention_days),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        return sqs.Queue(
            self,
            f"{construct_id}Queue",
            queue_name=queue.name,
            visibility_timeout=cdk.Duration.seconds(queue.visibility_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=queue.max_receive_count),
        )

    def _secret(
        self,
        construct_id: str,
        name: str,
        description: str,
        generate: secretsmanager.SecretStringGenerator | None = None,
        value: cdk.SecretValue | None = None,
    ) -> secretsmanager.Secret:
        # Only the ARN reaches the template and the Lambda environment; the value is generated by
        # Secrets Manager (a placeholder for URLs and third-party keys: overwrite with put-secret-value),
        # or composed by CloudFormation from dynamic references (the managed database's and cache's URLs).
        return secretsmanager.Secret(
            self,
            f"{construct_id}Secret",
            secret_name=f"agistack/{self.app_stage}/{name}",
            description=f"agistack {self.app_stage}: {description}",
            generate_secret_string=None
            if value
            else generate or secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=32),
            secret_string_value=value,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _outputs(self) -> None:
        outputs: Mapping[str, str] = {
            "MediaBucketName": self.media_bucket.bucket_name,
            "BackupBucketName": self.backup_bucket.bucket_name,
            "DomainEventsQueueUrl": self.domain_events_queue.queue_url,
            "ImageUploadsQueueUrl": self.image_uploads_queue.queue_url,
            "AgiProvisioningQueueUrl": self.agi_provisioning_queue.queue_url,
            "EventBusName": self.event_bus.event_bus_name,
            # The gateway worker's MEDIA_PUBLIC_BASE_URL: variants under public/ through CloudFront.
            "MediaPublicBaseUrl": f"https://{self.media_delivery.distribution.distribution_domain_name}",
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)
