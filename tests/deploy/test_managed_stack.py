"""The deploy options (cdk/options.py): managed database and cache in a VPC, the NAT choice, SnapStart.

Two variants, each synthesized once for this module: RDS PostgreSQL + ElastiCache Serverless + a
NAT gateway + interface endpoints, and Aurora Serverless v2 + a NAT instance + the S3 endpoint only,
SnapStart off. The default (external database and Redis, no VPC) is the session's ``synth``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.deploy.conftest import Synth
from tests.deploy.test_cfn_lint import lint_problems
from tests.deploy.test_secrets import roles_of_policy

pytestmark = pytest.mark.slow

MANAGED = {"agistack:database": "rds", "agistack:redis": "elasticache-serverless", "agistack:nat": "gateway"}
AURORA = {
    "agistack:database": "aurora-serverless",
    "agistack:nat": "instance",
    "agistack:vpcEndpoints": "gateway",
    "agistack:snapStart": "false",
}


@pytest.fixture(scope="module")
def managed() -> Synth:
    return Synth(MANAGED, "managed")


@pytest.fixture(scope="module")
def aurora() -> Synth:
    return Synth(AURORA, "aurora")


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def group_id(synth: Synth, security_group: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(security_group), "GroupId"]}


def chalice_functions(synth: Synth) -> dict[str, dict[str, Any]]:
    return {**synth.functions_of(synth.stack.stepperslife), **synth.functions_of(synth.stack.agistaffers)}


def ingress_sources(synth: Synth, security_group: Any) -> list[tuple[Any, int]]:
    """(source group, from port) of every ingress rule into ``security_group``."""
    target = group_id(synth, security_group)
    rules = [
        (rule["Properties"].get("SourceSecurityGroupId"), rule["Properties"]["FromPort"])
        for rule in synth.of_type("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == target
    ]
    inline = synth.resources[synth.logical_id(security_group)]["Properties"].get("SecurityGroupIngress", [])
    return rules + [(rule.get("SourceSecurityGroupId"), rule["FromPort"]) for rule in inline]


def test_every_variant_passes_cfn_lint(managed: Synth, aurora: Synth) -> None:
    for variant in (managed, aurora):
        problems = lint_problems(variant.json)
        assert not problems, "\n".join(problems)


def test_rds_keeps_35_days_of_point_in_time_recovery_and_cannot_be_deleted(managed: Synth) -> None:
    database = managed.stack.database
    assert database is not None and database.instance is not None
    instance = managed.resources[managed.logical_id(database.instance)]
    props = instance["Properties"]
    assert props["BackupRetentionPeriod"] == 35
    assert props["DeletionProtection"] is True and props["StorageEncrypted"] is True
    assert props["Engine"] == "postgres" and props["EngineVersion"].startswith("17.")
    assert props["DBSubnetGroupName"] == ref(managed.logical_id(database.subnet_group))
    assert "PubliclyAccessible" not in props or props["PubliclyAccessible"] is False
    assert instance["DeletionPolicy"] == "Snapshot"


def test_aurora_serverless_keeps_35_days_and_cannot_be_deleted(aurora: Synth) -> None:
    database = aurora.stack.database
    assert database is not None and database.cluster is not None
    props = aurora.resources[aurora.logical_id(database.cluster)]["Properties"]
    assert props["BackupRetentionPeriod"] == 35
    assert props["DeletionProtection"] is True and props["StorageEncrypted"] is True
    assert props["Engine"] == "aurora-postgresql"
    assert props["ServerlessV2ScalingConfiguration"] == {"MinCapacity": 0.5, "MaxCapacity": 4}
    (writer,) = aurora.of_type("AWS::RDS::DBInstance").values()
    assert writer["Properties"]["DBInstanceClass"] == "db.serverless"


def test_the_functions_reach_the_database_only_through_the_tls_proxy(managed: Synth) -> None:
    database = managed.stack.database
    network = managed.stack.network
    assert database is not None and network is not None
    (proxy_id, proxy) = next(iter(managed.of_type("AWS::RDS::DBProxy").items()))
    assert proxy["Properties"]["RequireTLS"] is True and proxy["Properties"]["EngineFamily"] == "POSTGRESQL"
    assert ingress_sources(managed, database.proxy_security_group) == [
        (group_id(managed, network.functions_security_group), 5432)
    ]
    database_groups = managed.resources[managed.logical_id(database.instance)]["Properties"]["VPCSecurityGroups"]
    (database_group,) = database_groups
    sources = [
        (rule["Properties"].get("SourceSecurityGroupId"), rule["Properties"]["FromPort"])
        for rule in managed.of_type("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == database_group
    ]
    assert sources and all(source == group_id(managed, database.proxy_security_group) for source, _ in sources)
    # DATABASE_URL: the proxy's endpoint and the generated credentials, resolved by CloudFormation.
    url = managed.resources[managed.logical_id(managed.stack.database_url_secret)]["Properties"]
    assert "GenerateSecretString" not in url
    text = json.dumps(url["SecretString"])
    assert text.count("{{resolve:secretsmanager:") == 2 and ":SecretString:password::}}" in text
    assert f'"Fn::GetAtt": ["{proxy_id}", "Endpoint"]' in text and "?sslmode=require" in text


def test_functions_join_the_vpc_only_when_something_is_managed(synth: Synth, managed: Synth) -> None:
    assert not synth.of_type("AWS::EC2::VPC") and synth.stack.network is None
    assert not any("VpcConfig" in f["Properties"] for f in chalice_functions(synth).values())
    network = managed.stack.network
    assert network is not None
    private = {
        json.dumps(ref(logical_id))
        for logical_id, subnet in managed.of_type("AWS::EC2::Subnet").items()
        if subnet["Properties"]["MapPublicIpOnLaunch"] is False
    }
    assert len(private) == 2
    for name, function in chalice_functions(managed).items():
        config = function["Properties"]["VpcConfig"]
        assert config["SecurityGroupIds"] == [group_id(managed, network.functions_security_group)], name
        assert {json.dumps(subnet) for subnet in config["SubnetIds"]} == private, name
    roles = {json.dumps(f["Properties"]["Role"]) for f in chalice_functions(managed).values()}
    eni_policies = [
        policy
        for policy in managed.of_type("AWS::IAM::Policy").values()
        if "ec2:CreateNetworkInterface" in json.dumps(policy["Properties"]["PolicyDocument"])
    ]
    assert {json.dumps({"Fn::GetAtt": [r, "Arn"]}) for p in eni_policies for r in roles_of_policy(p)} == roles


def test_nat_gateway_or_nat_instance_as_the_context_says(managed: Synth, aurora: Synth) -> None:
    assert len(managed.of_type("AWS::EC2::NatGateway")) == 1
    assert not managed.of_type("AWS::EC2::Instance")
    assert not aurora.of_type("AWS::EC2::NatGateway")
    (instance,) = aurora.of_type("AWS::EC2::Instance").values()
    assert instance["Properties"]["InstanceType"] == "t4g.nano"
    assert instance["Properties"]["SourceDestCheck"] is False
    routes = [r["Properties"] for r in aurora.of_type("AWS::EC2::Route").values()]
    assert any("InstanceId" in route for route in routes), "no private route through the NAT instance"


def test_vpc_endpoints_for_the_aws_apis_the_functions_call(managed: Synth, aurora: Synth) -> None:
    def services(synth: Synth) -> dict[str, str]:
        return {
            json.dumps(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1].strip('"]} '): e["Properties"].get(
                "VpcEndpointType", "Gateway"
            )
            for e in synth.of_type("AWS::EC2::VPCEndpoint").values()
        }

    assert services(managed) == {
        "s3": "Gateway",
        "secretsmanager": "Interface",
        "sqs": "Interface",
        "events": "Interface",
        "email": "Interface",
    }
    assert services(aurora) == {"s3": "Gateway"}


def test_elasticache_serverless_with_tls_url_reachable_from_the_functions_only(managed: Synth) -> None:
    cache = managed.stack.cache
    network = managed.stack.network
    assert cache is not None and network is not None
    (cache_id, resource) = next(iter(managed.of_type("AWS::ElastiCache::ServerlessCache").items()))
    assert resource["Properties"]["Engine"] == "valkey"
    assert resource["Properties"]["SecurityGroupIds"] == [group_id(managed, cache.security_group)]
    assert ingress_sources(managed, cache.security_group) == [
        (group_id(managed, network.functions_security_group), 6379)
    ]
    url = managed.resources[managed.logical_id(managed.stack.redis_url_secret)]["Properties"]["SecretString"]
    assert url["Fn::Join"][1][:2] == ["rediss://", {"Fn::GetAtt": [cache_id, "Endpoint.Address"]}]


def test_managed_database_and_cache_alarm_on_the_topic_and_show_on_the_dashboard(managed: Synth, aurora: Synth) -> None:
    topic = managed.logical_id(managed.stack.monitoring.topic)
    alarms = managed.of_type("AWS::CloudWatch::Alarm")
    by_metric = {
        (a["Properties"]["Namespace"], a["Properties"]["MetricName"]): (k, a["Properties"]) for k, a in alarms.items()
    }
    expected = {
        ("AWS/RDS", "FreeStorageSpace"): "LessThanThreshold",
        ("AWS/RDS", "DatabaseConnections"): "GreaterThanOrEqualToThreshold",
        ("AWS/RDS", "ClientConnections"): "GreaterThanOrEqualToThreshold",
        ("AWS/RDS", "CPUUtilization"): "GreaterThanOrEqualToThreshold",
        ("AWS/ElastiCache", "ThrottledCmds"): "GreaterThanOrEqualToThreshold",
        ("AWS/ElastiCache", "BytesUsedForCache"): "GreaterThanOrEqualToThreshold",
    }
    (dashboard,) = managed.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric, comparison in expected.items():
        logical_id, props = by_metric[metric]
        assert props["ComparisonOperator"] == comparison, metric
        assert props["AlarmActions"] == [ref(topic)], metric
        assert f'"Fn::GetAtt": ["{logical_id}", "Arn"]' in body, f"{metric} not on the dashboard"
    assert by_metric[("AWS/RDS", "FreeStorageSpace")][1]["Threshold"] == 2 * 1024**3
    aurora_metrics = {a["Properties"]["MetricName"] for a in aurora.of_type("AWS::CloudWatch::Alarm").values()}
    assert {"FreeLocalStorage", "DatabaseConnections", "ClientConnections", "CPUUtilization"} <= aurora_metrics


def test_aws_backup_protects_and_restore_tests_the_managed_database(managed: Synth, aurora: Synth) -> None:
    for synth, resource_type, target in (
        (managed, "RDS", managed.stack.database and managed.stack.database.instance),
        (aurora, "Aurora", aurora.stack.database and aurora.stack.database.cluster),
    ):
        target_id = synth.logical_id(target)
        selections = [
            s["Properties"]["BackupSelection"] for s in synth.of_type("AWS::Backup::BackupSelection").values()
        ]
        assert any(target_id in json.dumps(s["Resources"]) for s in selections), resource_type
        testing = {
            t["Properties"]["ProtectedResourceType"]: t["Properties"]
            for t in synth.of_type("AWS::Backup::RestoreTestingSelection").values()
        }
        assert set(testing) == {"S3", resource_type}
        assert target_id in json.dumps(testing[resource_type]["ProtectedResourceArns"])
        assert "dbsubnetgroupname" in testing[resource_type]["RestoreMetadataOverrides"]
        (plan,) = synth.of_type("AWS::Backup::BackupPlan").values()
        rules = {rule["RuleName"]: rule["Lifecycle"] for rule in plan["Properties"]["BackupPlan"]["BackupPlanRule"]}
        assert rules["daily"] == {"DeleteAfterDays": 35} and rules["weekly"]["DeleteAfterDays"] == 365


def test_no_function_may_read_the_database_credentials_directly(managed: Synth) -> None:
    database = managed.stack.database
    assert database is not None
    credentials_id = managed.logical_id(database.credentials_secret)
    roles = {f["Properties"]["Role"]["Fn::GetAtt"][0] for f in chalice_functions(managed).values()}
    for policy in managed.of_type("AWS::IAM::Policy").values():
        if roles_of_policy(policy) & roles:
            assert credentials_id not in json.dumps(policy["Properties"]["PolicyDocument"])


def test_snap_start_on_the_api_functions_by_default_and_off_by_context(synth: Synth, aurora: Synth) -> None:
    for product in (synth.stack.stepperslife, synth.stack.agistaffers):
        handlers = product.functions_by_handler()
        for handler, function in handlers.items():
            props = synth.resources[str(synth.stack.resolve(function.logical_id))]["Properties"]
            if handler == "app":
                assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"} and props["AutoPublishAlias"] == "live"
                assert props["Runtime"] == "python3.13"
            else:
                assert "SnapStart" not in props, handler
    assert not any("SnapStart" in f["Properties"] for f in chalice_functions(aurora).values())
    for api in aurora.of_type("AWS::Serverless::Api").values():
        assert "Aliaslive" not in json.dumps(api) and ".Arn}" in json.dumps(api)
