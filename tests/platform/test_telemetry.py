"""Logs, metric records and the trace that ties them (functions/platform/telemetry.py, tracing.py,
queues.py), the dev stack's Prometheus view of the records (devstack/metrics.py) and the Grafana
dashboard that charts them. No server needed."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from devstack.metrics import EmfToPrometheus, prometheus_name
from functions.platform import telemetry, tracing
from functions.platform.queues import process_batch
from shared.tracecontext import TraceParent
from tests.logs import json_log_lines

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "agistack.json"


@pytest.fixture
def records() -> Iterator[list[telemetry.EmfRecord]]:
    captured: list[telemetry.EmfRecord] = []
    undo = telemetry.redirect(captured.append)
    yield captured
    undo()


@pytest.mark.parametrize("dimension", ["user_id", "site_id", "event_id", "email", "trace_id"])
def test_a_high_cardinality_dimension_is_refused(dimension: str, records: list[telemetry.EmfRecord]) -> None:
    with pytest.raises(telemetry.ForbiddenDimension, match=dimension):
        telemetry.emit(
            "stepperslife", {"route": "GET /events", dimension: "x"}, [telemetry.Measurement("n", "Count", 1)]
        )
    assert records == []


def test_a_record_is_emf_with_the_trace_id_in_its_metadata(records: list[telemetry.EmfRecord]) -> None:
    with tracing.traced(TRACEPARENT):
        telemetry.record_request("stepperslife", "GET /events/{event_id}", 404, 12.5)
    telemetry.record_request("stepperslife", "GET /events", 200, 3.0)  # outside a trace
    inside, outside = records
    directive = inside["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "agistack"
    assert sorted(directive["Dimensions"][0]) == ["route", "service", "status_class"]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        telemetry.API_REQUESTS: "Count",
        telemetry.API_LATENCY: "Milliseconds",
    }
    assert (inside["route"], inside["status_class"], inside["service"]) == (
        "GET /events/{event_id}",
        "4xx",
        "stepperslife",
    )
    assert inside["trace_id"] == TRACE and inside[telemetry.API_LATENCY] == [12.5]
    assert "trace_id" not in outside and outside["status_class"] == "2xx"


def test_records_go_to_stdout_unless_redirected(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.record_request("agistaffers", "GET /sites", 200, 1.0)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["service"] == "agistaffers" and line[telemetry.API_REQUESTS] == [1.0]


def test_every_log_line_is_json_with_the_service_and_the_trace_id() -> None:
    # As in the dev stack: both products' apps configure the process's logging, the last one wins...
    telemetry.configure_logging("stepperslife")
    telemetry.configure_logging("agistaffers")
    with json_log_lines() as lines:
        with tracing.traced(TRACEPARENT), telemetry.serving("stepperslife"):
            logging.getLogger("agistack.api").info("request", extra={"route": "GET /events"})
        logging.getLogger("agistack.outbox").warning("outside any trace")
    inside, outside = lines
    # ...but a line logged while serving a product names that product.
    assert (inside["service"], inside["trace_id"], inside["route"]) == ("stepperslife", TRACE, "GET /events")
    assert inside["message"] == "request" and inside["level"] == "INFO"
    assert "trace_id" not in outside and outside["level"] == "WARNING"  # Powertools leaves out empty keys
    assert outside["service"] == "agistaffers"


class _SqsRecord:
    """What Chalice hands a queue handler: ``to_dict()`` gives Lambda's event record."""

    def __init__(self, body: str, message_id: str, attributes: dict[str, Any] | None = None) -> None:
        self._raw = {"body": body, "messageId": message_id, "messageAttributes": attributes or {}}

    def to_dict(self) -> dict[str, Any]:
        return self._raw


def test_queue_messages_run_in_the_trace_that_enqueued_them(records: list[telemetry.EmfRecord]) -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    seen: dict[str, TraceParent | None] = {}

    def handle(message: Any) -> None:
        seen[message.message_id] = tracing.current()
        if message.message_id == "fails":
            raise RuntimeError("try again")

    batch = [
        _SqsRecord("{}", "attribute", {"traceparent": {"stringValue": TRACEPARENT, "dataType": "String"}}),
        # Through EventBridge: no SQS attributes, the envelope's field.
        _SqsRecord(json.dumps({"topic": "a.b", "traceparent": f"00-{other}-b7ad6b7169203331-00"}), "envelope"),
        _SqsRecord("{}", "malformed", {"traceparent": {"stringValue": f"00-{'0' * 32}-b7ad6b7169203331-01"}}),
        _SqsRecord("not json", "fails"),
    ]
    result = process_batch(batch, handle, permanent=ValueError, service="stepperslife", queue="domain-events")
    assert result == {"batchItemFailures": [{"itemIdentifier": "fails"}]}
    assert seen["attribute"] is not None and seen["attribute"].trace_id == TRACE
    assert seen["attribute"].span_id != "00f067aa0ba902b7"  # a span of its own in the same trace
    assert seen["envelope"] is not None and seen["envelope"].trace_id == other
    for fresh in ("malformed", "fails"):
        trace = seen[fresh]
        assert trace is not None and trace.trace_id not in (TRACE, other, "0" * 32)
    assert tracing.current() is None  # nothing leaks past the batch
    assert [(r["queue"], r["outcome"], r.get("trace_id")) for r in records] == [
        ("domain-events", "ok", TRACE),
        ("domain-events", "ok", other),
        ("domain-events", "ok", seen["malformed"].trace_id if seen["malformed"] else None),
        ("domain-events", "retried", seen["fails"].trace_id if seen["fails"] else None),
    ]


def test_the_prometheus_view_counts_requests_by_their_dimensions(records: list[telemetry.EmfRecord]) -> None:
    bridge = EmfToPrometheus()
    for status in (200, 201, 503):
        telemetry.record_request("stepperslife", "POST /events", status, 20.0)
    for record in records:
        bridge(record)
    text = generate_latest(bridge.registry).decode()
    labels = 'route="POST /events",service="stepperslife",status_class="2xx"'
    assert f"agistack_api_requests_total{{{labels}}} 2.0" in text
    assert 'agistack_api_requests_total{route="POST /events",service="stepperslife",status_class="5xx"} 1.0' in text
    assert f"agistack_api_latency_seconds_count{{{labels}}} 2.0" in text
    assert f"agistack_api_latency_seconds_sum{{{labels}}} 0.04" in text


def _emitted_series(records: list[telemetry.EmfRecord]) -> set[str]:
    """The Prometheus series names of every metric the functions emit, as the dev stack exposes them."""
    telemetry.record_request("stepperslife", "GET /events", 200, 1.0)
    telemetry.record_message("agistaffers", "agi-provisioning", "ok", 1.0)
    names: set[str] = set()
    for record in records:
        for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            base = prometheus_name(metric["Name"], metric["Unit"])
            suffixes = ("_total",) if metric["Unit"] == "Count" else ("_bucket", "_sum", "_count")
            names.update(base + suffix for suffix in suffixes)
    return names


def test_the_dashboard_has_a_stable_uid_and_charts_only_metrics_the_code_emits(
    records: list[telemetry.EmfRecord],
) -> None:
    dashboards = sorted(DASHBOARD.parent.glob("*.json"))
    uids = [json.loads(path.read_text())["uid"] for path in dashboards]
    assert len(uids) == len(set(uids))  # unique across the folder
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "agistack-functions"
    emitted = _emitted_series(records)
    charted: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bagistack_[a-z_]+", target["expr"]))
            assert names and names <= emitted, (panel["title"], names - emitted)
            charted |= names
    # Every family the code emits has a panel.
    assert {name.rsplit("_", 1)[0] for name in emitted} <= {name.rsplit("_", 1)[0] for name in charted}


def test_each_scheduled_handler_runs_in_a_trace_of_its_own() -> None:
    from devstack.handlers import scheduled_handlers
    from functions.agistaffers.app import app as agistaffers_app
    from functions.stepperslife.app import app as stepperslife_app

    seen: list[str | None] = []

    @tracing.in_new_trace
    def handler(event: dict[str, Any]) -> None:
        seen.append(tracing.current_trace_id())

    handler({})
    handler({})
    assert None not in seen and seen[0] != seen[1] and tracing.current() is None
    wrapper_code = handler.__code__
    for app in (stepperslife_app, agistaffers_app):
        schedules = scheduled_handlers(app)
        assert schedules
        for schedule in schedules:
            function = getattr(schedule.function, "func", schedule.function)
            assert function.__code__ is wrapper_code, f"{schedule.name} runs outside a trace of its own"
