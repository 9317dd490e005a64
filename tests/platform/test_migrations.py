"""Migrations: ordered, recorded, idempotent, refusing edited files and lower numbers; the platform's
files on every database; and the schema's constraints."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from functions.platform.adapters.postgres import DATABASES, Database, url_for_database
from functions.platform.claims import Claims, Done
from functions.platform.idempotency import IdempotencyKeys, StoredResponse
from functions.platform.migrations import (
    MIGRATIONS_ROOT,
    PLATFORM,
    MigrationError,
    apply,
    discover,
    ensure_database,
    migrate_all,
    plan,
)


@pytest.fixture
def scratch_db(pg_server_url: str) -> object:
    name = f"scratch_{secrets.token_hex(4)}"
    ensure_database(pg_server_url, name)
    yield url_for_database(pg_server_url, name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_applies_in_order_once_and_records(tmp_path: Path, scratch_db: str) -> None:
    write(tmp_path / "db", "0002_add_column.sql", "ALTER TABLE things ADD COLUMN label text;")
    write(tmp_path / "db", "0001_create.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    migrations = discover("db", tmp_path)
    assert [m.version for m in migrations] == ["0001", "0002"]
    assert apply(scratch_db, migrations) == ["0001", "0002"]
    assert apply(scratch_db, migrations) == []
    with psycopg.connect(scratch_db) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [("0001", "create"), ("0002", "add_column")]


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path, scratch_db: str) -> None:
    write(tmp_path / "db", "0001_ok.sql", "CREATE TABLE a (id int);")
    write(tmp_path / "db", "0002_broken.sql", "CREATE TABLE b (id int); SELECT * FROM missing_table;")
    with pytest.raises(psycopg.errors.UndefinedTable):
        apply(scratch_db, discover("db", tmp_path))
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [("0001",)]


def test_an_edited_migration_is_refused(tmp_path: Path, scratch_db: str) -> None:
    write(tmp_path / "db", "0001_create.sql", "CREATE TABLE c (id int);")
    apply(scratch_db, discover("db", tmp_path))
    write(tmp_path / "db", "0001_create.sql", "CREATE TABLE c (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply(scratch_db, discover("db", tmp_path))


@pytest.mark.parametrize("bad_name", ["1_x.sql", "0001-x.sql", "0001_X.sql"])
def test_badly_named_files_are_refused(tmp_path: Path, bad_name: str) -> None:
    write(tmp_path / "db", bad_name, "SELECT 1;")
    with pytest.raises(MigrationError):
        discover("db", tmp_path)


def test_a_lower_number_added_later_is_refused(tmp_path: Path, scratch_db: str) -> None:
    write(tmp_path / "db", "0001_create.sql", "CREATE TABLE d (id int);")
    write(tmp_path / "db", "0003_more.sql", "ALTER TABLE d ADD COLUMN x int;")
    assert apply(scratch_db, discover("db", tmp_path)) == ["0001", "0003"]
    write(tmp_path / "db", "0002_late.sql", "ALTER TABLE d ADD COLUMN y int;")
    with pytest.raises(MigrationError, match="numbers only grow"):
        apply(scratch_db, discover("db", tmp_path))
    write(tmp_path / "db", "0004_late.sql", (tmp_path / "db" / "0002_late.sql").read_text())
    (tmp_path / "db" / "0002_late.sql").unlink()
    assert apply(scratch_db, discover("db", tmp_path)) == ["0004"]


def test_the_real_folders_number_their_files_upwards() -> None:
    """Each folder's numbers are unique and only grow; a hole (stepperslife has no 0002) is fine."""
    for folder in [PLATFORM, *DATABASES]:
        numbers = [int(m.number) for m in discover(folder)]
        assert numbers == sorted(set(numbers)) and numbers[0] == 1, folder


def test_platform_files_come_before_a_database_s_own_and_are_recorded_apart(tmp_path: Path, scratch_db: str) -> None:
    write(tmp_path / PLATFORM, "0001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    write(tmp_path / "db", "0001_uses_things.sql", "CREATE TABLE parts (thing int REFERENCES things);")
    migrations = plan("db", tmp_path)
    assert [m.version for m in migrations] == ["platform/0001", "0001"]
    assert apply(scratch_db, migrations) == ["platform/0001", "0001"]
    with psycopg.connect(scratch_db) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY applied_at, version").fetchall()
    assert rows == [("platform/0001", "things"), ("0001", "uses_things")]


def test_stepperslife_files_from_before_the_platform_folder_run_first() -> None:
    versions = [m.version for m in plan("stepperslife")]
    assert versions[:6] == ["0001", "0003", "0004", "0005", "0006", "platform/0001"]
    assert plan("agistaffers")[0].version == "platform/0001"


def test_an_existing_stepperslife_database_keeps_what_its_old_tables_knew(scratch_db: str) -> None:
    """A database at 0006 (outbox, idempotency_keys, processed_steps, digest_deliveries in use) moves to
    the platform's tables: its outbox stays, and a retry after the deploy still finds its claim."""
    apply(scratch_db, [m for m in discover("stepperslife") if m.version <= "0006"])
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        user = conn.execute(
            "INSERT INTO users (email, name, password_hash) VALUES ('o@b.co', 'O', 'scrypt$x') RETURNING id"
        ).fetchone()
        assert user is not None
        user_id = str(user[0])
        conn.execute("INSERT INTO outbox (topic, payload, dedup_key) VALUES ('event.updated', '{}', 'kept')")
        conn.execute(
            "INSERT INTO idempotency_keys (user_id, route, key, request_hash, status_code, response_body) "
            "VALUES (%s, 'POST /events', 'k1', %s, 201, '{\"id\": 1}'), "
            "(%s, 'POST /events', 'running', %s, NULL, NULL)",
            (user_id, "a" * 64, user_id, "b" * 64),
        )
        conn.execute("INSERT INTO processed_steps (dedup_key, step) VALUES ('pub:1', 'enhance')")
        conn.execute(
            "INSERT INTO digest_deliveries (user_id, day, event_ids) VALUES (%s, '2030-05-01', '{}')", (user_id,)
        )

    applied = apply(scratch_db, plan("stepperslife", MIGRATIONS_ROOT))
    # platform/0001 before 0007, whatever later files there are.
    assert applied[0] == "platform/0001" and applied.index("0007") > 0

    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT dedup_key FROM outbox").fetchall() == [("kept",)]
        gone = conn.execute(
            "SELECT to_regclass('idempotency_keys'), to_regclass('processed_steps'), to_regclass('digest_deliveries')"
        ).fetchone()
        assert gone == (None, None, None)
    db = Database(scratch_db)
    try:
        claims = Claims(db)
        replayed = IdempotencyKeys(claims).run_once(
            user_id, "POST /events", "k1", "a" * 64, lambda: ("ran", StoredResponse(200, None))
        )
        assert replayed == StoredResponse(201, {"id": 1})
        assert claims.run_once("step", "pub:1:enhance", lambda: "ran", lease=timedelta(seconds=1)) == Done(None)
        digest = claims.run_once("digest", f"2030-05-01:{user_id}", lambda: "ran", lease=timedelta(seconds=1))
        assert digest == Done({"event_ids": []})
    finally:
        db.close()


def test_real_migrations_are_idempotent(pg_server_url: str, db_prefix: str) -> None:
    assert migrate_all(pg_server_url, name_prefix=db_prefix) == {
        f"{db_prefix}stepperslife": [],
        f"{db_prefix}agistaffers": [],
    }


def test_every_timestamp_is_timestamptz_and_every_fk_indexed(
    settings: object, pg_server_url: str, db_prefix: str
) -> None:
    for database in ("stepperslife", "agistaffers"):
        with psycopg.connect(url_for_database(pg_server_url, db_prefix + database)) as conn:
            naive = conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'"
            ).fetchall()
            assert naive == []
            unindexed = conn.execute(
                """SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c
                   WHERE c.contype = 'f' AND NOT EXISTS (
                     SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid
                       AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] = c.conkey)"""
            ).fetchall()
            assert unindexed == []


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO users (email, name, password_hash) VALUES ('Upper@Example.com', 'x', 'scrypt$1')",
        "INSERT INTO users (email, name, password_hash, role) VALUES ('a@b.co', 'x', 'scrypt$1', 'root')",
        "INSERT INTO users (email, name, password_hash) VALUES ('a@b.co', '  ', 'scrypt$1')",
        "INSERT INTO users (email, name, password_hash) VALUES ('a@b.co', 'x', 'plaintext')",
    ],
)
def test_users_constraints(stepperslife_url: str, clean_stepperslife: None, statement: str) -> None:
    with psycopg.connect(stepperslife_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement)


def test_events_and_registrations_constraints(stepperslife_url: str, clean_stepperslife: None) -> None:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        user = conn.execute(
            "INSERT INTO users (email, name, password_hash) VALUES ('o@b.co', 'O', 'scrypt$x') RETURNING id"
        ).fetchone()
        assert user is not None
        insert = (
            "INSERT INTO events (user_id, title, slug, event_date, capacity, status) "
            "VALUES (%s, 'T', %s, now() + interval '1 day', %s, %s) RETURNING id"
        )
        for slug, capacity, status in (("ok", 0, "draft"), ("Bad Slug", 5, "draft"), ("ok", 5, "live")):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(insert, (user[0], slug, capacity, status))
        event = conn.execute(insert, (user[0], "ok", 1, "draft")).fetchone()
        assert event is not None
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (user[0], "ok", 1, "draft"))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE events SET registered_count = 2 WHERE id = %s", (event[0],))
        register = "INSERT INTO event_registrations (user_id, event_id, status, waitlist_seq) VALUES (%s, %s, %s, %s)"
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(register, (user[0], event[0], "waitlisted", None))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(register, (user[0], event[0], "maybe", None))
        conn.execute(register, (user[0], event[0], "registered", None))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(register, (user[0], event[0], "registered", None))
        # RESTRICT: an organizer who still owns events cannot simply vanish. (PostgreSQL 18 reports it as
        # restrict_violation, 15 as foreign_key_violation.)
        with pytest.raises((psycopg.errors.RestrictViolation, psycopg.errors.ForeignKeyViolation)):
            conn.execute("DELETE FROM users WHERE id = %s", (user[0],))
