"""Every secret the code reads is granted to exactly the Lambda functions whose code path reads it.

Derived from the code, not from a list: each function's code path (tests/deploy/code_paths.py: its
handler, or every route for the API, and the container members they reach) gives the settings
groups it reads; each group's secrets are what its ``from_env`` asks a secret reader for. The
products' declarations (functions/<product>/lambda_functions.py, which CDK builds the grants from)
must say the same; the synthesized template must then grant ``secretsmanager:GetSecretValue`` on
each secret to the roles of exactly those functions (no role of another function, nor any other
role), put its ARN variable in exactly their environments, and the README's table must agree.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import typing
from collections.abc import Mapping
from typing import Any

import pytest

from cdk.main import REPO_ROOT
from functions.agistaffers import lambda_functions as agistaffers_functions
from functions.platform.config import SECRETS_OF_GROUP, ConfigurationError, Settings, secret_arn_variable, secrets_of
from functions.stepperslife import lambda_functions as stepperslife_functions
from tests.deploy.code_paths import groups_by_function
from tests.deploy.conftest import Synth
from tests.deploy.test_configuration import RecordingEnv

pytestmark = pytest.mark.slow

PRODUCTS = ("stepperslife", "agistaffers")
DECLARED: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "stepperslife": stepperslife_functions.SECRET_GROUPS_BY_FUNCTION,
    "agistaffers": agistaffers_functions.SECRET_GROUPS_BY_FUNCTION,
}


def secrets_of_groups() -> dict[str, set[str]]:
    """Each Settings group's secret settings: the names its ``from_env`` asks for together with their
    ARN variable (``_secret``'s way: the value, else the secret its ARN names)."""
    by_group: dict[str, set[str]] = {}
    for name, hint in typing.get_type_hints(Settings).items():
        group = typing.get_args(hint)[0] if typing.get_args(hint) else hint  # EdgeSettings | None
        env = RecordingEnv({})
        with contextlib.suppress(ConfigurationError):  # a required value is missing: asked all the same
            group.from_env(env, read_secret=lambda arn: "s" * 40)
        by_group[name] = {asked for asked in env.asked if secret_arn_variable(asked) in env.asked}
    return by_group


def code_paths_of(product: str) -> dict[str, set[str]]:
    """Each function of the product's app → the settings groups its code path reads."""
    app = importlib.import_module(f"functions.{product}.app").app
    router = importlib.import_module(f"functions.{product}.http").route
    return groups_by_function(app, [router])


@pytest.fixture(scope="module")
def read_by_function() -> dict[str, dict[str, set[str]]]:
    """product → function (handler name) → the secret settings its code path reads."""
    by_group = secrets_of_groups()
    return {
        product: {
            function: set().union(*(by_group.get(group, set()) for group in groups))
            for function, groups in code_paths_of(product).items()
        }
        for product in PRODUCTS
    }


def roles_of_policy(policy: dict[str, Any]) -> set[str]:
    """The logical IDs of the roles an IAM policy attaches to (by Ref, or by name cut from the ARN)."""
    text = json.dumps(policy["Properties"]["Roles"])
    return {ref or att for ref, att in re.findall(r'"Ref": "(\w+)"|"Fn::GetAtt": \["(\w+)"', text)}


def role_ids_reading(synth: Synth, secret_id: str) -> set[str]:
    """The roles any IAM policy in the template lets read the secret (logical IDs)."""
    roles: set[str] = set()
    for policy in synth.of_type("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if "secretsmanager:GetSecretValue" in actions and f'{{"Ref": "{secret_id}"}}' in json.dumps(
                statement["Resource"]
            ):
                roles.update(roles_of_policy(policy))
    return roles


def role_of(function: dict[str, Any]) -> str:
    return str(function["Properties"]["Role"]["Fn::GetAtt"][0])


def test_each_groups_secrets_are_what_its_settings_read() -> None:
    assert {group: set(names) for group, names in SECRETS_OF_GROUP.items()} == {
        group: names for group, names in secrets_of_groups().items() if names
    }


def test_the_code_path_scan_follows_lazy_members_and_helpers(read_by_function: dict[str, dict[str, set[str]]]) -> None:
    # Not the answer itself (that is the declarations' and the stack's job below): that the scan
    # reaches what a handler builds through other members (uptime → dashboards → sites → provisioning)
    # and through helpers given the settings (redis_client), and tells the API from the handlers.
    assert "PORTAINER_API_KEY" in read_by_function["agistaffers"]["check_uptime"]
    assert read_by_function["agistaffers"]["maintain_metric_partitions"] == {"DATABASE_URL"}
    assert "REDIS_URL" in read_by_function["stepperslife"]["reconcile_seat_counters"]
    assert "FLOWISE_API_KEY" in read_by_function["stepperslife"]["process_domain_events"]
    assert "FLOWISE_API_KEY" not in read_by_function["stepperslife"]["app"]
    assert {name for name, read in read_by_function["stepperslife"].items() if "EDGE_SIGNING_SECRET" in read} == {"app"}


def test_each_function_is_declared_with_exactly_the_secrets_its_code_reads(
    read_by_function: dict[str, dict[str, set[str]]],
) -> None:
    for product in PRODUCTS:
        declared = {function: set(secrets_of(groups)) for function, groups in DECLARED[product].items()}
        assert declared == read_by_function[product], f"{product}: lambda_functions.py differs from the code"


def test_each_secret_is_granted_to_exactly_the_functions_that_read_it(
    synth: Synth, read_by_function: dict[str, dict[str, set[str]]]
) -> None:
    stack = synth.stack
    every_read = {name for product in PRODUCTS for read in read_by_function[product].values() for name in read}
    assert set(stack.secrets) == every_read, "a secret the code reads is missing, or one nobody reads exists"
    # Each function's logical ID → the secrets its code reads.
    reads: dict[str, set[str]] = {}
    for product in PRODUCTS:
        api = getattr(stack, product)
        for handler, function in api.functions_by_handler().items():
            reads[str(stack.resolve(function.logical_id))] = read_by_function[product][handler]
    all_functions = {fid: f for product in PRODUCTS for fid, f in synth.functions_of(getattr(stack, product)).items()}
    assert set(all_functions) == set(reads)
    for setting, secret in stack.secrets.items():
        secret_id = synth.logical_id(secret)
        reader_functions = {fid for fid, read in reads.items() if setting in read}
        granted_roles = role_ids_reading(synth, secret_id)
        granted_functions = {fid for fid, f in all_functions.items() if role_of(f) in granted_roles}
        assert granted_functions == reader_functions, f"{setting}: granted to the wrong functions"
        with_arn = {
            fid
            for fid, f in all_functions.items()
            if secret_arn_variable(setting) in f["Properties"]["Environment"]["Variables"]
        }
        assert with_arn == reader_functions, f"{setting}: its ARN reaches the wrong functions"
        # Nothing else in the stack (custom resources, the CDK's own functions) may read it.
        assert granted_roles == {role_of(all_functions[fid]) for fid in reader_functions}, setting


def test_a_function_started_with_only_its_environment_has_what_its_code_reads(
    read_by_function: dict[str, dict[str, set[str]]],
) -> None:
    """Settings built as Lambda builds them, from one function's ARN variables only: each secret read
    is one the function is given, and the groups its code path uses are configured."""
    for product in PRODUCTS:
        for function, groups in DECLARED[product].items():
            env = {secret_arn_variable(name): f"arn:{name}" for name in secrets_of(groups)}
            asked: list[str] = []

            def read_secret(arn: str, asked: list[str] = asked) -> str:
                asked.append(arn)
                return "s" * 40

            settings = Settings.from_env(env, read_secret=read_secret)
            assert {arn.removeprefix("arn:") for arn in asked} == read_by_function[product][function]
            assert (settings.edge is not None) == ("edge" in groups), f"{product} {function}"


def test_the_readme_names_each_functions_secrets(read_by_function: dict[str, dict[str, set[str]]]) -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("Secrets and the functions that read them") :]
    table = section[section.index("\n|") + 1 : section.index("\n\n", section.index("\n|"))]
    in_readme: dict[tuple[str, str], set[str]] = {}
    for row in table.splitlines()[2:]:
        product, functions, secrets = (cell.strip() for cell in row.strip("|").split("|"))
        for function in re.findall(r"`([a-z_]+)`", functions):
            in_readme[(product, function)] = set(re.findall(r"`([A-Z_]+)`", secrets))
    expected = {(product, f): read for product in PRODUCTS for f, read in read_by_function[product].items()}
    assert in_readme == expected
