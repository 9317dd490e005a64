"""The restore drill: the latest dump of a database restored into a scratch database and verified, with
the recovery figures measured and recorded; and the check that a drill succeeded recently.

A backup nobody restored is a hope. Every day (and on demand: ``agistack backup drill``) the drill
restores each database's newest dump (restore.py: checked bytes, parallel pg_restore, amcheck,
constraints, row counts and sampled checksums, smoke queries), then drops the scratch copy. What it
measures: RTO = restore + verify seconds (the download is reported apart: on AWS it is a same-region
S3 read); RPO = how old the restored data was when the drill began (the dump's snapshot time); sizes
and restore throughput. Each drill, failed or not, is a row in the drilled database's
``backup_drills`` (migrations/platform/0002) and a CloudWatch embedded-metric line.

Failure model: a drill that fails is recorded as failed with its one-line reason and does not raise
(the schedule must not retry a corrupt dump forever); a drill that cannot even record itself (the
database is down) raises. Silence is the dangerous failure — a schedule that stopped, a role that
lost its grant — so ``freshness`` reads the newest successful row: none within ``STALE_AFTER`` is an
error log line (``BACKUP_DRILL_STALE``, which a CDK metric filter alarms on) and a metric.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from functions.platform.backups.dump import Target
from functions.platform.backups.restore import drop_database, restore_verified
from functions.platform.backups.store import BackupStore, Progress, no_progress

log = logging.getLogger("agistack.backups")

STALE_AFTER = timedelta(hours=26)
METRICS_NAMESPACE = "agistack/backups"
STALE_MARKER = "BACKUP_DRILL_STALE"


@dataclass(frozen=True)
class DrillResult:
    database: str
    started_at: datetime
    finished_at: datetime
    dump_key: str | None = None
    failure: str | None = None
    data_as_of: datetime | None = None
    download_seconds: float = 0.0
    restore_seconds: float = 0.0
    verify_seconds: float = 0.0
    dump_bytes: int = 0
    restored_bytes: int = 0
    tables: int = 0
    rows: int = 0
    indexes_checked: int = 0

    @property
    def succeeded(self) -> bool:
        return self.failure is None

    @property
    def rto_seconds(self) -> float:
        return self.restore_seconds + self.verify_seconds

    @property
    def rpo_seconds(self) -> float | None:
        return (self.started_at - self.data_as_of).total_seconds() if self.data_as_of else None

    @property
    def restore_mb_per_s(self) -> float:
        return self.restored_bytes / 1e6 / self.restore_seconds if self.restore_seconds else 0.0


def scratch_name(prefix: str, database: str) -> str:
    return f"{prefix}{database}_drill_{secrets.token_hex(4)}"


def run_drill(
    store: BackupStore,
    target: Target,
    *,
    server_url: str,
    database_url: Callable[[str], str],
    scratch: str,
    work_dir: Path,
    pg_bin_dir: str | None = None,
    jobs: int = 2,
    dump_key: str | None = None,
    progress: Callable[[str], Progress] = lambda stage: no_progress,
) -> DrillResult:
    """Restore ``dump_key`` (else the newest dump of ``target``) into ``scratch``, verify, drop, record."""
    started_at = datetime.now(UTC)
    key = dump_key
    try:
        key = key or store.latest(target.database).key
        restored = restore_verified(
            store,
            key,
            server_url=server_url,
            database_url=database_url,
            into=scratch,
            work_dir=work_dir,
            pg_bin_dir=pg_bin_dir,
            jobs=jobs,
            progress=progress,
        )
        drop_database(server_url, scratch)
        manifest = restored.manifest
        result = DrillResult(
            database=target.database,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            dump_key=key,
            data_as_of=manifest.data_as_of,
            download_seconds=restored.download_seconds,
            restore_seconds=restored.restore_seconds,
            verify_seconds=restored.verify_seconds,
            dump_bytes=manifest.dump_bytes,
            restored_bytes=restored.restored_bytes,
            tables=restored.verification.tables,
            rows=restored.verification.rows,
            indexes_checked=restored.verification.indexes_checked,
        )
    except Exception as exc:  # any failure is the drill's finding, recorded with its reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        result = DrillResult(
            database=target.database,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            dump_key=key,
            failure=reason[:4000],
        )
    record(target.url, result)
    if result.succeeded:
        log.info(
            "restore drill %s: %s restored and verified; RTO %.1f s, RPO %.0f s",
            target.database, result.dump_key, result.rto_seconds, result.rpo_seconds or 0,
        )  # fmt: skip
    else:
        log.error("restore drill %s FAILED: %s", target.database, result.failure)
    return result


def record(url: str, result: DrillResult) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO backup_drills (dump_key, started_at, finished_at, succeeded, failure, data_as_of,
                   rpo_seconds, download_seconds, restore_seconds, verify_seconds, rto_seconds, dump_bytes,
                   restored_bytes, tables, rows_restored, indexes_checked)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                result.dump_key, result.started_at, result.finished_at, result.succeeded, result.failure,
                result.data_as_of, result.rpo_seconds, result.download_seconds, result.restore_seconds,
                result.verify_seconds, result.rto_seconds, result.dump_bytes, result.restored_bytes,
                result.tables, result.rows, result.indexes_checked,
            ),
        )  # fmt: skip


@dataclass(frozen=True)
class Freshness:
    database: str
    last_success: datetime | None
    checked_at: datetime

    @property
    def hours_since(self) -> float | None:
        if self.last_success is None:
            return None
        return (self.checked_at - self.last_success).total_seconds() / 3600

    @property
    def stale(self) -> bool:
        return self.last_success is None or self.checked_at - self.last_success > STALE_AFTER


def freshness(target: Target, now: datetime | None = None) -> Freshness:
    """When the newest successful drill of ``target`` began; stale (an alert) after ``STALE_AFTER``."""
    with psycopg.connect(target.url, autocommit=True) as conn:
        row = conn.execute("SELECT max(started_at) FROM backup_drills WHERE succeeded").fetchone()
    checked = now or datetime.now(UTC)
    result = Freshness(target.database, row[0] if row else None, checked)
    if result.stale:
        since = result.last_success.isoformat() if result.last_success else "ever"
        log.error("%s %s: no successful restore drill since %s", STALE_MARKER, target.database, since)
    return result


def metrics_line(database: str, values: dict[str, tuple[float, str]], at: datetime | None = None) -> str:
    """A CloudWatch embedded-metric-format log line (Lambda's log turns it into metrics; no API call)."""
    when = at or datetime.now(UTC)
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(when.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["Database"]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }
            ],
        },
        "Database": database,
        **{name: value for name, (value, _) in values.items()},
    }
    return json.dumps(document, separators=(",", ":"))


def drill_metrics(result: DrillResult) -> str:
    values: dict[str, tuple[float, str]] = {"DrillSucceeded": (1.0 if result.succeeded else 0.0, "Count")}
    if result.succeeded:
        values.update(
            {
                "RtoSeconds": (round(result.rto_seconds, 3), "Seconds"),
                "RpoSeconds": (round(result.rpo_seconds or 0.0, 3), "Seconds"),
                "RestoreMBps": (round(result.restore_mb_per_s, 3), "Megabytes/Second"),
                "DumpBytes": (float(result.dump_bytes), "Bytes"),
            }
        )
    return metrics_line(result.database, values, result.finished_at)


def freshness_metrics(result: Freshness) -> str:
    # Never drilled counts as infinitely old: a large finite number keeps the alarm's threshold simple.
    hours = result.hours_since if result.hours_since is not None else 1e6
    return metrics_line(result.database, {"HoursSinceSuccessfulDrill": (round(hours, 3), "None")}, result.checked_at)
