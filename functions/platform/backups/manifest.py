"""The manifest written beside each dump, and the table statistics it records and a restore must match.

The statistics are taken inside the very snapshot that pg_dump dumps (``pg_export_snapshot``; see
dump.py), so a restore that is correct reproduces them exactly, even while the live database keeps
changing. Per table: the row count and a checksum over a deterministic sample — the rows whose key
hashes to 0 modulo ``sample_modulus`` (about ``SAMPLE_ROWS`` rows), in key order, as text. The sample
does not depend on physical row order (a restore rewrites every page), and the text form is pinned
by the session settings in ``STATS_SESSION`` (time zone, date style, float digits), so the same data
gives the same checksum on any server of the same major version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from functions.platform.backups.errors import BackupRefused

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
SAMPLE_ROWS = 1000
# The text form of every value depends on these: pinned for the dump's statistics and the restore's.
STATS_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)


@dataclass(frozen=True)
class TableStats:
    schema: str
    name: str
    rows: int
    sample_modulus: int
    sample_rows: int
    sample_sha256: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Manifest:
    database: str  # the logical name (stepperslife), not the server's (which may carry a prefix)
    kind: str
    dump_key: str
    server_version: str
    server_major: int
    pg_dump_version: str
    pg_dump_major: int
    # The dump's snapshot: when the data it holds was current. A restore's RPO is measured from here.
    data_as_of: datetime
    finished_at: datetime
    dump_seconds: float
    dump_bytes: int
    sha256: str
    database_bytes: int
    indexes: int
    tables: tuple[TableStats, ...] = field(default_factory=tuple)
    format: int = MANIFEST_FORMAT

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["data_as_of"] = self.data_as_of.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != MANIFEST_FORMAT:
                raise BackupRefused(f"{key}: manifest format {data.get('format')!r} is not {MANIFEST_FORMAT}")
            data["data_as_of"] = datetime.fromisoformat(data["data_as_of"])
            data["finished_at"] = datetime.fromisoformat(data["finished_at"])
            data["tables"] = tuple(TableStats(**table) for table in data["tables"])
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackupRefused(f"{key}: unreadable manifest ({exc.__class__.__name__}: {exc})") from None

    def refuse_older_tool(self) -> None:
        """A dump made by a pg_dump older than its server may silently lack what the server has."""
        if self.pg_dump_major < self.server_major:
            raise BackupRefused(
                f"{self.dump_key}: made by pg_dump {self.pg_dump_version}, older than its server "
                f"({self.server_version}): not a trustworthy backup"
            )


def manifest_key(dump_key: str) -> str:
    return dump_key.removesuffix(".dump") + MANIFEST_SUFFIX


def pin_session(conn: psycopg.Connection[Any]) -> None:
    for statement in STATS_SESSION:
        conn.execute(statement)


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str, list[str]]]:
    """(schema, table, primary-key columns) of every table holding rows, extensions' own excluded."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname,
                  coalesce((SELECT array_agg(a.attname ORDER BY k.ord)
                              FROM pg_index i
                              CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                             WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2"""
    ).fetchall()
    return [(str(schema), str(name), list(key)) for schema, name, key in rows]


def table_stats(conn: psycopg.Connection[Any], schema: str, name: str, key: list[str], modulus: int) -> TableStats:
    """The row count, and the sample's size and checksum (a scan each: counting is the cheap one)."""
    table = sql.Identifier(schema, name)
    key_text = (
        sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier("t", column) for column in key))
        if key
        else sql.SQL("t::text")
    )
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    sample = conn.execute(
        sql.SQL(
            """SELECT count(*), encode(sha256(convert_to(coalesce(
                          string_agg(t::text, E'\\n' ORDER BY {key_text} COLLATE "C"), ''), 'UTF8')), 'hex')
                 FROM {table} AS t WHERE hashtextextended({key_text}, 0) % {modulus} = 0"""
        ).format(key_text=key_text, modulus=sql.Literal(modulus), table=table)
    ).fetchone()
    assert count is not None and sample is not None
    return TableStats(schema, name, int(count[0]), modulus, int(sample[0]), str(sample[1]))


def snapshot_stats(conn: psycopg.Connection[Any]) -> tuple[list[TableStats], int, int]:
    """Every table's statistics, the number of indexes and the database's size, in ``conn``'s snapshot.

    The sample modulus comes from the planner's row estimate (the count is not known before the scan)."""
    pin_session(conn)
    stats = []
    for schema, name, key in user_tables(conn):
        estimate = conn.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
            (sql.Identifier(schema, name).as_string(conn),),
        ).fetchone()
        modulus = max(1, int(estimate[0] if estimate else 0) // SAMPLE_ROWS)
        stats.append(table_stats(conn, schema, name, key, modulus))
    return stats, count_indexes(conn), database_bytes(conn)


def restored_stats(conn: psycopg.Connection[Any], expected: Iterable[TableStats]) -> list[TableStats]:
    """The restored tables' statistics, each sampled with the modulus the manifest recorded."""
    pin_session(conn)
    keys = {(schema, name): key for schema, name, key in user_tables(conn)}
    return [
        table_stats(conn, table.schema, table.name, keys.get((table.schema, table.name), []), table.sample_modulus)
        for table in expected
        if (table.schema, table.name) in keys
    ]


def count_indexes(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        """SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"""
    ).fetchone()
    return int(row[0]) if row else 0


def database_bytes(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0
