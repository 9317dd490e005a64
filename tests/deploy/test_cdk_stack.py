"""The AWS stack synthesizes (Chalice app included) and wires what the functions rely on.

Synthesis packages the real Chalice app (functions/app.py) once per session; Chalice's deployment
package cache under cdk.out/pytest/ makes reruns with unchanged code skip its pip download.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdk.main import REPO_ROOT, build_app, cdk_json_context, set_env_defaults

pytestmark = pytest.mark.slow

SECRET_ENV = {
    "DATABASE_URL_SECRET_ARN": "database_url_secret",
    "EDGE_SIGNING_SECRET_ARN": "edge_signing_secret",
    "REDIS_URL_SECRET_ARN": "redis_url_secret",
}
# Names of plaintext settings that must never appear in the Lambda environment.
FORBIDDEN_ENV = {"DATABASE_URL", "EDGE_SIGNING_SECRET", "REDIS_URL"}


class Synth:
    """The synthesized stack, its template as JSON and logical IDs of the constructs under test."""

    def __init__(self) -> None:
        from aws_cdk.assertions import Template

        outdir = os.environ.get("AGISTACK_CDK_TEST_OUTDIR") or str(REPO_ROOT / "cdk.out" / "pytest")
        self.outdir = outdir
        self.environ_before = dict(os.environ)
        self.app, self.stack = build_app(outdir=outdir)
        self.template = Template.from_stack(self.stack)
        self.json: dict[str, Any] = dict(self.template.to_json())
        self.resources: dict[str, dict[str, Any]] = self.json["Resources"]

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}


@pytest.fixture(scope="session")
def synth() -> Iterator[Synth]:
    set_env_defaults()
    yield Synth()


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
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Transitions"] == [{"StorageClass": "GLACIER", "TransitionInDays": 30}]
    assert rule["ExpirationInDays"] == 365


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


@pytest.mark.parametrize(("name", "visibility"), [("agistack-domain-events", 180), ("agistack-image-uploads", 360)])
def test_named_queue_has_encrypted_dlq_after_five_receives(synth: Synth, name: str, visibility: int) -> None:
    queues = synth.of_type("AWS::SQS::Queue")
    by_name = {q["Properties"].get("QueueName"): (k, q["Properties"]) for k, q in queues.items()}
    assert len(queues) == 4
    _, props = by_name[name]
    assert props["VisibilityTimeout"] == visibility
    assert props["SqsManagedSseEnabled"] is True
    redrive = props["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == 5
    dlq_id, dlq_props = by_name[f"{name}-dlq"]
    assert redrive["deadLetterTargetArn"] == get_att(dlq_id)
    assert dlq_props["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq_props["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in dlq_props


def test_uploads_prefix_notifies_the_image_queue(synth: Synth) -> None:
    (notification,) = synth.of_type("Custom::S3BucketNotifications").values()
    props = notification["Properties"]
    assert props["BucketName"] == ref(synth.logical_id(synth.stack.media_bucket))
    assert props["NotificationConfiguration"]["QueueConfigurations"] == [
        {
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}},
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
    assert synth.resources[bus_id]["Properties"]["Name"] == "agistack"
    (rule,) = synth.of_type("AWS::Events::Rule").values()
    props = rule["Properties"]
    assert props["EventBusName"] == ref(bus_id)
    assert props["EventPattern"] == {"source": [{"prefix": "agistack."}]}
    assert [t["Arn"] for t in props["Targets"]] == [get_att(synth.logical_id(synth.stack.domain_events_queue))]


# --- the Chalice functions -------------------------------------------------------------------------


def chalice_functions(synth: Synth) -> dict[str, dict[str, Any]]:
    functions = synth.of_type("AWS::Serverless::Function")
    assert functions, "the Chalice app produced no Lambda function"
    return functions


def test_functions_get_resource_names_and_secret_arns_only(synth: Synth) -> None:
    stack = synth.stack
    expected = {
        "MEDIA_BUCKET": ref(synth.logical_id(stack.media_bucket)),
        "BACKUP_BUCKET": ref(synth.logical_id(stack.backup_bucket)),
        "DOMAIN_EVENTS_QUEUE": get_att(synth.logical_id(stack.domain_events_queue), "QueueName"),
        "IMAGE_UPLOADS_QUEUE": get_att(synth.logical_id(stack.image_uploads_queue), "QueueName"),
        "EVENT_BUS_NAME": ref(synth.logical_id(stack.event_bus)),
    }
    expected.update({env: ref(synth.logical_id(getattr(stack, attr))) for env, attr in SECRET_ENV.items()})
    for name, function in chalice_functions(synth).items():
        props = function["Properties"]
        variables = props["Environment"]["Variables"]
        for key, value in expected.items():
            assert variables.get(key) == value, f"{name}: {key}={variables.get(key)!r}"
        assert not FORBIDDEN_ENV & set(variables), f"{name} carries a plaintext secret setting"
        assert variables["AGISTACK_STAGE"] == cdk_json_context()["agistack:stage"]
        assert props["Runtime"].startswith("python3.")
        assert props["Role"] == get_att("DefaultRole")


def test_every_handler_string_resolves_in_the_package(synth: Synth) -> None:
    """Lambda imports "module.function" from the package root: the staged app.py shim for handlers
    declared on the app, the vendored package path for blueprint handlers."""
    [shim] = list((Path(synth.outdir) / "chalice-src").glob("*/project/app.py"))
    spec = importlib.util.spec_from_file_location("staged_app_shim", shim)
    assert spec is not None and spec.loader is not None
    staged = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(staged)
    handlers = sorted(function["Properties"]["Handler"] for function in chalice_functions(synth).values())
    assert "app.app" in handlers
    assert any(handler.startswith("functions.stepperslife.routes.") for handler in handlers), handlers
    for handler in handlers:
        module_name, _, attribute = handler.rpartition(".")
        module = staged if module_name == "app" else importlib.import_module(module_name)
        assert callable(getattr(module, attribute, None)), f"{handler} does not resolve"


def test_no_secret_value_is_in_the_template(synth: Synth) -> None:
    secrets = synth.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == 3
    for name, secret in secrets.items():
        props = secret["Properties"]
        assert "SecretString" not in props, name
        assert "GenerateSecretString" in props, name
        assert secret["DeletionPolicy"] == "Retain", name
    edge = secrets[synth.logical_id(synth.stack.edge_signing_secret)]["Properties"]
    # functions/config.py refuses an edge signing secret shorter than 32 characters.
    assert edge["GenerateSecretString"]["PasswordLength"] >= 32
    # The synthesizing process's own environment did not leak into the template (Chalice copies the
    # stage's environment variables into os.environ while it loads the app).
    text = json.dumps(synth.json)
    for key in ("DATABASE_URL", "EDGE_SIGNING_SECRET", "REDIS_URL"):
        value = os.environ.get(key)
        if value:
            assert value not in text, f"the value of ${key} is in the template"


def test_synthesis_restores_the_process_environment(synth: Synth) -> None:
    # pytest itself rewrites PYTEST_CURRENT_TEST for every test.
    leaked = {k for k in os.environ if k not in synth.environ_before} - {"PYTEST_CURRENT_TEST"}
    changed = {k for k, v in synth.environ_before.items() if os.environ.get(k) != v and k != "PYTEST_CURRENT_TEST"}
    assert not leaked and not changed, f"leaked {leaked}, changed {changed}"


def test_sqs_handlers_report_partial_batch_failures(synth: Synth) -> None:
    sqs_events = [
        (name, event)
        for name, function in chalice_functions(synth).items()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "SQS"
    ]
    assert sqs_events, "no @app.on_sqs_message handler in the Chalice app"
    queue_names = {"agistack-domain-events", "agistack-image-uploads"}
    for name, event in sqs_events:
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert any(q in json.dumps(event["Properties"]["Queue"]) for q in queue_names), name


def test_role_may_use_buckets_queues_bus_and_secrets(synth: Synth) -> None:
    stack = synth.stack
    policies = [
        (logical_id, p)
        for logical_id, p in synth.of_type("AWS::IAM::Policy").items()
        if mentions(p["Properties"]["Roles"], "DefaultRole")
    ]
    assert len(policies) == 1
    policy_id, policy = policies[0]
    grants: list[tuple[str, Any]] = []
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants.extend((action, resource) for action in actions for resource in resources)

    def allowed(action: str, construct: Any) -> bool:
        logical_id = synth.logical_id(construct)
        return any(a == action and mentions(r, logical_id) for a, r in grants)

    assert allowed("s3:GetObject*", stack.media_bucket)
    assert allowed("s3:PutObject", stack.media_bucket)
    assert allowed("s3:DeleteObject*", stack.media_bucket)
    assert allowed("s3:PutObject", stack.backup_bucket)
    assert not allowed("s3:DeleteObject*", stack.backup_bucket)
    assert allowed("sqs:SendMessage", stack.domain_events_queue)
    assert allowed("sqs:SendMessage", stack.image_uploads_queue)
    assert allowed("events:PutEvents", stack.event_bus)
    for attr in SECRET_ENV.values():
        assert allowed("secretsmanager:GetSecretValue", getattr(stack, attr)), attr
    assert not any(r == "*" for _, r in grants), "a grant on every resource"
    # No function may start before its policy exists. (The queues it consumes already precede it:
    # its environment refers to them, which test_functions_get_resource_names... checks.)
    for name, function in chalice_functions(synth).items():
        assert policy_id in function.get("DependsOn", []), name


def test_outputs_name_the_api_buckets_and_queues(synth: Synth) -> None:
    outputs = synth.json["Outputs"]
    assert "RestAPI" in json.dumps(outputs["ApiUrl"]["Value"])
    assert outputs["MediaBucketName"]["Value"] == ref(synth.logical_id(synth.stack.media_bucket))
    assert outputs["BackupBucketName"]["Value"] == ref(synth.logical_id(synth.stack.backup_bucket))
    assert outputs["DomainEventsQueueUrl"]["Value"] == ref(synth.logical_id(synth.stack.domain_events_queue))
    assert outputs["ImageUploadsQueueUrl"]["Value"] == ref(synth.logical_id(synth.stack.image_uploads_queue))


def test_deployment_package_holds_functions_and_shared_at_its_root(synth: Synth) -> None:
    import zipfile

    (function,) = [f for f in chalice_functions(synth).values() if f["Properties"]["Handler"] == "app.app"]
    key = function["Properties"]["CodeUri"]["Key"]
    package = Path(synth.app.outdir) / f"asset.{key}"
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
    assert {"app.py", "functions/stepperslife/app.py", "functions/__init__.py", "shared/__init__.py"} <= names
    # The edge core runs on Workers only: it is not shipped to Lambda.
    assert not any(name.startswith(("edge_workers/", "shared/edge/")) for name in names)
    assert not any("__pycache__" in n for n in names)
    assert not any(n.startswith("vendor/") for n in names)


def test_image_handler_gets_a_full_vcpu_and_stale_uploads_expire(synth: Synth) -> None:
    functions = chalice_functions(synth)
    [image] = [f for f in functions.values() if f["Properties"]["Handler"].endswith(".image_uploaded")]
    assert (image["Properties"]["MemorySize"], image["Properties"]["Timeout"]) == (1769, 60)
    others = [f for f in functions.values() if f is not image]
    assert others and all(f["Properties"]["MemorySize"] == 512 for f in others)
    [media] = [b for b in synth.of_type("AWS::S3::Bucket").values() if "CorsConfiguration" in b["Properties"]]
    rules = {rule["Id"]: rule for rule in media["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-stale-uploads"]["Prefix"] == "uploads/"
    assert rules["expire-stale-uploads"]["ExpirationInDays"] == 7
