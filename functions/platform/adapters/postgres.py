"""PostgreSQL adapter: connection URLs per database and a small pooled handle."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import Connection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

DATABASES = ("stepperslife", "agistaffers")


def url_for_database(server_url: str, database: str) -> str:
    """The same server as ``server_url``, another database: both platforms share one server."""
    params: dict[str, Any] = conninfo_to_dict(server_url)
    params["dbname"] = database
    return make_conninfo(**params)


def redact(url: str) -> str:
    """A URL fit for a log line: the password never leaves the process."""
    params: dict[str, Any] = conninfo_to_dict(url)
    if params.get("password"):
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo(**params)


class Database:
    """A connection pool on one database. Rows come back as dicts."""

    def __init__(self, url: str, *, max_size: int = 10, name: str = "db") -> None:
        # min_size=0: a Lambda that never touches the database opens no connection; open=False then
        # open(wait=False) so constructing the pool never blocks a cold start.
        self._pool: ConnectionPool[Connection[DictRow]] = ConnectionPool(
            url,
            connection_class=Connection[DictRow],
            min_size=0,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": False},
            open=False,
            name=name,
            timeout=10.0,
        )
        self._pool.open(wait=False)

    @contextmanager
    def transaction(self) -> Iterator[Connection[dict[str, Any]]]:
        """A connection inside one transaction: committed on success, rolled back on any error."""
        with self._pool.connection() as conn:
            yield conn  # the pool's context manager commits or rolls back

    def ping(self) -> None:
        with self._pool.connection(timeout=3.0) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()
