"""AGI Staffers' Chalice app (functions/agistaffers/app.py): its environment, grants and sizes.

Its own functions, role and REST API; the ``agistaffers`` database on the server that DATABASE_URL
names (the code picks the database by name). It reads the database, Redis and edge secrets and
nothing else: no media bucket, no SteppersLife integration keys. Grant more here when a feature
needs it (the backup bucket for backups, a queue for the onboarding saga).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cdk.product import HANDLER_TIMEOUT_S, ProductApi, context_settings

if TYPE_CHECKING:
    from cdk.stack import AgistackStack

PRODUCT = "agistaffers"
SECRETS = ("DATABASE_URL", "REDIS_URL", "EDGE_SIGNING_SECRET")


class AgistaffersApi(ProductApi):
    def __init__(self, stack: AgistackStack, *, repo_root: Path, lambda_memory_mb: int) -> None:
        resources = stack.secret_arns(*SECRETS)
        super().__init__(
            stack,
            "AgistaffersApi",
            product=PRODUCT,
            repo_root=repo_root,
            environment={**context_settings(stack, PRODUCT, reserved={*resources, *stack.secrets}), **resources},
            app_stage=stack.app_stage,
            stage_settings={"lambda_timeout": HANDLER_TIMEOUT_S, "lambda_memory_size": lambda_memory_mb},
            queues=stack.queues,
            preserve_logical_ids=False,
        )
        self.grant(*(stack.secrets[name].grant_read for name in SECRETS))
        self.output_url("AgistaffersApiUrl")
