"""SteppersLife's Chalice app (functions/stepperslife/app.py): its environment, grants and sizes.

It reads and writes the media bucket (uploads in, variants and originals out), writes and reads
backups (it runs both databases' backups and restore drills: cdk/backups.py), sends
domain events to the queues or the bus and consumes both queues. Its functions read the database,
Redis and edge secrets and the keys of its integrations (web push, flowise, Cloudflare KV), each
function only those functions/stepperslife/lambda_functions.py declares for it. Each integration
stays off until cdk.json's ``agistack:settings.stepperslife`` turns it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aws_cdk import aws_iam as iam

from cdk.product import HANDLER_TIMEOUT_S, ProductApi, context_settings
from functions.platform.backups.tools import LAMBDA_LAYER_BIN
from functions.stepperslife.lambda_functions import SECRET_GROUPS_BY_FUNCTION

if TYPE_CHECKING:
    from cdk.stack import AgistackStack

PRODUCT = "stepperslife"
# benchmarks/images.py: at 1769 MB a Lambda has one full vCPU; a 24 MP photo takes about 1 s there
# and peaks near 130 MiB (the 50 MP budget's worst case near 500 MiB). The image queue's visibility
# timeout (topology.IMAGE_UPLOADS) leaves room for this timeout.
IMAGE_MEMORY_MB = 1769
IMAGE_TIMEOUT_S = 60


class StepperslifeApi(ProductApi):
    def __init__(self, stack: AgistackStack, *, repo_root: Path, lambda_memory_mb: int) -> None:
        resources = {
            "MEDIA_BUCKET": stack.media_bucket.bucket_name,
            "BACKUP_BUCKET": stack.backup_bucket.bucket_name,
            # The client tools of the layer cdk/backups.py adds to the backup functions.
            "PG_BIN_DIR": LAMBDA_LAYER_BIN,
            "EVENT_BUS_NAME": stack.event_bus.event_bus_name,
        }
        super().__init__(
            stack,
            # The first product: its construct id and the SAM template's logical IDs predate the others.
            "Api",
            product=PRODUCT,
            repo_root=repo_root,
            environment={**context_settings(stack, PRODUCT, reserved={*resources, *stack.secrets}), **resources},
            secret_groups_by_function=SECRET_GROUPS_BY_FUNCTION,
            secrets=stack.secrets,
            app_stage=stack.app_stage,
            stage_settings={
                "lambda_timeout": HANDLER_TIMEOUT_S,
                "lambda_memory_size": lambda_memory_mb,
                "lambda_functions": {
                    "image_uploaded": {"lambda_memory_size": IMAGE_MEMORY_MB, "lambda_timeout": IMAGE_TIMEOUT_S}
                },
            },
            queues=stack.queues,
            dependencies_layer=stack.dependencies_layer,
            preserve_logical_ids=True,
        )
        # Consuming from the queues needs no grant here: Chalice's DefaultRole policy (every role of the
        # app is a copy of it) already allows sqs:ReceiveMessage/DeleteMessage/GetQueueAttributes for
        # its SQS event sources.
        self.grant(
            stack.media_bucket.grant_read_write,
            # Backups: write (with an Object Lock retention) and read for the drills; never delete.
            stack.backup_bucket.grant_put,
            stack.backup_bucket.grant_read,
            lambda role: iam.Grant.add_to_principal(
                grantee=role,
                actions=["s3:PutObjectRetention"],
                resource_arns=[stack.backup_bucket.arn_for_objects("*")],
            ),
            stack.domain_events_queue.grant_send_messages,
            stack.image_uploads_queue.grant_send_messages,
            stack.event_bus.grant_put_events_to,
        )
        self.output_url("StepperslifeApiUrl")
