"""One trace id end to end: a request through the local edge into the real API and PostgreSQL. The
same id is in the edge's log line, the API's JSON log lines and PostgreSQL's statement log; the
request's metric record is on the dev stack's ``/metrics`` with its labels.

The test turns statement logging on for its own database only, and reads the server's log file
(``pg_current_logfile()``, else Debian's /var/log/postgresql/postgresql-<major>-main.log): a server
whose log this process cannot read (an embedded one logging to its own stderr) skips the PostgreSQL
part with the reason printed.
"""

from __future__ import annotations

import importlib
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack import metrics
from devstack.local_api import local_server
from edge_workers.core.config import GatewayConfig
from edge_workers.local import EdgeServer
from functions.platform.config import Settings
from tests.conftest import SIGNING_SECRET
from tests.logs import json_log_lines

TRACE = uuid.uuid4().hex
CLIENT_TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
ROUTE = "GET /events/{event_id}"
_ENTRY_START = re.compile(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


class _Records:
    def __init__(self) -> None:
        self.lines: list[Mapping[str, object]] = []

    def write(self, record: Mapping[str, object]) -> None:
        self.lines.append(dict(record))


@dataclass
class Stack:
    edge_url: str
    metrics_url: str
    edge_log: _Records


@pytest.fixture
def stack(configured_app: Any, clean_stepperslife: None, tmp_path: Path) -> Iterator[Stack]:
    # Both products' apps in one process, as in the dev stack: each configures the process's logging.
    importlib.import_module("functions.agistaffers.app")
    api = local_server(configured_app, "127.0.0.1", 0)
    api.start()
    metrics_url, stop_metrics = metrics.serve("127.0.0.1", 0)
    config = GatewayConfig.from_mapping({"EDGE_SIGNING_SECRET": SIGNING_SECRET, "STEPPERSLIFE_ORIGIN": api.url})
    edge_log = _Records()
    edge = EdgeServer("127.0.0.1", 0, tmp_path, config, log_sink=edge_log)
    edge.start()
    yield Stack(edge.url, metrics_url, edge_log)
    edge.stop()
    stop_metrics()
    api.stop()


class StatementLog:
    """The server's log from now on, with statement logging on for ``database`` only."""

    def __init__(self, server_url: str, database: str) -> None:
        self._server_url, self._database = server_url, database
        with psycopg.connect(server_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_current_logfile(), current_setting('data_directory'), "
                "current_setting('server_version_num')::int / 10000"
            ).fetchone()
        assert row is not None
        logfile, data_dir, major = row
        self.path = Path(data_dir) / logfile if logfile else Path(f"/var/log/postgresql/postgresql-{major}-main.log")
        try:
            self._offset = self.path.stat().st_size
            self.path.open("rb").close()
        except OSError as exc:
            pytest.skip(f"PostgreSQL's log is not readable here ({self.path}: {exc.strerror}); not checked")
        self._set("all")

    def _set(self, level: str) -> None:
        with psycopg.connect(self._server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET log_statement = {}").format(
                    sql.Identifier(self._database), sql.Literal(level)
                )
            )
            # The pool's open connections keep the old setting: end them (the pool checks each
            # connection as it lends it, and replaces these).
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self._database,),
            )

    def close(self) -> None:
        self._set("none")

    def lines_with(self, text: str, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                # One entry per statement, over several lines when the statement has them.
                entries = _ENTRY_START.split(log.read().decode("utf-8", "replace"))
                found = [entry for entry in entries if text in entry]
            if found or time.monotonic() > deadline:
                assert found, f"{text!r} is not in {self.path}"
                return found
            time.sleep(0.1)


@pytest.fixture
def statement_log(pg_server_url: str, settings: Settings) -> Iterator[StatementLog]:
    log = StatementLog(pg_server_url, settings.database.name_prefix + "stepperslife")
    yield log
    log.close()


def _get(url: str, headers: Mapping[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_one_trace_id_in_the_edge_line_the_api_lines_postgres_log_and_metrics(
    stack: Stack, statement_log: StatementLog
) -> None:
    with json_log_lines() as api_lines:
        # A caller's trace is continued; without one, the edge starts it.
        continued = _get(f"{stack.edge_url}/api/events/{uuid.uuid4()}", {"traceparent": CLIENT_TRACEPARENT})
        started = _get(f"{stack.edge_url}/api/events/{uuid.uuid4()}")
    assert continued == started == 404
    edge_traces = [str(line["trace_id"]) for line in stack.edge_log.lines if line.get("msg") == "request"]
    assert edge_traces[0] == TRACE and edge_traces[1] != TRACE
    for trace_id in edge_traces:
        api_request_lines = [line for line in api_lines if line.get("trace_id") == trace_id]
        assert any(line.get("route") == ROUTE and line.get("status") == 404 for line in api_request_lines)
        assert all(line["service"] == "stepperslife" for line in api_request_lines)
        statements = statement_log.lines_with(f"/*traceparent='00-{trace_id}-")
        assert any("FROM events" in line for line in statements), statements

    with urllib.request.urlopen(stack.metrics_url, timeout=5) as response:
        exposition = response.read().decode()
    labels = f'route="{ROUTE}",service="stepperslife",status_class="4xx"'
    assert f"agistack_api_requests_total{{{labels}}} 2.0" in exposition
    assert f"agistack_api_latency_seconds_count{{{labels}}} 2.0" in exposition
