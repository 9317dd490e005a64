"""Restoring a dump: fetched and checked, restored into a new database, then verified against its manifest.

Nothing is restored before the bytes are proven: the manifest must exist and be readable, its tool
must not be older than its server, the downloaded size and SHA-256 must equal the manifest's, and
``pg_restore --list`` must read the archive and list the tables (and the pg_dump version) that the
manifest records. Each failure is a ``BackupRefused`` naming the reason. Only then does pg_restore
run, in parallel, stopping at the first error, into a database created for it; a live database is
never the target here (restoring over one is a rename of a verified copy: ``swap_into_place``).

Verification of the restored database (``verify_database``): every table's row count and sampled
checksum equal the manifest's; every B-tree index passes amcheck's ``bt_index_check`` with
``heapallindexed`` (and GIN indexes ``gin_index_check`` where the server has it, PostgreSQL 18);
every foreign key and CHECK constraint is evaluated again over the data; the application's smoke
queries (migrations/smoke/<database>.sql) run.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from functions.platform.backups.errors import BackupError, BackupRefused, ToolVersionMismatch
from functions.platform.backups.manifest import Manifest, restored_stats
from functions.platform.backups.store import BackupStore, Progress, no_progress
from functions.platform.backups.tools import PgTools, PgVersion, libpq_target, tools_for
from functions.platform.migrations import MIGRATIONS_ROOT

_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"


@dataclass(frozen=True)
class Archive:
    """What ``pg_restore --list`` reads from a dump."""

    dumped_by: PgVersion
    table_data: frozenset[str]  # "schema.table" of every TABLE DATA entry
    entries: int


@dataclass(frozen=True)
class Verification:
    tables: int
    rows: int
    indexes_checked: int
    constraints_checked: int
    smoke_queries: int


def fetch(store: BackupStore, dump_key: str, work_dir: Path, progress: Progress = no_progress) -> tuple[Manifest, Path]:
    """The manifest and the downloaded dump, its size and SHA-256 checked against the manifest."""
    manifest = store.manifest(dump_key)
    manifest.refuse_older_tool()
    path = work_dir / Path(dump_key).name
    size, sha256 = store.download(dump_key, path, progress)
    if size != manifest.dump_bytes:
        raise BackupRefused(f"{dump_key}: truncated or padded: {size} bytes, the manifest says {manifest.dump_bytes}")
    if sha256 != manifest.sha256:
        raise BackupRefused(f"{dump_key}: SHA-256 differs from its manifest: the dump is corrupt")
    return manifest, path


def restore_tools(server_url: str, manifest: Manifest, pg_bin_dir: str | None) -> PgTools:
    """pg_restore for the target server that can also read this dump (not older than its pg_dump)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
        assert row is not None
        tools = tools_for(PgVersion.parse(str(row[0])), pg_bin_dir)
    if tools.version.major < manifest.pg_dump_major:
        raise ToolVersionMismatch(
            f"pg_restore {tools.version.text} cannot read a dump made by pg_dump {manifest.pg_dump_version}"
        )
    return tools


def read_archive(tools: PgTools, path: Path) -> Archive:
    done = subprocess.run(  # noqa: S603 - our argument list; the tool is a checked PostgreSQL binary
        [tools.path("pg_restore"), "--list", str(path)], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise BackupRefused(f"{path.name}: pg_restore cannot read the archive: {reason}")
    dumped_by = re.search(r"Dumped by pg_dump version: (.+)", done.stdout)
    if not dumped_by:
        raise BackupRefused(f"{path.name}: the archive does not say which pg_dump made it")
    lines = [line for line in done.stdout.splitlines() if line and not line.startswith(";")]
    tables = frozenset(f"{m.group(1)}.{m.group(2)}" for line in lines if (m := _TABLE_DATA.match(line)))
    return Archive(PgVersion.parse(dumped_by.group(1)), tables, len(lines))


def check_archive(manifest: Manifest, archive: Archive) -> None:
    """The archive lists the tables the manifest counted, and was made by the pg_dump it names."""
    if archive.dumped_by.text != manifest.pg_dump_version:
        raise BackupRefused(
            f"{manifest.dump_key}: made by pg_dump {archive.dumped_by.text}, "
            f"the manifest says {manifest.pg_dump_version}"
        )
    expected = {table.qualified for table in manifest.tables}
    if archive.table_data != expected:
        missing = sorted(expected - archive.table_data)
        extra = sorted(archive.table_data - expected)
        raise BackupRefused(
            f"{manifest.dump_key}: pg_restore --list disagrees with the manifest (missing {missing}, extra {extra})"
        )


def create_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def restore_archive(
    tools: PgTools, path: Path, url: str, archive: Archive, *, jobs: int, progress: Progress = no_progress
) -> None:
    """pg_restore into the (new, empty) database at ``url``; stops at the first error."""
    conninfo, env = libpq_target(url)
    command = [
        tools.path("pg_restore"), "--verbose", "--exit-on-error", "--no-owner", "--no-privileges",
        f"--jobs={jobs}", "--dbname", conninfo, str(path),
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)  # noqa: S603 - our argument list; the tool is a checked PostgreSQL binary
    assert process.stderr is not None
    done, last = 0, list[str]()
    for line in process.stderr:
        # -v reports each item as it is created or finished; an honest, if uneven, measure of progress.
        if line.startswith(("pg_restore: creating", "pg_restore: processing", "pg_restore: finished item")):
            done += 1
            progress(min(done, archive.entries), archive.entries)
        last = [*last[-4:], line.strip()]
    if process.wait() != 0:
        errors = [line for line in last if "error" in line.lower()] or last or [f"exit {process.returncode}"]
        raise BackupError(f"pg_restore failed: {errors[-1]}")


def smoke_queries(database: str, root: Path = MIGRATIONS_ROOT) -> list[str]:
    """The application's smoke queries for ``database``: statements separated by a ``;`` at a line's end."""
    path = root / "smoke" / f"{database}.sql"
    if not path.exists():
        return []
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in re.split(r";\s*$", text, flags=re.M) if statement.strip()]


def verify_database(url: str, manifest: Manifest, smoke: Sequence[str] = ()) -> Verification:
    """Prove the restored database at ``url`` is the one dumped; raises BackupRefused on any difference."""
    with psycopg.connect(url, autocommit=True) as conn:
        _compare_tables(manifest, restored_stats(conn, manifest.tables))
        indexes = _check_indexes(conn, manifest)
        constraints = _check_constraints(conn)
        for number, statement in enumerate(smoke, start=1):
            try:
                conn.execute(statement.encode()).fetchall()
            except psycopg.Error as exc:
                raise BackupRefused(f"smoke query {number} of {manifest.database} failed: {exc}") from None
    return Verification(len(manifest.tables), manifest.rows, indexes, constraints, len(smoke))


def _compare_tables(manifest: Manifest, restored: Sequence[Any]) -> None:
    by_name = {table.qualified: table for table in restored}
    for expected in manifest.tables:
        got = by_name.get(expected.qualified)
        if got is None:
            raise BackupRefused(f"{expected.qualified} is missing from the restored database")
        if got.rows != expected.rows:
            raise BackupRefused(f"{expected.qualified}: {got.rows} rows restored, {expected.rows} dumped")
        if (got.sample_rows, got.sample_sha256) != (expected.sample_rows, expected.sample_sha256):
            raise BackupRefused(f"{expected.qualified}: the sampled rows' checksum differs from the dump's")


def _check_indexes(conn: psycopg.Connection[Any], manifest: Manifest) -> int:
    conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    gin_check = conn.execute("SELECT to_regproc('gin_index_check') IS NOT NULL").fetchone()
    checks = {"btree": "SELECT bt_index_check(%s::regclass, true)"}
    if gin_check and gin_check[0]:
        checks["gin"] = "SELECT gin_index_check(%s::regclass)"
    indexes = conn.execute(
        f"""SELECT c.oid::regclass::text, am.amname, c.relkind FROM pg_index i
              JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {_USER_SCHEMAS} AND i.indisvalid ORDER BY 1"""
    ).fetchall()
    if len(indexes) != manifest.indexes:
        raise BackupRefused(f"{len(indexes)} valid indexes restored, {manifest.indexes} dumped")
    checked = 0
    for name, method, relkind in indexes:
        # A partitioned table's index ('I') has no pages of its own: its partitions' indexes are checked.
        if method not in checks or relkind != "i":
            continue
        try:
            conn.execute(checks[method].encode(), (name,))
        except psycopg.Error as exc:
            raise BackupRefused(f"index {name} fails amcheck: {exc}") from None
        checked += 1
    return checked


def _check_constraints(conn: psycopg.Connection[Any]) -> int:
    """Every foreign key and CHECK constraint, evaluated again over the restored rows."""
    constraints = conn.execute(
        f"""SELECT c.conname, c.contype, c.conrelid::regclass::text, c.confrelid::regclass::text,
                   pg_get_expr(c.conbin, c.conrelid),
                   ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
                           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
                   ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
                           JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o)
              FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE {_USER_SCHEMAS} AND c.contype IN ('f', 'c') AND c.conrelid <> 0
             ORDER BY 3, 1"""
    ).fetchall()
    for name, kind, table, parent, expression, columns, parent_columns in constraints:
        if kind == "c":
            query = sql.SQL("SELECT count(*) FROM {} WHERE ({}) IS FALSE").format(sql.SQL(table), sql.SQL(expression))
        else:
            query = sql.SQL(
                "SELECT count(*) FROM {} AS c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})"
            ).format(
                sql.SQL(table),
                sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("c", col)) for col in columns),
                sql.SQL(parent),
                sql.SQL(" AND ").join(
                    sql.SQL("{} = {}").format(sql.Identifier("p", pcol), sql.Identifier("c", col))
                    for col, pcol in zip(columns, parent_columns, strict=True)
                ),
            )
        row = conn.execute(query).fetchone()
        if row and row[0]:
            raise BackupRefused(f"constraint {name} on {table} does not hold for {row[0]} restored rows")
    return len(constraints)


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    database: str
    download_seconds: float
    restore_seconds: float
    verify_seconds: float
    restored_bytes: int
    verification: Verification


def restore_verified(
    store: BackupStore,
    dump_key: str,
    *,
    server_url: str,
    database_url: Callable[[str], str],
    into: str,
    work_dir: Path,
    pg_bin_dir: str | None = None,
    jobs: int = 2,
    progress: Callable[[str], Progress] = lambda stage: no_progress,
) -> Restored:
    """Fetch, check, restore into the new database ``into`` and verify it. On failure ``into`` is dropped.

    ``database_url`` gives the URL of a database on the same server by its name; ``progress(stage)``
    gives the progress callback of each stage ("download", "restore", "verify")."""
    started = time.monotonic()
    manifest, path = fetch(store, dump_key, work_dir, progress("download"))
    try:
        downloaded = time.monotonic()
        tools = restore_tools(server_url, manifest, pg_bin_dir)
        archive = read_archive(tools, path)
        check_archive(manifest, archive)
        create_database(server_url, into)
        try:
            restore_archive(tools, path, database_url(into), archive, jobs=jobs, progress=progress("restore"))
            restored = time.monotonic()
            verify_progress = progress("verify")
            verify_progress(0, 1)
            verification = verify_database(database_url(into), manifest, smoke_queries(manifest.database))
            verify_progress(1, 1)
            with psycopg.connect(database_url(into), autocommit=True) as conn:
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        except BaseException:
            drop_database(server_url, into)
            raise
    finally:
        path.unlink(missing_ok=True)
    return Restored(
        manifest=manifest,
        database=into,
        download_seconds=downloaded - started,
        restore_seconds=restored - downloaded,
        verify_seconds=time.monotonic() - restored,
        restored_bytes=int(size[0]) if size else 0,
        verification=verification,
    )


def swap_into_place(server_url: str, *, restored: str, live: str, keep_as: str) -> None:
    """Put the verified database ``restored`` in the place of ``live``, which is kept as ``keep_as``.

    Two renames; the live database first stops accepting connections and its sessions are ended (a
    rename needs none), so nothing writes to it meanwhile. Nothing is dropped: the operator drops
    ``keep_as`` (which accepts no connections) once satisfied."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(live)))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (live,),
        )
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(keep_as)))
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(restored), sql.Identifier(live)))
