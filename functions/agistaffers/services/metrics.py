"""Metrics ingest: a site's agent posts a batch of samples with the site's ingest token.

Failure model:
- No token, an unknown one, a rotated one or a deleted site's: ``Unauthorized(code="invalid_ingest_token")``;
  a cancelled customer's site: ``Forbidden(code="customer_inactive")``. Nothing tells the caller
  whether a token ever existed.
- A body that is not JSON/NDJSON, not a list of objects, or longer than ``MAX_BATCH_SAMPLES``: the
  whole request is refused (400/413), nothing is stored.
- Otherwise each sample is judged on its own: a bad one (unknown metric, non-finite value, timestamp
  in the future beyond ``MAX_SKEW_SECONDS`` or older than the plan's retention, a label off the
  allow-list) is refused and counted under its reason; the good ones are stored. The answer gives the
  counts, a count per reason and the first few refusals with their index, so an agent can fix itself.
- The good samples go in with one binary ``COPY`` (psycopg 3) in one transaction: all of them or
  none. A missing partition (the maintenance schedule has not run yet on a fresh database) is
  created on the spot and the COPY retried once.
Why COPY: it streams rows in PostgreSQL's binary format with no per-row statement, parse or round
trip; ``benchmarks/metrics_ingest.py`` measures it against ``executemany``.
An accepted batch is durable: the ingest keeps PostgreSQL's synchronous commit although waiting for
the WAL flush is about half of a 5,000-sample COPY's time here (``synchronous_commit = off`` doubled
COPY's rate), because an agent that got its answer does not send the batch again.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import Connection
from psycopg.types.json import Jsonb

from functions.agistaffers.services import partitions
from functions.agistaffers.services.sites import ingest_token_hash
from functions.platform.ports import Row, TransactionalDatabase
from shared import jsonbody
from shared.errors import BadRequest, Forbidden, PayloadTooLarge, Unauthorized, ValidationFailed

# The documented batch: at most this many samples per request (and the body under the edge's 1 MiB).
MAX_BATCH_SAMPLES = 5000
# How far in the future a timestamp may be (agents' clocks drift); the rollups re-read this much of
# the past on every run, so a sample this late still lands in its bucket.
MAX_SKEW_SECONDS = 120
# Known metrics; anything else must follow the custom naming rule.
METRICS = frozenset(
    {
        "cpu_percent",
        "memory_percent",
        "disk_percent",
        "load_average",
        "response_time_ms",
        "requests_per_minute",
        "error_rate_percent",
        "bandwidth_bytes",
        "up",  # 1 when the site answered, 0 when it did not: the status page's uptime
    }
)
CUSTOM_METRIC = re.compile(r"^custom\.[a-z][a-z0-9_]{0,39}$")
LABELS = frozenset({"instance", "region", "path", "status_class"})
MAX_LABEL_VALUE = 64
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_./:-]{1,64}$")
# How many refusals are itemised in the answer (all are counted).
MAX_ITEMISED = 20

COPY_SQL = "COPY metric_samples (site_id, metric, at, value, labels) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = ["uuid", "varchar", "timestamptz", "float8", "jsonb"]


class IngestSite(NamedTuple):
    site_id: UUID
    retention_days: int


class Refusal(NamedTuple):
    sample: int  # its index in the batch
    reason: str


SampleRow = tuple[UUID, str, datetime, float, Jsonb | None]


def token_from_headers(headers: dict[str, str]) -> str:
    """The ingest token from ``Authorization: Bearer`` or ``X-Ingest-Token`` (header names lower-case)."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-ingest-token", "").strip()


def parse_batch(body: bytes, content_type: str) -> list[Any]:
    """The samples of a JSON body (``{"samples": [...]}`` or a bare list) or NDJSON (one per line)."""
    items: Any
    try:
        if content_type in ("application/x-ndjson", "application/jsonl"):
            items = [jsonbody.loads(line) for line in body.splitlines() if line.strip()]
        else:
            data = jsonbody.loads(body or b"null")
            items = data.get("samples") if isinstance(data, dict) and set(data) == {"samples"} else data
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON or NDJSON", code="malformed_json") from exc
    if not isinstance(items, list):
        raise ValidationFailed('send {"samples": [...]}, a JSON list or NDJSON', code="invalid_batch")
    if len(items) > MAX_BATCH_SAMPLES:
        raise PayloadTooLarge(
            f"a batch holds at most {MAX_BATCH_SAMPLES} samples",
            details={"max_samples": MAX_BATCH_SAMPLES, "samples": len(items)},
        )
    return items


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds (a number) or an RFC 3339 string with its offset; None when neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 32503680000:
            return None
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def _labels(value: Any) -> Jsonb | str | None:
    """The labels as stored, or the reason they are refused (a str)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or len(value) > len(LABELS):
        return "invalid_labels"
    for name, label in value.items():
        if name not in LABELS:
            return "unknown_label"
        if not isinstance(label, str) or not _LABEL_VALUE.match(label):
            return "invalid_labels"
    return Jsonb(value)


def validate_samples(site: IngestSite, items: Sequence[Any], now: datetime) -> tuple[list[SampleRow], list[Refusal]]:
    """Each item judged on its own: the rows to store and the refusals, in order."""
    newest = now + timedelta(seconds=MAX_SKEW_SECONDS)
    oldest = now - timedelta(days=site.retention_days)
    rows: list[SampleRow] = []
    refused: list[Refusal] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not {"metric", "value", "at"} <= item.keys() <= {
            "metric",
            "value",
            "at",
            "labels",
        }:
            refused.append(Refusal(index, "invalid_sample"))
            continue
        metric, value = item["metric"], item["value"]
        if not isinstance(metric, str) or (metric not in METRICS and not CUSTOM_METRIC.match(metric)):
            refused.append(Refusal(index, "unknown_metric"))
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            refused.append(Refusal(index, "invalid_value"))
            continue
        at = _timestamp(item["at"])
        if at is None:
            refused.append(Refusal(index, "invalid_timestamp"))
            continue
        if at > newest:
            refused.append(Refusal(index, "timestamp_in_future"))
            continue
        if at < oldest:
            refused.append(Refusal(index, "timestamp_beyond_retention"))
            continue
        labels = _labels(item.get("labels"))
        if isinstance(labels, str):
            refused.append(Refusal(index, labels))
            continue
        rows.append((site.site_id, metric, at, float(value), labels))
    return rows, refused


def copy_samples(conn: Connection[Row], rows: Iterable[SampleRow]) -> None:
    """Stream rows into ``metric_samples`` with one binary COPY, inside the caller's transaction."""
    with conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)


def ingest_answer(accepted: int, refused: Sequence[Refusal]) -> dict[str, Any]:
    return {
        "accepted": accepted,
        "refused": len(refused),
        "reasons": dict(Counter(refusal.reason for refusal in refused)),
        "refusals": [{"index": refusal.sample, "reason": refusal.reason} for refusal in refused[:MAX_ITEMISED]],
        "max_batch_samples": MAX_BATCH_SAMPLES,
    }


class MetricsIngest:
    def __init__(self, db: TransactionalDatabase) -> None:
        self._db = db

    def site_for_token(self, token: str) -> IngestSite:
        if not token:
            raise Unauthorized("send the site's ingest token as a bearer token", code="invalid_ingest_token")
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT s.id, c.status, p.metrics_retention_days FROM customer_sites s "
                "JOIN customers c ON c.id = s.customer_id JOIN plans p ON p.name = c.plan "
                "WHERE s.ingest_token_hash = %s AND s.status <> 'deleted'",
                (ingest_token_hash(token),),
            ).fetchone()
        if row is None:
            raise Unauthorized("this ingest token is not valid", code="invalid_ingest_token")
        if row["status"] == "cancelled":
            raise Forbidden("this account is cancelled", code="customer_inactive")
        return IngestSite(row["id"], row["metrics_retention_days"])

    def ingest(self, token: str, items: Sequence[Any], *, now: datetime | None = None) -> dict[str, Any]:
        return self.ingest_for(self.site_for_token(token), items, now=now)

    def ingest_for(self, site: IngestSite, items: Sequence[Any], *, now: datetime | None = None) -> dict[str, Any]:
        """Validate and store a batch for a site whose token was checked (``site_for_token``)."""
        rows, refused = validate_samples(site, items, now or datetime.now(UTC))
        if rows:
            self.store(rows)
        return ingest_answer(len(rows), refused)

    def store(self, rows: Sequence[SampleRow]) -> None:
        try:
            with self._db.transaction() as conn:
                copy_samples(conn, rows)
        except psycopg.errors.CheckViolation as exc:
            # "no partition of relation found for row": the schedule has not created it yet.
            if exc.diag.table_name != "metric_samples":
                raise
            with self._db.transaction() as conn:
                partitions.maintain(conn, datetime.now(UTC))
            with self._db.transaction() as conn:
                copy_samples(conn, rows)
