"""Every secret the code reads is granted to exactly the functions whose code reads it.

Derived from the code, not from a list: the modules each product's app can import (its import graph
under functions/ and shared/, lazy imports inside functions included) are scanned for the settings
groups they use (``settings.push``...); each group's secrets are what its ``from_env`` asks a secret
reader for. The synthesized template must then grant ``secretsmanager:GetSecretValue`` on each
secret to the roles of exactly those products' functions (each product's functions share one role
and one environment: Chalice's), put its ARN variable in exactly their environments, and the README's
table of secrets must say the same.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdk.main import REPO_ROOT
from functions.platform.config import ConfigurationError, Settings, secret_arn_variable
from tests.deploy.conftest import Synth
from tests.deploy.test_configuration import RecordingEnv

pytestmark = pytest.mark.slow

PRODUCTS = ("stepperslife", "agistaffers")
PACKAGES = ("functions", "shared")


def module_path(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, module: str) -> Iterator[str]:
    """Every module ``module`` (at ``path``) imports anywhere in its body, ours only."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # ``from package import module`` imports a module; ``from module import name`` does not.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] in PACKAGES)


def import_closure(root: str) -> set[Path]:
    seen: set[str] = set()
    files: set[Path] = set()
    pending = [root]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_path(module)
        if path is None:
            continue
        files.add(path)
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parents = [module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)]
        pending.extend([*parents, *imports_of(path, module)])
    return files


class SecretsOfGroups:
    """Each Settings group's secret settings: the names its ``from_env`` asks for together with their
    ARN variable (``_secret``'s way: the value, else the secret its ARN names)."""

    def __init__(self) -> None:
        self.by_group: dict[str, set[str]] = {}
        for name, group in typing.get_type_hints(Settings).items():
            env = RecordingEnv({})
            with contextlib.suppress(ConfigurationError):  # a required value is missing: asked all the same
                group.from_env(env, read_secret=lambda arn: "s" * 40)
            self.by_group[name] = {asked for asked in env.asked if secret_arn_variable(asked) in env.asked}


def secrets_read_by(product: str, groups: SecretsOfGroups) -> set[str]:
    accessors = set(typing.get_type_hints(Settings))
    used: set[str] = set()
    for path in import_closure(f"functions.{product}.app"):
        for match in re.finditer(r"\bsettings\.([a-z_]+)", path.read_text(encoding="utf-8")):
            name = "database" if match[1] == "database_url_for" else match[1]
            if name in accessors:
                used.add(name)
    return set().union(*(groups.by_group[name] for name in used))


@pytest.fixture(scope="module")
def read_by_product() -> dict[str, set[str]]:
    groups = SecretsOfGroups()
    return {product: secrets_read_by(product, groups) for product in PRODUCTS}


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


def test_the_derivation_sees_each_products_integrations(read_by_product: dict[str, set[str]]) -> None:
    # Not the answer itself (that is the stack's job below): that the scan reaches lazy imports.
    assert {"DATABASE_URL", "EDGE_SIGNING_SECRET", "REDIS_URL"} <= read_by_product["agistaffers"]
    assert "PORTAINER_API_KEY" in read_by_product["agistaffers"]
    assert "VAPID_PRIVATE_KEY" in read_by_product["stepperslife"]


def test_each_secret_is_granted_to_exactly_the_functions_that_read_it(
    synth: Synth, read_by_product: dict[str, set[str]]
) -> None:
    stack = synth.stack
    assert set(stack.secrets) == set().union(*read_by_product.values()), "a secret the code reads is missing"
    functions = {product: synth.functions_of(getattr(stack, product)) for product in PRODUCTS}
    all_functions = {fid: f for product in PRODUCTS for fid, f in functions[product].items()}
    for setting, secret in stack.secrets.items():
        secret_id = synth.logical_id(secret)
        readers = {product for product in PRODUCTS if setting in read_by_product[product]}
        reader_functions = {fid for product in readers for fid in functions[product]}
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


def test_the_readme_names_each_secrets_readers(read_by_product: dict[str, set[str]]) -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("Secrets and the functions that read them") :]
    table = section[section.index("\n|") + 1 : section.index("\n\n", section.index("\n|"))]
    in_readme: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        setting, _secret, readers = (cell.strip() for cell in row.strip("|").split("|"))
        in_readme[setting.strip("`")] = {reader.strip() for reader in readers.split(",")}
    expected = {
        setting: {product for product in PRODUCTS if setting in read_by_product[product]}
        for setting in set().union(*read_by_product.values())
    }
    assert in_readme == expected
