"""The dev stack's ``/metrics``: the functions' CloudWatch EMF records, readable as Prometheus text.

In AWS, CloudWatch reads the EMF records the functions write to stdout (functions/platform/telemetry.py).
Locally nothing reads them, so the dev stack takes the same records instead (``telemetry.redirect``)
and keeps them in a ``prometheus_client`` registry (the maintained client; it writes the exposition
format) served on its own small port (``agistack dev --metrics-port``, default 9464) at ``/metrics``.
A separate server, not a route on the APIs: those answer only the edge's signed requests.

Mapping: each EMF metric becomes ``agistack_<name>``, its dimensions the labels; a ``Count`` is a
counter (``..._total``), ``Milliseconds`` a histogram in seconds (``..._seconds``), anything else a
gauge holding the last value. grafana/agistack.json charts these names.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from functions.platform import telemetry

log = logging.getLogger("agistack.dev")

DEFAULT_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses by convention
_Metric = Counter | Histogram | Gauge


def prometheus_name(emf_name: str, unit: str) -> str:
    """The name of the Prometheus series an EMF metric becomes (without a counter's ``_total``)."""
    if unit == "Milliseconds":
        return f"{telemetry.NAMESPACE}_{emf_name}_seconds"
    return f"{telemetry.NAMESPACE}_{emf_name}"


class EmfToPrometheus:
    """Turns EMF records into Prometheus metrics in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def __call__(self, record: telemetry.EmfRecord) -> None:
        for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
            labels = sorted({name for group in directive.get("Dimensions", []) for name in group})
            label_values = {name: str(record.get(name, "")) for name in labels}
            for definition in directive.get("Metrics", []):
                name, unit = str(definition["Name"]), str(definition.get("Unit", "None"))
                values = record.get(name)
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, int | float):
                        self._observe(name, unit, labels, label_values, float(value))

    def _observe(self, name: str, unit: str, labels: list[str], label_values: dict[str, str], value: float) -> None:
        metric = self._metric(name, unit, labels)
        try:
            child = metric.labels(**label_values)
        except ValueError:  # the same name seen before with other dimensions
            log.warning("metric %s arrived with other dimensions (%s); not shown", name, ", ".join(labels))
            return
        if isinstance(child, Counter):
            child.inc(value)
        elif isinstance(child, Histogram):
            child.observe(value / 1000)
        else:
            child.set(value)

    def _metric(self, name: str, unit: str, labels: list[str]) -> _Metric:
        series = prometheus_name(name, unit)
        with self._lock:
            metric = self._metrics.get(series)
            if metric is None:
                documentation = f"EMF metric {name} ({unit})"
                if unit == "Count":
                    metric = Counter(series, documentation, labels, registry=self.registry)
                elif unit == "Milliseconds":
                    metric = Histogram(series, documentation, labels, registry=self.registry)
                else:
                    metric = Gauge(series, documentation, labels, registry=self.registry)
                self._metrics[series] = metric
        return metric


def serve(host: str, port: int) -> tuple[str, Callable[[], None]]:
    """Listen to the functions' metric records and serve them at ``http://host:port/metrics``; returns
    that URL and what stops it all."""
    bridge = EmfToPrometheus()
    remove_listener = telemetry.redirect(bridge)
    server, _thread = start_http_server(port, addr=host, registry=bridge.registry)

    def stop() -> None:
        remove_listener()
        server.shutdown()
        server.server_close()

    return f"http://{host}:{server.server_port}/metrics", stop
