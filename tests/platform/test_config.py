"""The functions' settings: each group read from the environment, one error naming what is wrong."""

from __future__ import annotations

import pytest

from functions.platform.config import (
    AwsSettings,
    ConfigurationError,
    DatabaseSettings,
    EdgeSettings,
    FlowiseSettings,
    MissingConfiguration,
    Settings,
)

SECRET = "e" * 40
REQUIRED = {"DATABASE_URL": "postgresql://db.example/x", "EDGE_SIGNING_SECRET": SECRET}


def test_the_defaults_of_the_groups_are_what_an_empty_environment_gives() -> None:
    assert Settings.from_env(REQUIRED) == Settings(
        database=DatabaseSettings("postgresql://db.example/x"), edge=EdgeSettings(SECRET)
    )


def test_a_missing_variable_is_named_before_an_invalid_one() -> None:
    with pytest.raises(MissingConfiguration, match=r"^missing configuration: DATABASE_URL$"):
        Settings.from_env({"DOMAIN_EVENTS_VIA": "carrier-pigeon"})


def test_a_function_without_the_edge_key_has_no_edge_group_and_serves_no_http() -> None:
    """Queue and schedule handlers are not given EDGE_SIGNING_SECRET (cdk/product.py)."""
    settings = Settings.from_env({"DATABASE_URL": "postgresql://db.example/x"})
    assert settings.edge is None
    with pytest.raises(MissingConfiguration, match="EDGE_SIGNING_SECRET"):
        settings.require_edge()
    assert Settings.from_env(REQUIRED).require_edge() == EdgeSettings(SECRET)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EDGE_SIGNING_SECRET", "short", "at least 32 characters"),
        ("EDGE_MAX_SKEW_SECONDS", "soon", "not a number: EDGE_MAX_SKEW_SECONDS"),
        ("IDEMPOTENCY_LEASE_SECONDS", "a minute", "not a number: IDEMPOTENCY_LEASE_SECONDS"),
        ("FLOWISE_TIMEOUT_SECONDS", "ten", "not a number: FLOWISE_TIMEOUT_SECONDS"),
        ("DOMAIN_EVENTS_VIA", "carrier-pigeon", "DOMAIN_EVENTS_VIA must be one of sqs, eventbridge"),
    ],
)
def test_an_invalid_value_fails_the_start(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({**REQUIRED, variable: value})


def test_secrets_come_from_the_value_or_from_the_secret_its_arn_names() -> None:
    store = {"arn:db": "postgresql://secret.example/x", "arn:edge": SECRET, "arn:flowise": "key"}
    env = {
        "DATABASE_URL_SECRET_ARN": "arn:db",
        "EDGE_SIGNING_SECRET_ARN": "arn:edge",
        "FLOWISE_API_KEY_SECRET_ARN": "arn:flowise",
        "FLOWISE_URL": "https://flowise.example/",
        "AWS_REGION": "eu-west-1",
    }
    settings = Settings.from_env(env, read_secret=store.__getitem__)
    assert settings.database.url == "postgresql://secret.example/x"
    assert settings.require_edge().signing_secret == SECRET
    assert settings.flowise == FlowiseSettings(url="https://flowise.example", api_key="key")
    assert settings.aws == AwsSettings(region="eu-west-1")
    # A value in the environment wins over the secret (the dev stack and tests set values).
    assert Settings.from_env({**env, "DATABASE_URL": "postgresql://local/x"}, store.__getitem__).database.url == (
        "postgresql://local/x"
    )


def test_database_names_carry_the_prefix() -> None:
    settings = Settings(
        database=DatabaseSettings("postgresql://u@db.example:5432/postgres", "t1_"), edge=EdgeSettings(SECRET)
    )
    assert "dbname=t1_stepperslife" in settings.database_url_for("stepperslife").split()
