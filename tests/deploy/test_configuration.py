"""Settings, CDK and README agree: every variable the functions read is documented and deployed.

The variables come from the code itself: ``Settings.from_env`` runs on an environment that records
each name it is asked for (a secret's ARN variable too), so a new setting cannot slip past this test
by not being listed somewhere. What CDK sets comes from the synthesized template, plus the plain
settings cdk.json may give each product (an empty value there leaves the setting unset).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cdk.main import REPO_ROOT, cdk_json_context
from functions.platform.config import Settings, secret_arn_variable
from tests.deploy.conftest import Synth

pytestmark = pytest.mark.slow

PRODUCTS = ("stepperslife", "agistaffers")
# Set by CDK for the people reading a function's configuration; the README says no code reads it.
FOR_OPERATORS = {"AGISTACK_STAGE"}


class RecordingEnv(Mapping[str, str]):
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class ReadByCode:
    """The variables ``Settings.from_env`` reads, secret or plain, as Lambda would run it."""

    def __init__(self) -> None:
        # Only the required secrets are present, as ARNs: every other variable is asked for and
        # missing, so each secret setting asks for its ARN variable as well.
        env = RecordingEnv({"DATABASE_URL_SECRET_ARN": "arn:db", "EDGE_SIGNING_SECRET_ARN": "arn:edge"})
        Settings.from_env(env, read_secret=lambda arn: "s" * 40)
        self.secrets = {name for name in env.asked if secret_arn_variable(name) in env.asked}
        self.arn_variables = {secret_arn_variable(name) for name in self.secrets}
        self.settings = env.asked - self.arn_variables
        # Read outside the settings (the app's log level, before any setting is built).
        source = "\n".join(path.read_text() for path in (REPO_ROOT / "functions").rglob("*.py"))
        self.elsewhere = set(re.findall(r"os\.environ\.get\(\"([A-Z0-9_]+)\"", source))


class Readme:
    """The README's table of the functions' variables: names → default column."""

    def __init__(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        section = text[text.index("## Configuration") :]
        table = section[section.index("Functions (") :]
        table = table[table.index("\n|") + 1 : table.index("\n\n", table.index("\n|"))]
        self.defaults: dict[str, str] = {}
        for row in table.splitlines()[2:]:
            names, _meaning, default = (cell.strip() for cell in row.strip("|").rsplit("|", 2))
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", names):
                self.defaults[name] = default

    def arn_variables(self) -> set[str]:
        return {arn for default in self.defaults.values() for arn in re.findall(r"`([A-Z0-9_]+_ARN)`", default)}


class Deployed:
    """What CDK gives each product's functions: variables in the template, and cdk.json's settings."""

    def __init__(self, synth: Synth) -> None:
        self.variables: dict[str, set[str]] = {}
        for product in PRODUCTS:
            functions = synth.functions_of(getattr(synth.stack, product)).values()
            names = {name for f in functions for name in f["Properties"]["Environment"]["Variables"]}
            self.variables[product] = names
        settings: dict[str, Any] = cdk_json_context()["agistack:settings"]
        self.context = {product: set(settings.get(product, {})) for product in PRODUCTS}

    def sets(self, product: str, name: str) -> bool:
        names = self.variables[product] | self.context[product]
        return name in names or secret_arn_variable(name) in names


@pytest.fixture(scope="module")
def read() -> ReadByCode:
    return ReadByCode()


@pytest.fixture(scope="module")
def readme() -> Readme:
    return Readme(REPO_ROOT / "README.md")


@pytest.fixture(scope="module")
def deployed(synth: Synth) -> Deployed:
    return Deployed(synth)


def test_the_recorder_sees_what_the_settings_read(read: ReadByCode) -> None:
    assert {"DATABASE_URL", "EDGE_SIGNING_SECRET", "VAPID_PRIVATE_KEY"} <= read.secrets
    assert {"SITE_URL", "PUSH_ALLOW_HOSTS", "CLOUDFLARE_API_BASE"} <= read.settings
    assert "EDGE_SIGNING_SECRET_ARN" in read.arn_variables and "LOG_LEVEL" in read.elsewhere


def test_every_variable_read_is_in_the_readme(read: ReadByCode, readme: Readme) -> None:
    undocumented = (read.settings | read.elsewhere) - set(readme.defaults)
    assert not undocumented, f"read by the functions, missing from README's configuration table: {undocumented}"
    assert all(readme.defaults[name] for name in read.settings), "a setting without a default in the README"


def test_every_variable_is_deployed_or_optional(read: ReadByCode, readme: Readme, deployed: Deployed) -> None:
    """Required settings come from CDK for every product; SteppersLife can get every deployable one."""
    for product in PRODUCTS:
        for name in read.settings:
            if not deployed.sets(product, name):
                default = readme.defaults[name]
                assert not default.startswith("required"), f"{product}: {name} is required but CDK does not set it"
    said_deployed = {name for name in read.settings if "CDK" in readme.defaults[name]}
    assert all(any(deployed.sets(p, name) for p in PRODUCTS) for name in said_deployed), said_deployed


def test_secrets_reach_lambda_as_arns_of_settings_read_through_the_secret_reader(
    read: ReadByCode, readme: Readme, deployed: Deployed
) -> None:
    for product in PRODUCTS:
        arn_variables = {name for name in deployed.variables[product] if name.endswith("_ARN")}
        assert arn_variables <= read.arn_variables, (
            f"{product}: ARNs no setting reads: {arn_variables - read.arn_variables}"
        )
        leaked = read.secrets & (deployed.variables[product] | deployed.context[product])
        assert not leaked, f"{product}: a secret value in the environment or cdk.json: {leaked}"
    # The README promises exactly the ARN variables the settings read, and each reaches some product.
    assert readme.arn_variables() == read.arn_variables
    assert read.arn_variables <= set().union(*(deployed.variables[product] for product in PRODUCTS))


def test_cdk_sets_only_variables_the_code_reads(read: ReadByCode, readme: Readme, deployed: Deployed) -> None:
    for product in PRODUCTS:
        plain = {name for name in deployed.variables[product] | deployed.context[product] if not name.endswith("_ARN")}
        unread = plain - read.settings - read.elsewhere - FOR_OPERATORS
        assert not unread, f"{product}: CDK sets variables that no code reads: {unread}"
        assert plain <= set(readme.defaults), f"{product}: undocumented: {plain - set(readme.defaults)}"
