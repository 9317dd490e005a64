"""PostgreSQL adapter: connection URLs per database and a small pooled handle.

Failure model, and why: a database that is down (killed, restarting, unreachable) must cost a request
milliseconds, not the 30-40 s of unbounded connects and pool waits, and must answer 503 with
``Retry-After`` (``DatabaseUnavailable``), never 500. So:
- every connect is bounded (``CONNECT_TIMEOUT_SECONDS``, libpq's ``connect_timeout``), and so is the
  wait for a pooled connection (``POOL_WAIT_SECONDS``);
- a short circuit breaker (``CircuitBreaker``): once the server could not be reached, requests fail at
  once for ``BREAKER_OPEN_SECONDS``; then one request tries again (the others still fail fast) and
  its outcome closes or re-opens the breaker. Service resumes by itself when the database returns;
- connections are checked as they leave the pool, so the connections a restarted server broke are
  replaced instead of failing one request each; the pool gives up reconnecting after
  ``POOL_WAIT_SECONDS`` (psycopg_pool backs off for minutes otherwise), so the next try starts afresh;
- a transaction that loses its connection is not committed, and the client got no success: a retry
  (with its ``Idempotency-Key``) is safe. Nothing acknowledged is lost.

Every statement carries the current trace (functions/platform/tracing.py) as a sqlcommenter comment,
``/*traceparent='00-...'*/`` at its end, so PostgreSQL's log and ``pg_stat_activity`` name the request
that sent it. Done once, here, by the cursor class every pooled connection uses (``TracedCursor``),
COPY included. The cost is a string concatenation; but a statement's text now differs per request,
so psycopg's automatic prepared statements (same text run 5 times on a connection) do not pay off
across requests: a caller that asks for ``prepare=True`` gets its statement uncommented.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg import Connection, Cursor, sql
from psycopg.abc import Params, Query, QueryNoTemplate
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from functions.platform import tracing
from shared.errors import ServiceUnavailable

DATABASES = ("stepperslife", "agistaffers")
CONNECT_TIMEOUT_SECONDS = 2  # libpq counts whole seconds, and treats 1 as 2
POOL_WAIT_SECONDS = 3.0
BREAKER_OPEN_SECONDS = 3.0


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"

    def __init__(self) -> None:
        super().__init__("the database is unavailable, try again shortly", retry_after=round(BREAKER_OPEN_SECONDS))


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


class CircuitBreaker:
    """Closed until a failure; then open (``allow`` raises) for ``open_seconds``; then one trial passes
    while the others keep failing fast, and its ``succeeded`` or ``failed`` closes or re-opens it."""

    def __init__(self, open_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._trial_running = False

    def allow(self) -> None:
        with self._lock:
            if self._open_until is None:
                return
            if self._trial_running or self._clock() < self._open_until:
                raise DatabaseUnavailable()
            self._trial_running = True

    def succeeded(self) -> None:
        with self._lock:
            self._open_until = None
            self._trial_running = False

    def failed(self) -> None:
        with self._lock:
            self._open_until = self._clock() + self._open_seconds
            self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None


def with_trace_comment(query: Query) -> Query:
    """``query`` with the current trace as a sqlcommenter comment at its end (unchanged outside a trace).
    The traceparent is safe inside a comment: tracing accepts only hex digits and dashes."""
    traceparent = tracing.current_traceparent()
    if traceparent is None or query in ("", b""):  # the pool's liveness check sends an empty statement
        return query
    comment = f" /*traceparent='{traceparent}'*/"
    if isinstance(query, str):
        return query + comment
    if isinstance(query, bytes):
        return query + comment.encode("ascii")
    if isinstance(query, sql.Composable):
        return sql.Composed([query, sql.SQL(comment)])
    return query  # a t-string Template (Python 3.14): left as written


class TracedCursor(Cursor[DictRow]):
    """psycopg's cursor, each statement sent with ``with_trace_comment``."""

    def execute(  # type: ignore[override]  # one signature for psycopg's two overloads (no t-strings here)
        self,
        query: QueryNoTemplate,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> TracedCursor:
        statement = query if prepare else cast("QueryNoTemplate", with_trace_comment(query))
        super().execute(statement, params, prepare=prepare, binary=binary)
        return self

    def executemany(self, query: Query, params_seq: Iterable[Params], *, returning: bool = False) -> None:
        super().executemany(with_trace_comment(query), params_seq, returning=returning)

    @contextmanager
    def copy(self, statement: Query, params: Params | None = None, *, writer: Any = None) -> Iterator[psycopg.Copy]:
        with super().copy(with_trace_comment(statement), params, writer=writer) as copy:
            yield copy


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
            kwargs={
                "row_factory": dict_row,
                "cursor_factory": TracedCursor,
                "autocommit": False,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            },
            open=False,
            name=name,
            timeout=POOL_WAIT_SECONDS,
            reconnect_timeout=POOL_WAIT_SECONDS,
            check=ConnectionPool.check_connection,
        )
        self._pool.open(wait=False)
        self.breaker = CircuitBreaker(BREAKER_OPEN_SECONDS)

    @contextmanager
    def transaction(self) -> Iterator[Connection[dict[str, Any]]]:
        """A connection inside one transaction: committed on success, rolled back on any error.
        ``DatabaseUnavailable`` (503) when the server cannot be reached or the connection breaks."""
        self.breaker.allow()
        conn: Connection[DictRow] | None = None
        try:
            with self._pool.connection() as conn:
                yield conn  # the pool's context manager commits or rolls back
        except PoolTimeout as exc:
            self.breaker.failed()
            raise DatabaseUnavailable() from exc
        except psycopg.OperationalError as exc:
            if conn is None or conn.broken or conn.closed:
                self.breaker.failed()
                raise DatabaseUnavailable() from exc
            self.breaker.succeeded()  # the server answered: this is the statement's error, not an outage
            raise
        except BaseException:
            self.breaker.succeeded()
            raise
        else:
            self.breaker.succeeded()

    @contextmanager
    def outside_transaction(self) -> Iterator[Connection[dict[str, Any]]]:
        """A pooled connection in autocommit mode, for statements a transaction cannot hold
        (``CREATE INDEX CONCURRENTLY``); back in transaction mode before the pool gets it again."""
        with self.transaction() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def ping(self) -> None:
        with self.transaction() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()
