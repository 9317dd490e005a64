"""What the trace and the telemetry cost (functions/platform/tracing.py, telemetry.py, the PostgreSQL
adapter's sqlcommenter comment).

Three figures, each against a baseline measured in the same run:
- a SQL round trip (``SELECT 1`` through ``Database``) inside a trace (the comment added) vs outside one;
- one EMF metric record through Powertools (``telemetry.record_request``) vs ``json.dumps`` of the same
  record written by hand (what Powertools replaces);
- the cold import of the SteppersLife app: the share of it that Powertools' Logger costs
  (``python -X importtime``, cumulative microseconds of ``aws_lambda_powertools`` in that import).

    python -m benchmarks.telemetry    (DATABASE_URL / REDIS_URL, else embedded servers)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks._common import environment, spread
from functions.platform import telemetry, tracing
from functions.platform.adapters.postgres import Database

ROUNDS = 7
STATEMENTS = 1000
RECORDS = 2000
IMPORTS = 5
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _per_call_us(run: Callable[[], None], calls: int) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / calls * 1e6


def sql_round_trips(db: Database) -> tuple[list[float], list[float]]:
    def statements() -> None:
        with db.transaction() as conn:
            for _ in range(STATEMENTS):
                conn.execute("SELECT 1")

    plain, traced = [], []
    statements()  # warm the pool
    for _ in range(ROUNDS):
        plain.append(_per_call_us(statements, STATEMENTS))
        with tracing.traced(TRACEPARENT):
            traced.append(_per_call_us(statements, STATEMENTS))
    return plain, traced


def metric_records() -> tuple[list[float], list[float]]:
    sink: list[str] = []
    undo = telemetry.redirect(lambda record: None)
    record = {
        "_aws": {
            "Timestamp": 0,
            "CloudWatchMetrics": [
                {
                    "Namespace": "agistack",
                    "Dimensions": [["route", "status_class", "service"]],
                    "Metrics": [
                        {"Name": "api_requests", "Unit": "Count"},
                        {"Name": "api_latency", "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "route": "GET /events",
        "status_class": "2xx",
        "service": "stepperslife",
        "api_requests": [1.0],
        "api_latency": [3.2],
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }

    def by_hand() -> None:
        for _ in range(RECORDS):
            sink.append(json.dumps(record, separators=(",", ":")))
        sink.clear()

    def powertools() -> None:
        for _ in range(RECORDS):
            telemetry.record_request("stepperslife", "GET /events", 200, 3.2)

    hand, emf = [], []
    try:
        with tracing.traced(TRACEPARENT):
            powertools()  # first use imports the provider
            for _ in range(ROUNDS):
                hand.append(_per_call_us(by_hand, RECORDS))
                emf.append(_per_call_us(powertools, RECORDS))
    finally:
        undo()
    return hand, emf


def cold_imports() -> tuple[list[float], list[float]]:
    """(whole app import, of which Powertools) in ms, each from a fresh interpreter."""
    app, powertools = [], []
    for _ in range(IMPORTS):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import functions.stepperslife.app"],
            capture_output=True,
            text=True,
            check=True,
        )
        cumulative = _cumulative(result.stderr)
        app.append(cumulative["functions.stepperslife.app"] / 1000)
        powertools.append(cumulative.get("aws_lambda_powertools", 0) / 1000)
    return app, powertools


def _cumulative(importtime: str) -> dict[str, int]:
    """Cumulative microseconds per module name, as ``-X importtime`` reports them (first import only)."""
    found: dict[str, int] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        if cumulative.strip().isdigit():
            found.setdefault(name.strip(), int(cumulative.strip()))
    return found


def main() -> None:
    with environment() as env:
        db = Database(env.settings.database_url_for("stepperslife"), max_size=1)
        try:
            plain, traced = sql_round_trips(db)
        finally:
            db.close()
    hand, emf = metric_records()
    app, powertools = cold_imports()
    print(f"SQL round trip, no trace (baseline), us: {spread(plain)}")
    print(f"SQL round trip, traced (comment), us:   {spread(traced)}")
    print(f"metric record by hand (baseline), us:   {spread(hand)}")
    print(f"metric record via Powertools, us:       {spread(emf)}")
    print(f"cold import of the app, ms:             {spread(app)}")
    print(f"  of which aws_lambda_powertools, ms:   {spread(powertools)}")
    summary = {
        "benchmark": "telemetry",
        "postgres": env.postgres,
        "sql_us_plain": round(statistics.median(plain), 1),
        "sql_us_traced": round(statistics.median(traced), 1),
        "sql_traced_ratio": round(statistics.median(traced) / statistics.median(plain), 3),
        "metric_record_us_by_hand": round(statistics.median(hand), 1),
        "metric_record_us_powertools": round(statistics.median(emf), 1),
        "metric_record_ratio": round(statistics.median(emf) / statistics.median(hand), 2),
        "app_import_ms": round(statistics.median(app), 1),
        "powertools_import_ms": round(statistics.median(powertools), 1),
        "powertools_import_share": round(statistics.median(powertools) / statistics.median(app), 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
