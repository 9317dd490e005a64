"""One product's Chalice app as CDK resources: staged, packaged, wired to the shared resources.

Each product (functions/<product>/app.py) becomes its own Lambda functions, role and REST API inside
the one stack. What differs per product (its environment, its grants, its function sizes) is stated
in cdk/<product>.py; this module holds the mechanics they share:

- staging and packaging in a sandbox (Chalice's packager changes the process: cwd, sys.path,
  sys.modules["app"], os.environ), one staging directory per product;
- every function on the Lambda runtime cdk/dependencies.py targets (Chalice would name the runtime
  after the interpreter that packages), with the dependencies layer (its package holds our code only);
- ReportBatchItemFailures on every SQS event source (Chalice cannot set it), and a dependency on
  the queue it consumes (Chalice names the queue in a plain ARN string, which orders nothing);
- grants that every function depends on (the policy is a separate resource the SAM functions do not
  reference, so without DependsOn a schedule could run before its permissions exist);
- secrets per function: each function gets the ARN variables and read grants of exactly the secrets
  its product's ``lambda_functions`` module declares for it. Functions that read the same secrets
  share a role (Chalice's DefaultRole for the API's set, copies of it for the others);
- the API's URL as a stack output (the gateway worker's origin for the product).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from chalice.cdk import Chalice

from cdk.dependencies import LAMBDA_RUNTIME
from cdk.staging import stage_chalice_project
from functions.platform.config import secret_arn_variable, secrets_of

if TYPE_CHECKING:
    from cdk.network import Network

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
# Lambda timeout of a product's functions unless its module sets one per function; each queue's
# visibility timeout (functions.platform.topology) is at least 6x its consumer's timeout.
HANDLER_TIMEOUT_S = 30
# Settings a deploy may give a product through cdk.json (context "agistack:settings" → product → NAME).
SETTINGS_CONTEXT = "agistack:settings"
# The handler name of the function that serves a Chalice app's routes (its Handler is "app.app").
API_FUNCTION = "app"


class ProductApi:
    """A product's Chalice construct and what the stack adds to it."""

    def __init__(
        self,
        stack: cdk.Stack,
        construct_id: str,
        *,
        product: str,
        repo_root: Path,
        app_stage: str,
        environment: Mapping[str, str],
        secret_groups_by_function: Mapping[str, tuple[str, ...]],
        secrets: Mapping[str, secretsmanager.ISecret],
        stage_settings: Mapping[str, Any],
        queues: Mapping[str, sqs.Queue],
        dependencies_layer: lambda_.ILayerVersion,
        preserve_logical_ids: bool,
    ) -> None:
        """``environment`` (every function's) may hold CDK tokens (resource names); the static part
        (stage, log level) is written to the staged .chalice/config.json. ``secret_groups_by_function``:
        the settings groups each function reads secrets of, by handler name (every function must be
        named); ``secrets``: the stack's secrets by the setting each holds.

        Two Chalice constructs in one stack cannot both keep the SAM template's logical IDs
        (both have a DefaultRole, a RestAPI...): only the first product keeps them.
        """
        stage = cdk.Stage.of(stack)
        if stage is None:
            raise RuntimeError("a product must be created inside a cdk.App or cdk.Stage")
        self.product = product
        self.environment = dict(environment)
        # Under the cloud assembly dir: generated, gitignored, and per-assembly (tests use their own).
        work = Path(stage.outdir) / "chalice-src" / stack.artifact_id / product
        # The construct names the Chalice stage after its scope's path; config.json must use it.
        source_dir = stage_chalice_project(
            repo_root,
            work / "project",
            product=product,
            stage=stack.to_string(),
            environment={"AGISTACK_STAGE": app_stage, "LOG_LEVEL": "INFO"},
            stage_settings=stage_settings,
        )
        with _chalice_packaging_sandbox(work):
            self.chalice = Chalice(
                stack,
                construct_id,
                source_dir=str(source_dir),
                # CDK tokens (resolved at deploy time) can only enter through stage_config.
                stage_config={"environment_variables": self.environment},
                preserve_logical_ids=preserve_logical_ids,
            )
        sam_path = _sam_template_path(work)
        self._sam_template: dict[str, Any] = json.loads(sam_path.read_text(encoding="utf-8"))
        # The deployment package Chalice built (our code only), for tests/deploy to inspect.
        self.package_zip = sam_path.parent / "deployment.zip"
        _wire_sqs_event_sources(self.chalice, self._sam_template, queues)
        self._layers: dict[str, list[lambda_.ILayerVersion]] = {}
        for function in self.functions():
            function.add_property_override("Runtime", LAMBDA_RUNTIME)
            self.add_layers(function, dependencies_layer)
        self.secrets_by_function = self._secrets_by_function(secret_groups_by_function)
        # Each role and the functions it runs: one role per distinct set of secrets.
        self._roles: list[tuple[iam.IRole, list[cdk.CfnResource]]] = []
        self._give_secrets(secrets)

    def _secrets_by_function(self, groups_by_function: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        handlers = set(self.sam_ids_by_handler())
        if handlers != set(groups_by_function):
            raise ValueError(
                f"{self.product}: lambda_functions must name exactly the app's functions: "
                f"undeclared {sorted(handlers - set(groups_by_function))}, "
                f"unknown {sorted(set(groups_by_function) - handlers)}"
            )
        return {handler: secrets_of(groups_by_function[handler]) for handler in sorted(handlers)}

    def _give_secrets(self, secrets: Mapping[str, secretsmanager.ISecret]) -> None:
        """ARN variables on, and read grants to, exactly the functions that read each secret."""
        functions = self.functions_by_handler()
        by_set: dict[frozenset[str], list[cdk.CfnResource]] = {}
        for handler, names in self.secrets_by_function.items():
            for name in names:
                functions[handler].add_property_override(
                    f"Environment.Variables.{secret_arn_variable(name)}", secrets[name].secret_arn
                )
            by_set.setdefault(frozenset(names), []).append(functions[handler])
        # The API's set keeps Chalice's role (and the SAM template's logical ID); the others get copies.
        api_set = frozenset(self.secrets_by_function.get(API_FUNCTION, ()))
        ordered = sorted(by_set.items(), key=lambda item: (item[0] != api_set, sorted(item[0])))
        for index, (read, readers) in enumerate(ordered):
            role = self.chalice.get_role("DefaultRole") if index == 0 else self._copy_default_role(index, readers)
            self._roles.append((role, readers))
            for name in sorted(read):
                secrets[name].grant_read(role).apply_before(*readers)

    def _copy_default_role(self, index: int, functions: list[cdk.CfnResource]) -> iam.IRole:
        """Chalice's DefaultRole as it wrote it (logs, its SQS event sources), for these functions."""
        copy = cdk.CfnResource(
            self.chalice,
            f"SecretsRole{index}",
            type="AWS::IAM::Role",
            properties=self.sam_resource("DefaultRole")["Properties"],
        )
        for function in functions:
            function.add_property_override("Role", copy.get_att("Arn"))
        return iam.Role.from_role_arn(self.chalice, f"SecretsRole{index}Grants", copy.get_att("Arn").to_string())

    def add_layers(self, function: cdk.CfnResource, *layers: lambda_.ILayerVersion) -> None:
        """Append layers to one function's (the property is one list: set it whole each time)."""
        attached = self._layers.setdefault(function.node.path, [])
        attached.extend(layers)
        function.add_property_override("Layers", [layer.layer_version_arn for layer in attached])

    def layers_of(self, function: cdk.CfnResource) -> list[lambda_.ILayerVersion]:
        return list(self._layers.get(function.node.path, []))

    def functions(self) -> list[cdk.CfnResource]:
        """The AWS::Serverless::Function resources Chalice generated (one per route set/handler)."""
        return [
            child
            for child in self.chalice.sam_template.node.children
            if isinstance(child, cdk.CfnResource) and child.cfn_resource_type == SERVERLESS_FUNCTION
        ]

    def functions_by_handler(self) -> dict[str, cdk.CfnResource]:
        """Each function by the name of the Python handler it runs (``backup_daily``...)."""
        return {handler: self.chalice.get_resource(sam_id) for handler, sam_id in self.sam_ids_by_handler().items()}

    def sam_ids_by_handler(self) -> dict[str, str]:
        """Each function's logical ID in Chalice's SAM template (before any renaming), by handler."""
        return {
            str(resource["Properties"]["Handler"]).rpartition(".")[2]: logical_id
            for logical_id, resource in self._sam_template.get("Resources", {}).items()
            if resource.get("Type") == SERVERLESS_FUNCTION
        }

    def sam_resource(self, sam_id: str) -> dict[str, Any]:
        """A resource as Chalice's SAM template declares it (logical IDs inside are the SAM ones)."""
        resource: dict[str, Any] = self._sam_template["Resources"][sam_id]
        return resource

    def rest_api_name_and_stage(self) -> tuple[str, str]:
        """The REST API's name (its OpenAPI title: API Gateway's ``ApiName`` metric dimension) and stage."""
        properties = self._sam_template["Resources"]["RestAPI"]["Properties"]
        return str(properties["DefinitionBody"]["info"]["title"]), str(properties["StageName"])

    def grant(self, *grants: Callable[[iam.IGrantable], iam.Grant]) -> None:
        """Call each grant method (``bucket.grant_read``...) with every role of the app's functions;
        before any of its functions runs."""
        for role, functions in self._roles:
            for grant_to in grants:
                grant_to(role).apply_before(*functions)

    def join_vpc(self, network: Network) -> None:
        """Run every function in the VPC's private subnets (the managed database and cache are there;
        the NAT takes their outbound HTTP), with the network-interface permissions Lambda needs to
        create them: granted before the functions, whose creation checks for them."""
        subnet_ids = network.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids
        for function in self.functions():
            function.add_property_override(
                "VpcConfig",
                {"SecurityGroupIds": [network.functions_security_group.security_group_id], "SubnetIds": subnet_ids},
            )
        # What the AWS managed policy AWSLambdaVPCAccessExecutionRole allows (the role is Chalice's
        # and imported here, so the statement goes in as a grant rather than a managed policy).
        self.grant(
            lambda role: iam.Grant.add_to_principal(
                grantee=role,
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resource_arns=["*"],
            )
        )

    def output_url(self, output_id: str) -> None:
        rest_api = self.chalice.sam_template.get_resource("RestAPI")
        cdk.CfnOutput(
            cdk.Stack.of(self.chalice),
            output_id,
            description=f"Base URL of the {self.product} REST API (the gateway worker's origin for it)",
            value=cdk.Fn.sub("https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/", {"Api": rest_api.ref}),
        )


def context_settings(stack: cdk.Stack, product: str, *, reserved: set[str]) -> dict[str, str]:
    """The plain settings cdk.json gives this product; an empty value leaves the setting unset.

    ``reserved``: names the stack sets itself (resource names, secret ARNs) or that hold secret
    values, which must never be written into cdk.json or the template.
    """
    by_product = stack.node.try_get_context(SETTINGS_CONTEXT) or {}
    values = by_product.get(product, {}) if isinstance(by_product, dict) else None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ValueError(f"context {SETTINGS_CONTEXT}.{product} must map setting names to strings")
    refused = sorted(name for name in values if name in reserved or name.endswith("_ARN"))
    if refused:
        raise ValueError(f"context {SETTINGS_CONTEXT}.{product} may not set {', '.join(refused)}")
    return {name: value for name, value in values.items() if value}


def _sam_template_path(work: Path) -> Path:
    """The SAM template the Chalice construct wrote under chalice.out/ (jsii cannot read it back)."""
    templates = sorted((work / "chalice.out").glob("*/sam.json"))
    if len(templates) != 1:
        raise RuntimeError(f"expected one Chalice SAM template under {work / 'chalice.out'}: {templates}")
    return templates[0]


def _wire_sqs_event_sources(chalice: Chalice, sam: Mapping[str, Any], queues: Mapping[str, sqs.Queue]) -> None:
    """Turn on ReportBatchItemFailures for every SQS event source Chalice generated, and make its
    function depend on the queue it consumes (``queues``: by name).

    The handlers return Lambda's {"batchItemFailures": [...]} (functions/platform/queues.py). Without
    this setting Lambda ignores that answer and deletes the whole batch, failed messages included.
    Chalice 1.34 cannot set it, and the event definitions cannot be read back through jsii, so
    they are read from the SAM template (``sam``).
    """
    for logical_id, resource in sam.get("Resources", {}).items():
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        function = chalice.get_resource(logical_id)
        for event_name, event in resource.get("Properties", {}).get("Events", {}).items():
            if event.get("Type") != "SQS":
                continue
            function.add_property_override(
                f"Events.{event_name}.Properties.FunctionResponseTypes", ["ReportBatchItemFailures"]
            )
            # {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:<name>"}
            arn = json.dumps(event.get("Properties", {}).get("Queue"))
            consumed = [queue for name, queue in queues.items() if arn.endswith(f':{name}"}}')]
            if len(consumed) != 1:
                raise RuntimeError(f"{logical_id} consumes a queue the stack does not declare: {arn}")
            queue_resource = consumed[0].node.default_child
            assert isinstance(queue_resource, cdk.CfnResource)
            function.add_resource_dependency(queue_resource)


@contextlib.contextmanager
def _chalice_packaging_sandbox(workdir: Path) -> Iterator[None]:
    """Contain the side effects of Chalice's packager to this construct.

    It writes `chalice.out/` under the current directory, imports the project's `app.py` as the
    top-level module `app` (cached in sys.modules: a second package would silently reuse it), extends
    sys.path with the project and its vendor dir, and copies the stage's environment variables (CDK
    token strings here) into os.environ. All of that is undone on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # One uuid-named package dir per synth; the previous ones are no longer needed.
    shutil.rmtree(workdir / "chalice.out", ignore_errors=True)
    saved_environ = dict(os.environ)
    saved_path = list(sys.path)
    saved_app = sys.modules.pop("app", None)
    try:
        with contextlib.chdir(workdir):
            yield
    finally:
        for key in set(os.environ) - set(saved_environ):
            del os.environ[key]
        os.environ.update(saved_environ)
        sys.path[:] = saved_path
        sys.modules.pop("app", None)
        if saved_app is not None:
            sys.modules["app"] = saved_app
