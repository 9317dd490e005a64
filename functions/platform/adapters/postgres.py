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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

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
            kwargs={"row_factory": dict_row, "autocommit": False, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
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

    def ping(self) -> None:
        with self.transaction() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()
