"""AGI Staffers' Chalice app (functions/agistaffers/app.py): its environment, grants and sizes.

Its own functions, role and REST API; the ``agistaffers`` database on the server that DATABASE_URL
names (the code picks the database by name). Its functions read the database, Redis and edge
secrets, the keys of its provisioning integrations (Portainer, the Cloudflare token) and the VAPID
key (staff's alert pushes: the same key as SteppersLife's, one push identity), each function only
those functions/agistaffers/lambda_functions.py declares for it. It sends to and consumes its
provisioning queue, and sends mail through SES; no media bucket, no flowise key.
Provisioning stays waiting until cdk.json's ``agistack:settings.agistaffers`` sets PORTAINER_URL,
CLOUDFLARE_ZONE_ID, CLOUDFLARE_DNS_TARGET and MAIL_SENDER.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from aws_cdk import aws_iam as iam

from cdk.product import HANDLER_TIMEOUT_S, ProductApi, context_settings
from functions.agistaffers.lambda_functions import SECRET_GROUPS_BY_FUNCTION

if TYPE_CHECKING:
    from cdk.stack import AgistackStack

PRODUCT = "agistaffers"
# check_uptime keeps checking for UPTIME_RUN_SECONDS (60) of each minute, then waits for the checks in
# flight (UPTIME_TIMEOUT_SECONDS per hop, up to 4 hops): more than the handlers' 30 s.
UPTIME_TIMEOUT_S = 100
# maintain_metric_partitions builds a closed day's samples B-tree (~115 M rows at 10,000 sites):
# minutes, so Lambda's longest timeout; a build cut short is dropped and redone by the next run.
PARTITIONS_TIMEOUT_S = 900


class AgistaffersApi(ProductApi):
    def __init__(self, stack: AgistackStack, *, repo_root: Path, lambda_memory_mb: int) -> None:
        super().__init__(
            stack,
            "AgistaffersApi",
            product=PRODUCT,
            repo_root=repo_root,
            environment=context_settings(stack, PRODUCT, reserved=set(stack.secrets)),
            secret_groups_by_function=SECRET_GROUPS_BY_FUNCTION,
            secrets=stack.secrets,
            app_stage=stack.app_stage,
            stage_settings={
                "lambda_timeout": HANDLER_TIMEOUT_S,
                "lambda_memory_size": lambda_memory_mb,
                "lambda_functions": {
                    "check_uptime": {"lambda_timeout": UPTIME_TIMEOUT_S},
                    "maintain_metric_partitions": {"lambda_timeout": PARTITIONS_TIMEOUT_S},
                },
            },
            queues=stack.queues,
            dependencies_layer=stack.dependencies_layer,
            preserve_logical_ids=False,
        )
        # Consuming the provisioning queue needs no grant (Chalice's role has it for its event sources);
        # the outbox relay sends to it.
        self.grant(
            stack.agi_provisioning_queue.grant_send_messages,
            functools.partial(_grant_send_email, stack),
        )
        self.output_url("AgistaffersApiUrl")


def _grant_send_email(stack: AgistackStack, grantee: iam.IGrantable) -> iam.Grant:
    """The welcome mail: SES v2 SendEmail from this account's verified identities in this region."""
    identities = stack.format_arn(service="ses", resource="identity", resource_name="*")
    return iam.Grant.add_to_principal(grantee=grantee, actions=["ses:SendEmail"], resource_arns=[identities])
