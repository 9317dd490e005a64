"""Copy chosen rows from a restored copy of a database into the live one, touching no other row.

An isolated restore (one customer's data) is a list of ``RowSet``: a table and the condition that
selects the rows, in insertion order (parents before children). In one transaction on the live
database: the rows the condition selects there are counted; if any exist the restore is refused
(``RowsExist``) unless ``overwrite``, which deletes them first (children first); then each table's
rows are streamed from the copy with binary COPY, each table after its parents, so that rows its
condition selects only once the parents are back (children without a foreign key, left behind) are
refused or replaced the same way. A row that collides with someone else's (a unique
address, a domain now used by another customer) fails the COPY, and the whole transaction rolls
back: the live database is left exactly as it was. The conditions are SQL written by the product
that owns the tables, never by a user; their parameters are bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from functions.platform.backups.errors import BackupError, RowsExist


@dataclass(frozen=True)
class RowSet:
    table: str
    # A boolean SQL expression over the table's columns; %(name)s parameters are bound.
    where: str


def copy_rows(
    source_url: str, target_url: str, row_sets: Sequence[RowSet], params: Mapping[str, Any], *, overwrite: bool
) -> dict[str, int]:
    """Rows copied per table; raises RowsExist, or BackupError when the copy conflicts with other rows."""
    copied: dict[str, int] = {}
    with psycopg.connect(source_url) as source, psycopg.connect(target_url) as target:
        try:
            with target.transaction():
                present = {rows.table: _count(target, rows, params) for rows in row_sets}
                if any(present.values()) and not overwrite:
                    found = ", ".join(f"{table} {count}" for table, count in present.items() if count)
                    raise RowsExist(f"the rows still exist in the live database ({found}); pass overwrite to replace")
                for rows in reversed(row_sets):
                    target.execute(
                        sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(rows.table), sql.SQL(rows.where)),
                        params,
                    )
                for rows in row_sets:
                    # Rows the condition selects only now that their parents are back: children left
                    # without a parent (a table with no foreign key, such as metric samples).
                    orphans = _count(target, rows, params)
                    if orphans and not overwrite:
                        raise RowsExist(
                            f"{orphans} rows of {rows.table} still exist in the live database; overwrite replaces them"
                        )
                    if orphans:
                        target.execute(
                            sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(rows.table), sql.SQL(rows.where)),
                            params,
                        )
                    copied[rows.table] = _copy(source, target, rows, params)
        except psycopg.errors.IntegrityError as exc:
            raise BackupError(f"the restored rows conflict with other rows: {exc.diag.message_primary}") from None
    return copied


def _count(conn: psycopg.Connection[Any], rows: RowSet, params: Mapping[str, Any]) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(rows.table), sql.SQL(rows.where))
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def _copy(
    source: psycopg.Connection[Any], target: psycopg.Connection[Any], rows: RowSet, params: Mapping[str, Any]
) -> int:
    columns = [
        str(name)
        for (name,) in source.execute(
            """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
                 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum""",
            (rows.table,),
        ).fetchall()
    ]
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    select = sql.SQL("SELECT {} FROM {} WHERE {}").format(column_list, sql.Identifier(rows.table), sql.SQL(rows.where))
    # COPY takes no parameters: they are rendered into the statement, quoted by the client.
    rendered = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(
        sql.SQL(psycopg.ClientCursor(source).mogrify(select.as_string(source), params))
    )
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(sql.Identifier(rows.table), column_list)
    with source.cursor().copy(rendered) as reader, target.cursor().copy(copy_in) as writer:
        for block in reader:
            writer.write(block)
    return _count(target, rows, params)
