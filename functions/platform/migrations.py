"""Applies the plain, ordered SQL files under ``migrations/platform/`` and ``migrations/<database>/``.

Every database gets the platform's files (its tables: outbox, claims) before its own, so that its own
files may rely on them; the platform's are recorded as ``platform/NNNN``. The one exception is history:
a database's files written before the platform folder existed (``BEFORE_PLATFORM``) come first, since
they created some of those tables themselves (migrations/README.md).

Each file runs inside its own transaction and is recorded in ``schema_migrations`` with its checksum;
an advisory lock keeps two migrators (two deploys, two dev stacks) from racing; a file that changed
after it was applied is an error, not silently skipped; so is a pending file numbered below one already
applied from its folder (numbers only grow: a file added later with a lower number would run out of
order on the databases that are already ahead).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from functions.platform.adapters.postgres import DATABASES, url_for_database

log = logging.getLogger(__name__)

MIGRATIONS_ROOT = Path(__file__).resolve().parents[2] / "migrations"
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every migrator of this project.
_ADVISORY_LOCK_ID = 0x61676973
PLATFORM = "platform"
# The last file of each database written before migrations/platform/ existed: these run before it.
BEFORE_PLATFORM = {"stepperslife": "0006"}


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str  # "0003" for a database's own file, "platform/0001" for the platform's
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def folder(self) -> str:
        return self.version.rpartition("/")[0]

    @property
    def number(self) -> str:
        return self.version.rpartition("/")[2]


def discover(database: str, root: Path = MIGRATIONS_ROOT) -> list[Migration]:
    """One folder's files in number order; versions carry the folder unless it is the database's own."""
    folder = root / database
    prefix = f"{database}/" if database == PLATFORM else ""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(version=prefix + match.group(1), name=match.group(2), path=path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migration files share a version number")
    return found


def plan(database: str, root: Path = MIGRATIONS_ROOT) -> list[Migration]:
    """What ``database`` gets, in order: its files from before the platform folder, the platform's
    files, then the rest of its own."""
    own = discover(database, root)
    cut = BEFORE_PLATFORM.get(database, "")
    platform = discover(PLATFORM, root) if (root / PLATFORM).is_dir() else []
    return [m for m in own if m.version <= cut] + platform + [m for m in own if m.version > cut]


def ensure_database(server_url: str, database: str) -> bool:
    """Create ``database`` on the server if it is missing. Returns True when it was created."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created by a concurrent migrator
        return True


def apply(url: str, migrations: list[Migration]) -> list[str]:
    """Apply what is not yet applied; return the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_ID,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    text PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            done = {version: checksum for version, checksum in rows}
            _refuse_lower_numbers(migrations, done)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} changed after it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text(encoding="utf-8").encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration %s_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_ID,))
    return applied_now


def migrate_all(server_url: str, *, name_prefix: str = "", root: Path = MIGRATIONS_ROOT) -> dict[str, list[str]]:
    """Create and migrate every database of the platform on the server at ``server_url``.

    ``name_prefix`` lets several stacks (a test run beside a dev stack) share one server."""
    result: dict[str, list[str]] = {}
    for database in DATABASES:
        name = name_prefix + database
        ensure_database(server_url, name)
        result[name] = apply(url_for_database(server_url, name), plan(database, root))
    return result


def _refuse_lower_numbers(migrations: list[Migration], done: dict[str, str]) -> None:
    for migration in migrations:
        if migration.version in done:
            continue
        folder_of = [version.rpartition("/") for version in done]
        ahead = [number for folder, _, number in folder_of if folder == migration.folder and number > migration.number]
        if ahead:
            raise MigrationError(
                f"{migration.path.name} is pending but {max(ahead)} of its folder is already applied: "
                "numbers only grow, give it the next free number"
            )
