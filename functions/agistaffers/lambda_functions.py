"""AGI Staffers' Lambda functions and the settings groups that hold secrets each one's code reads.

The one declaration of who reads which secret (see functions/stepperslife/lambda_functions.py for
how CDK and the settings use it, and how tests/deploy/test_secrets.py holds it to the code).
Standard library only: CDK imports it.
"""

from __future__ import annotations

from collections.abc import Mapping

# Building provisioning (which every use case that touches sites builds) reads Portainer's key and
# the Cloudflare token; staff alerts are pushed (VAPID) by the provisioning queue's handler.
_PROVISIONING = ("database", "redis", "cloudflare", "portainer")

SECRET_GROUPS_BY_FUNCTION: Mapping[str, tuple[str, ...]] = {
    "app": ("database", "edge", "redis", "cloudflare", "portainer", "push"),
    "provision": (*_PROVISIONING, "push"),
    "prune_provisioning_records": (*_PROVISIONING, "push"),
    "kick_provisioning": _PROVISIONING,
    "check_uptime": _PROVISIONING,
    "evaluate_alerts": _PROVISIONING,
    "roll_up_metrics": _PROVISIONING,
    "maintain_metric_partitions": ("database",),
}
