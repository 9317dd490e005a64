"""Backups against the real pg_dump/pg_restore, real PostgreSQL and moto's S3: dumps with manifests, the
locked bucket, the restore drill and its record, corruption refused, the isolated customer restore,
the schedules and the operator CLI. Small data: the benchmark measures the large case."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError
from chalice.app import Cron

from devstack import backup_cli, handlers
from devstack.cli import main
from devstack.services import embedded_pg_bin_dir
from functions.agistaffers.services import partitions
from functions.platform import topology
from functions.platform.backups import composition
from functions.platform.backups.composition import Backups
from functions.platform.backups.drill import drill_metrics, freshness
from functions.platform.backups.errors import BackupRefused, RowsExist, ToolVersionMismatch
from functions.platform.backups.manifest import manifest_key
from functions.platform.backups.restore import fetch
from functions.platform.backups.store import dump_key, parse_key
from functions.platform.backups.tools import PgVersion, tools_for
from functions.platform.config import BackupSettings, Settings
from functions.stepperslife.app import app as stepperslife_app


@pytest.fixture(scope="module")
def backup_settings(settings: Settings) -> Settings:
    # Tests against the embedded server (no DATABASE_URL) use its own client tools, as `agistack dev` does.
    bin_dir = None if os.environ.get("DATABASE_URL") else str(embedded_pg_bin_dir())
    return dataclasses.replace(settings, backup=BackupSettings(pg_bin_dir=bin_dir))


@pytest.fixture(scope="module")
def backups(backup_settings: Settings) -> Iterator[Backups]:
    container = composition.configure(backup_settings)
    yield container
    container.close()


@pytest.fixture(scope="module")
def customers(backup_settings: Settings) -> dict[str, str]:
    """Two AGI Staffers customers, each with a user, a site with metrics and an invitation."""
    ids: dict[str, str] = {}
    url = backup_settings.database_url_for("agistaffers")
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        partitions.maintain(conn, datetime.now(UTC))  # the days the metrics below fall on
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("alpha", "beta"):
            tag = f"{name}{secrets.token_hex(3)}"
            customer = conn.execute(
                "INSERT INTO customers (email, company_name, plan, status) VALUES (%s, %s, 'business', 'active') "
                "RETURNING id",
                (f"owner@{tag}.example", name.title()),
            ).fetchone()
            assert customer is not None
            ids[name] = str(customer[0])
            user = conn.execute(
                "INSERT INTO users (customer_id, email, name, password_hash, role) VALUES (%s, %s, 'Owner', 'x', "
                "'owner') RETURNING id",
                (customer[0], f"owner@{tag}.example"),
            ).fetchone()
            assert user is not None
            site = conn.execute(
                "INSERT INTO customer_sites (customer_id, domain, status) VALUES (%s, %s, 'active') RETURNING id",
                (customer[0], f"{tag}.example"),
            ).fetchone()
            assert site is not None
            conn.execute(
                "INSERT INTO metric_samples (site_id, metric, value, at) "
                "SELECT %s, 'cpu_percent', g %% 100, now() - g * interval '1 minute' FROM generate_series(1, 50) g",
                (site[0],),
            )
            conn.execute(
                "INSERT INTO invitations (customer_id, email, role, token_hash, invited_by) VALUES (%s, %s, 'member', "
                "%s, %s)",
                (customer[0], f"new@{tag}.example", secrets.token_hex(32), user[0]),
            )
    return ids


def customer_rows(settings: Settings, customer_id: str) -> dict[str, int]:
    counts = {}
    with psycopg.connect(settings.database_url_for("agistaffers")) as conn:
        for table, where in (
            ("customers", "id = %(c)s"),
            ("users", "customer_id = %(c)s"),
            ("customer_sites", "customer_id = %(c)s"),
            ("invitations", "customer_id = %(c)s"),
            ("metric_samples", "site_id IN (SELECT id FROM customer_sites WHERE customer_id = %(c)s)"),
        ):
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", {"c": customer_id}).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def drills(settings: Settings, database: str) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url_for(database), row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM backup_drills ORDER BY id").fetchall()


# --- dump and manifest -----------------------------------------------------------------------------


def test_a_backup_is_a_custom_dump_with_a_manifest_from_the_same_snapshot(
    backups: Backups, customers: dict[str, str]
) -> None:
    manifest = backups.create("agistaffers", "daily")
    kind, database, taken = parse_key(manifest.dump_key) or ("", "", datetime.min)
    assert (kind, database) == ("daily", "agistaffers")
    assert abs(taken - manifest.data_as_of) < timedelta(seconds=1)
    with psycopg.connect(backups.target("agistaffers").url) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    assert row is not None and manifest.server_version == PgVersion.parse(row[0]).text
    assert manifest.pg_dump_major == manifest.server_major
    tables = {table.qualified: table for table in manifest.tables}
    assert sum(table.rows for name, table in tables.items() if name.startswith("public.metric_samples")) >= 100
    assert tables["public.customers"].sample_rows == tables["public.customers"].rows  # small: all sampled
    head = backups.store.s3.head_object(Bucket=backups.store.bucket, Key=manifest.dump_key)
    assert head["ContentLength"] == manifest.dump_bytes
    # The bytes in the bucket are the bytes the manifest hashed.
    _, downloaded = fetch(backups.store, manifest.dump_key, Path(os.environ.get("TMPDIR", "/tmp")))
    assert downloaded.read_bytes()[:5] == b"PGDMP"
    downloaded.unlink()


def test_the_bucket_never_lets_a_backup_be_deleted_or_overwritten(backups: Backups) -> None:
    manifest = backups.create("stepperslife", "incremental")
    s3, bucket = backups.store.s3, backups.store.bucket
    head = s3.head_object(Bucket=bucket, Key=manifest.dump_key)
    version = head["VersionId"]
    assert head["ObjectLockMode"] == "COMPLIANCE"
    days = topology.INCREMENTAL_BACKUP.retention_days
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=days - 1)
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key=manifest.dump_key, VersionId=version)
    with pytest.raises(ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=bucket, Key=manifest_key(manifest.dump_key), Body=b"{}", IfNoneMatch="*")


def test_a_pg_dump_older_than_the_server_is_refused_before_anything_is_written(
    backups: Backups, backup_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ToolVersionMismatch, match="no pg_dump for PostgreSQL 99"):
        tools_for(PgVersion(99, "99.1"), None)
    # A configured directory holding an old pg_dump (a script that answers --version like 9.6 does).
    for tool in ("pg_dump", "pg_restore"):
        script = tmp_path / tool
        script.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    before = len(backups.store.list())
    old = Backups(dataclasses.replace(backup_settings, backup=BackupSettings(pg_bin_dir=str(tmp_path))))
    with pytest.raises(ToolVersionMismatch, match=r"pg_dump 9\.6 .* is older than the server"):
        old.create("stepperslife", "daily")
    assert len(backups.store.list()) == before


# --- the drill -------------------------------------------------------------------------------------


def test_the_drill_restores_verifies_and_records_rto_and_rpo(backups: Backups, backup_settings: Settings) -> None:
    backups.create("stepperslife", "daily")
    result = backups.drill("stepperslife")
    assert result.succeeded, result.failure
    assert result.indexes_checked > 5 and result.tables >= 5
    assert result.rpo_seconds is not None and result.rpo_seconds >= 0
    assert result.rto_seconds == result.restore_seconds + result.verify_seconds
    row = drills(backup_settings, "stepperslife")[-1]
    assert row["succeeded"] and row["dump_key"] == result.dump_key and row["failure"] is None
    assert row["rto_seconds"] == pytest.approx(result.rto_seconds)
    assert row["indexes_checked"] == result.indexes_checked
    # The scratch database is gone.
    with psycopg.connect(backup_settings.database.url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s",
            (backup_settings.database.name_prefix + "stepperslife_drill_%",),
        ).fetchone()
    assert left == (0,)
    assert not backups.freshness("stepperslife").stale
    later = datetime.now(UTC) + timedelta(hours=27)
    stale = freshness(backups.target("stepperslife"), now=later)
    assert stale.stale and stale.hours_since is not None and stale.hours_since > 26
    line = json.loads(drill_metrics(result))
    assert line["DrillSucceeded"] == 1.0 and line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "agistack/backups"


def _corrupt_copy(backups: Backups, how: str, tmp_path: Path) -> str:
    """A copy of a fresh dump under a new key, damaged in one way; returns the copy's key."""
    original = backups.create("agistaffers", "daily")
    manifest, path = fetch(backups.store, original.dump_key, tmp_path)
    data = path.read_bytes()
    key = dump_key("agistaffers", "daily", datetime.now(UTC))
    if how == "flipped bytes":
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    elif how == "truncated":
        data = data[: len(data) // 2]
    path.write_bytes(data)
    retain = backups.store.retain_until("daily", datetime.now(UTC))
    with path.open("rb") as stream:
        backups.store.upload(key, stream, retain)
    if how == "older tool":
        manifest = dataclasses.replace(manifest, pg_dump_major=manifest.server_major - 1, pg_dump_version="14.9")
    if how != "missing manifest":
        backups.store.put_manifest(dataclasses.replace(manifest, dump_key=key), retain)
    return key


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("flipped bytes", "SHA-256 differs from its manifest"),
        ("truncated", "truncated or padded"),
        ("older tool", "older than its server"),
        ("missing manifest", "no manifest beside it"),
    ],
)
def test_a_corrupt_dump_is_refused_with_its_reason(
    backups: Backups, backup_settings: Settings, tmp_path: Path, how: str, reason: str
) -> None:
    key = _corrupt_copy(backups, how, tmp_path)
    with pytest.raises(BackupRefused, match=reason):
        fetch(backups.store, key, tmp_path)
    result = backups.drill("agistaffers", dump_key=key)
    assert not result.succeeded and reason in (result.failure or "")
    row = drills(backup_settings, "agistaffers")[-1]
    assert row["succeeded"] is False and reason in row["failure"]


def test_a_dump_whose_data_no_longer_matches_its_manifest_is_refused(backups: Backups, tmp_path: Path) -> None:
    """Bytes and hash agree, but the archive is not what the manifest counted (a foreign table list)."""
    original = backups.create("agistaffers", "daily")
    manifest, path = fetch(backups.store, original.dump_key, tmp_path)
    key = dump_key("agistaffers", "daily", datetime.now(UTC))
    retain = backups.store.retain_until("daily", datetime.now(UTC))
    with path.open("rb") as stream:
        backups.store.upload(key, stream, retain)
    changed = (dataclasses.replace(manifest.tables[0], rows=manifest.tables[0].rows + 1), *manifest.tables[1:])
    backups.store.put_manifest(dataclasses.replace(manifest, dump_key=key, tables=changed), retain)
    result = backups.drill("agistaffers", dump_key=key)
    assert not result.succeeded and "rows restored" in (result.failure or "")


# --- isolated customer restore ---------------------------------------------------------------------


def test_one_customer_is_restored_without_touching_anyone_else(
    backups: Backups, backup_settings: Settings, customers: dict[str, str]
) -> None:
    from functions.agistaffers.services.customer_restore import CUSTOMER_ROWS

    alpha, beta = customers["alpha"], customers["beta"]
    before = customer_rows(backup_settings, alpha)
    key = backups.create("agistaffers", "daily").dump_key
    with psycopg.connect(backup_settings.database_url_for("agistaffers"), autocommit=True) as conn:
        site_ids = [row[0] for row in conn.execute("SELECT id FROM customer_sites WHERE customer_id = %s", (alpha,))]
        conn.execute("DELETE FROM customer_sites WHERE customer_id = %s", (alpha,))
        conn.execute("DELETE FROM customers WHERE id = %s", (alpha,))
        conn.execute("UPDATE customers SET company_name = 'Beta Renamed' WHERE id = %s", (beta,))
    assert customer_rows(backup_settings, alpha)["customers"] == 0
    # Metric samples have no foreign key: left behind by the loss, they would be restored twice.
    with pytest.raises(RowsExist, match="metric_samples still exist"):
        backups.restore_rows("agistaffers", CUSTOMER_ROWS, {"customer_id": alpha}, overwrite=False, dump_key=key)
    with psycopg.connect(backup_settings.database_url_for("agistaffers"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE id = %s", (alpha,)).fetchone() == (0,)
        conn.execute("DELETE FROM metric_samples WHERE site_id = ANY(%s)", (site_ids,))

    _, copied = backups.restore_rows(
        "agistaffers", CUSTOMER_ROWS, {"customer_id": alpha}, overwrite=False, dump_key=key
    )
    assert {table: copied[table] for table in before} == before == customer_rows(backup_settings, alpha)
    with psycopg.connect(backup_settings.database_url_for("agistaffers")) as conn:
        assert conn.execute("SELECT company_name FROM customers WHERE id = %s", (beta,)).fetchone() == ("Beta Renamed",)

    with pytest.raises(RowsExist, match="still exist"):
        backups.restore_rows("agistaffers", CUSTOMER_ROWS, {"customer_id": alpha}, overwrite=False, dump_key=key)
    _, again = backups.restore_rows("agistaffers", CUSTOMER_ROWS, {"customer_id": alpha}, overwrite=True, dump_key=key)
    assert {table: again[table] for table in before} == before


# --- schedules -------------------------------------------------------------------------------------


def test_the_schedules_are_registered_once_and_fire_locally(backups: Backups, backup_settings: Settings) -> None:
    schedules = {h.name: h for h in handlers.scheduled_handlers(stepperslife_app)}
    assert schedules["backup_daily"].expression == "cron(0 2 * * ? *)"
    assert schedules["backup_weekly"].cron == "30 2 * * SUN"
    assert schedules["backup_incremental"].interval_seconds == 15 * 60
    assert schedules["backup_drill"].next_due(datetime(2026, 1, 1, 5, 0, tzinfo=UTC)) == datetime(
        2026, 1, 2, 4, 0, tzinfo=UTC
    )
    assert handlers.croniter_expression(Cron(0, 3, "?", "*", "2", "*")) == "0 3 * * 1"  # AWS 2 = Monday
    before = len(drills(backup_settings, "agistaffers"))
    created = handlers.fire(schedules["backup_incremental"])
    assert set(created) == {"stepperslife", "agistaffers"}
    drilled = handlers.fire(schedules["backup_drill"])
    assert all(drilled[database]["succeeded"] for database in drilled), drilled
    assert len(drills(backup_settings, "agistaffers")) == before + 1
    fresh = handlers.fire(schedules["backup_freshness"])
    assert fresh["agistaffers"]["stale"] is False


# --- the operator CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(backup_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", backup_settings.database.url)
    monkeypatch.setenv("DATABASE_NAME_PREFIX", backup_settings.database.name_prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL", backup_settings.aws.endpoint_url or "")
    if backup_settings.backup.pg_bin_dir:
        monkeypatch.setenv("PG_BIN_DIR", backup_settings.backup.pg_bin_dir)


def test_the_cli_creates_lists_verifies_drills_and_restores_safely(
    cli_env: None, backup_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = ["--data-dir", str(tmp_path)]
    assert main(["backup", "create", "--database", "agistaffers", "--kind", "daily", *data_dir]) == 0
    assert "agistaffers: daily/agistaffers/" in capsys.readouterr().out
    assert main(["backup", "list", "--database", "agistaffers", *data_dir]) == 0
    assert "daily" in capsys.readouterr().out
    assert main(["backup", "verify", "--database", "agistaffers", *data_dir]) == 0
    assert "intact" in capsys.readouterr().out
    assert main(["backup", "drill", "--database", "agistaffers", *data_dir]) == 0
    assert "RTO" in capsys.readouterr().out

    into = f"{backup_settings.database.name_prefix}agi_copy"
    assert main(["backup", "restore", "--database", "agistaffers", "--into", into, *data_dir]) == 0
    assert "the live database was not touched" in capsys.readouterr().out
    with psycopg.connect(backup_settings.database.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{into}" WITH (FORCE)')

    # Over the live database: never without the flag's confirmation.
    assert main(["backup", "restore", "--database", "agistaffers", "--over-live", "--confirm", "nope", *data_dir]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("agistack backup restore: not confirmed") and "\n" not in error

    assert (
        main(["backup", "verify", "--key", "daily/agistaffers/2020/01/01/20200101T000000Z-000000.dump", *data_dir]) == 1
    )
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_human_sizes_and_times() -> None:
    assert backup_cli.human_seconds(4.25) == "4.2 s"
    assert backup_cli.human_seconds(125) == "2 min 5 s"
    assert backup_cli.human_seconds(7300) == "2 h 1 min"
