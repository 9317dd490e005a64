"""The managed database and cache (``agistack:database``, ``agistack:redis``; cdk/options.py).

Database: RDS PostgreSQL 17.9 (``rds``: one db.t4g.small, single-AZ, 20 GB gp3 growing to 100 GB) or
Aurora PostgreSQL Serverless v2 (``aurora-serverless``: 0.5 to 4 ACUs), either with automated
backups and point-in-time recovery for 35 days (the production RPO: minutes), deletion protection,
encrypted storage, a snapshot when removed, and an RDS Proxy the functions connect through (many
short-lived Lambda environments, few server connections). PostgreSQL 17 because the backup
functions' pg_dump (cdk/backups.py) is 18: never older than the server.

The code's contract stays ``DATABASE_URL``: the DatabaseUrl secret (stack.py) holds
``postgresql://USER:PASSWORD@PROXY:5432/postgres?sslmode=require``, composed by CloudFormation from
the proxy's endpoint and the generated credentials (dynamic references: the password never enters
the template). The generated password has no character a URL would need escaped. Rotating it needs a
redeploy (the URL secret is composed at deploy time): rotation is not turned on.

Cache: ElastiCache Serverless (Valkey 8, TLS only, the same VPC): the RedisUrl secret holds
``rediss://ENDPOINT:PORT``. Its usage limits cap the bill (5 GB, 5,000 ECPU/s).

Each part brings its alarms (the monitoring topic and dashboard carry them, cdk/monitoring.py).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_rds as rds
from constructs import Construct

from cdk.network import Network

POSTGRES_PORT = 5432
DATABASE_USER = "agistack"
# The generated password goes into a URL unescaped: letters and digits only (32 of them).
URL_UNSAFE_CHARACTERS = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
BACKUP_RETENTION = cdk.Duration.days(35)
INSTANCE_TYPE = "t4g.small"
AURORA_MIN_ACU, AURORA_MAX_ACU = 0.5, 4
CACHE_MAX_GB = 5
CACHE_MAX_ECPU_PER_SECOND = 5000
# Alarm thresholds: an operator has days, not minutes, to act on storage; connections near the
# instance's max_connections (about 200 on 2 GiB) or the proxy's client connections past what the
# account's default Lambda concurrency (1,000) would open with one connection each.
FREE_STORAGE_ALARM_BYTES = 2 * 1024**3
DATABASE_CONNECTIONS_ALARM = 150
PROXY_CLIENT_CONNECTIONS_ALARM = 800
CPU_ALARM_PERCENT = 80
CACHE_BYTES_ALARM_FRACTION = 0.8
FIVE_MINUTES = cdk.Duration.minutes(5)


def _alarm(
    scope: Construct,
    construct_id: str,
    metric: cloudwatch.IMetric,
    *,
    description: str,
    threshold: float,
    below: bool = False,
    evaluation_periods: int = 3,
) -> cloudwatch.Alarm:
    return metric.create_alarm(
        scope,
        construct_id,
        alarm_description=description,
        threshold=threshold,
        comparison_operator=(
            cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
            if below
            else cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        ),
        evaluation_periods=evaluation_periods,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


class ManagedDatabase(Construct):
    """The database (instance or Aurora cluster), its proxy, their security groups and alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, kind: str, network: Network) -> None:
        super().__init__(scope, construct_id)
        self.kind = kind
        credentials = rds.Credentials.from_generated_secret(DATABASE_USER, exclude_characters=URL_UNSAFE_CHARACTERS)
        self.subnet_group = rds.SubnetGroup(
            self,
            "Subnets",
            description="agistack database",
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        common: dict[str, Any] = {
            "vpc": network.vpc,
            "subnet_group": self.subnet_group,
            "credentials": credentials,
            "storage_encrypted": True,
            "deletion_protection": True,
            "removal_policy": cdk.RemovalPolicy.SNAPSHOT,
        }
        self.instance: rds.DatabaseInstance | None = None
        self.cluster: rds.DatabaseCluster | None = None
        target: rds.DatabaseInstance | rds.DatabaseCluster
        if kind == "rds":
            target = self.instance = rds.DatabaseInstance(
                self,
                "Instance",
                engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9),
                instance_type=ec2.InstanceType(INSTANCE_TYPE),
                allocated_storage=20,
                max_allocated_storage=100,
                storage_type=rds.StorageType.GP3,
                backup_retention=BACKUP_RETENTION,
                copy_tags_to_snapshot=True,
                auto_minor_version_upgrade=True,
                **common,
            )
            self.arn = target.instance_arn
        else:
            target = self.cluster = rds.DatabaseCluster(
                self,
                "Cluster",
                engine=rds.DatabaseClusterEngine.aurora_postgres(version=rds.AuroraPostgresEngineVersion.VER_17_9),
                writer=rds.ClusterInstance.serverless_v2("Writer"),
                serverless_v2_min_capacity=AURORA_MIN_ACU,
                serverless_v2_max_capacity=AURORA_MAX_ACU,
                backup=rds.BackupProps(retention=BACKUP_RETENTION),
                **common,
            )
            self.arn = target.cluster_arn
        self.target = target
        assert target.secret is not None
        self.credentials_secret = target.secret

        self.proxy_security_group = ec2.SecurityGroup(
            self, "ProxySecurityGroup", vpc=network.vpc, description="agistack RDS Proxy", allow_all_outbound=True
        )
        self.proxy = target.add_proxy(
            "Proxy",
            secrets=[target.secret],
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_groups=[self.proxy_security_group],
            require_tls=True,
            iam_auth=False,
        )
        target.connections.allow_default_port_from(self.proxy_security_group, "from the RDS Proxy")
        self.proxy_security_group.add_ingress_rule(
            network.functions_security_group, ec2.Port.tcp(POSTGRES_PORT), "from the functions"
        )
        self.alarms = self._alarms()

    def url(self) -> cdk.SecretValue:
        """What DATABASE_URL holds: the proxy's endpoint with the generated credentials (resolved by
        CloudFormation from the credentials secret when it creates the URL secret)."""
        secret = self.credentials_secret
        return cdk.SecretValue.unsafe_plain_text(
            cdk.Fn.join(
                "",
                [
                    "postgresql://",
                    secret.secret_value_from_json("username").unsafe_unwrap(),
                    ":",
                    secret.secret_value_from_json("password").unsafe_unwrap(),
                    "@",
                    self.proxy.endpoint,
                    f":{POSTGRES_PORT}/postgres?sslmode=require",
                ],
            )
        )

    def _alarms(self) -> list[cloudwatch.Alarm]:
        target = self.target
        if isinstance(target, rds.DatabaseInstance):
            storage = target.metric_free_storage_space(statistic="Minimum", period=FIVE_MINUTES)
            storage_name = "free storage space"
        else:
            # Aurora's volume grows by itself; what can run out is the instance's local (temp) storage.
            storage = target.metric_free_local_storage(statistic="Minimum", period=FIVE_MINUTES)
            storage_name = "free local storage"
        proxy_connections = cloudwatch.Metric(
            namespace="AWS/RDS",
            metric_name="ClientConnections",
            dimensions_map={"ProxyName": self.proxy.db_proxy_name},
            statistic="Maximum",
            period=FIVE_MINUTES,
        )
        return [
            _alarm(
                self,
                "FreeStorageLow",
                storage,
                description=f"database: {storage_name} below {FREE_STORAGE_ALARM_BYTES // 1024**3} GiB",
                threshold=FREE_STORAGE_ALARM_BYTES,
                below=True,
            ),
            _alarm(
                self,
                "ConnectionsHigh",
                target.metric_database_connections(statistic="Maximum", period=FIVE_MINUTES),
                description=f"database: {DATABASE_CONNECTIONS_ALARM} or more server connections",
                threshold=DATABASE_CONNECTIONS_ALARM,
            ),
            _alarm(
                self,
                "ProxyConnectionsHigh",
                proxy_connections,
                description=f"RDS Proxy: {PROXY_CLIENT_CONNECTIONS_ALARM} or more client connections",
                threshold=PROXY_CLIENT_CONNECTIONS_ALARM,
            ),
            _alarm(
                self,
                "CpuHigh",
                target.metric_cpu_utilization(statistic="Average", period=FIVE_MINUTES),
                description=f"database: CPU at or above {CPU_ALARM_PERCENT}% for 15 minutes",
                threshold=CPU_ALARM_PERCENT,
            ),
        ]


class ManagedCache(Construct):
    """ElastiCache Serverless (Valkey, TLS) reachable from the functions only, and its alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, name: str, network: Network) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=network.vpc, description="agistack cache", allow_all_outbound=False
        )
        self.name = name
        self.cache = elasticache.CfnServerlessCache(
            self,
            "Cache",
            serverless_cache_name=name,
            engine="valkey",
            major_engine_version="8",
            description="agistack cache (Redis protocol)",
            security_group_ids=[self.security_group.security_group_id],
            subnet_ids=network.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids,
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(unit="GB", maximum=CACHE_MAX_GB),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(maximum=CACHE_MAX_ECPU_PER_SECOND),
            ),
        )
        self.security_group.add_ingress_rule(
            network.functions_security_group, ec2.Port.tcp_range(6379, 6380), "from the functions"
        )
        self.alarms = self._alarms()

    def url(self) -> cdk.SecretValue:
        """What REDIS_URL holds: TLS (``rediss``) to the serverless endpoint."""
        return cdk.SecretValue.unsafe_plain_text(
            cdk.Fn.join("", ["rediss://", self.cache.attr_endpoint_address, ":", self.cache.attr_endpoint_port])
        )

    def _alarms(self) -> list[cloudwatch.Alarm]:
        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/ElastiCache",
                metric_name=name,
                dimensions_map={"clusterId": self.name},
                statistic=statistic,
                period=FIVE_MINUTES,
            )

        return [
            _alarm(
                self,
                "Throttled",
                metric("ThrottledCmds", "Sum"),
                description="cache: commands throttled (the ECPU limit is reached)",
                threshold=1,
                evaluation_periods=1,
            ),
            _alarm(
                self,
                "MemoryHigh",
                metric("BytesUsedForCache", "Maximum"),
                description=f"cache: over {CACHE_BYTES_ALARM_FRACTION:.0%} of its {CACHE_MAX_GB} GB limit",
                threshold=CACHE_BYTES_ALARM_FRACTION * CACHE_MAX_GB * 1024**3,
            ),
        ]
