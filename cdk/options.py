"""The deploy's choices, read once from the cdk.json context (or ``cdk synth -c key=value``).

``agistack:database``: ``external`` (the default: the DatabaseUrl secret holds a URL the operator
stores; the functions run outside any VPC, as before), ``rds`` (RDS PostgreSQL) or
``aurora-serverless`` (Aurora PostgreSQL Serverless v2); both managed ones sit behind an RDS Proxy
in a VPC the functions join. ``agistack:redis``: ``external`` (the default: the RedisUrl secret) or
``elasticache-serverless`` (ElastiCache Serverless, TLS, in the same VPC). ``agistack:nat``:
``gateway`` (a managed NAT gateway) or ``instance`` (one t4g.nano NAT instance), the functions'
way out to Cloudflare, Portainer, push services and flowise once they are in a VPC.
``agistack:vpcEndpoints``: ``interface`` (the S3 gateway endpoint plus interface endpoints for
Secrets Manager, SQS, EventBridge and SES: AWS calls never leave the VPC) or ``gateway`` (the S3
gateway endpoint only; the other AWS calls go out through the NAT). ``agistack:snapStart``: SnapStart
on the API functions (see cdk/snapstart.py for why it is on by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from constructs import Construct

DATABASE_CONTEXT = "agistack:database"
REDIS_CONTEXT = "agistack:redis"
NAT_CONTEXT = "agistack:nat"
VPC_ENDPOINTS_CONTEXT = "agistack:vpcEndpoints"
SNAPSTART_CONTEXT = "agistack:snapStart"

DATABASE_CHOICES = ("external", "rds", "aurora-serverless")
REDIS_CHOICES = ("external", "elasticache-serverless")
NAT_CHOICES = ("gateway", "instance")
VPC_ENDPOINT_CHOICES = ("interface", "gateway")


def _choice(scope: Construct, key: str, choices: tuple[str, ...]) -> str:
    value = scope.node.try_get_context(key)
    value = choices[0] if value is None or value == "" else value
    if value not in choices:
        raise ValueError(f"context {key} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _flag(scope: Construct, key: str, default: bool) -> bool:
    value: Any = scope.node.try_get_context(key)
    if value is None:
        return default
    # `cdk synth -c key=false` passes a string.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"context {key} must be true or false, not {value!r}")
    return value


@dataclass(frozen=True)
class DeployOptions:
    database: str
    redis: str
    nat: str
    vpc_endpoints: str
    snap_start: bool

    @classmethod
    def from_context(cls, scope: Construct) -> DeployOptions:
        return cls(
            database=_choice(scope, DATABASE_CONTEXT, DATABASE_CHOICES),
            redis=_choice(scope, REDIS_CONTEXT, REDIS_CHOICES),
            nat=_choice(scope, NAT_CONTEXT, NAT_CHOICES),
            vpc_endpoints=_choice(scope, VPC_ENDPOINTS_CONTEXT, VPC_ENDPOINT_CHOICES),
            snap_start=_flag(scope, SNAPSTART_CONTEXT, default=True),
        )

    @property
    def managed_database(self) -> bool:
        return self.database != "external"

    @property
    def managed_redis(self) -> bool:
        return self.redis != "external"

    @property
    def needs_vpc(self) -> bool:
        """A managed database or cache lives in a VPC, and the functions join it to reach them."""
        return self.managed_database or self.managed_redis
