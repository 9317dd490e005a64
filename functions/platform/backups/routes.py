"""The backup schedules, as a Chalice blueprint any product's app can register (SteppersLife's does).

Registered by one app only, so each schedule runs once: SteppersLife's, whose functions already
carry the backup bucket's name and grants and are given the PostgreSQL client layer (cdk/backups.py);
AGI Staffers' app stays a pure API. The handlers cover both databases (they share one server).

- every 15 minutes: an ``incremental`` backup (the local RPO; see functions/platform/backups/__init__.py)
- 02:00 UTC daily: the ``daily`` full backup; 02:30 UTC on Sundays: the ``weekly`` archive
- 04:00 UTC daily: the restore drill of each database's newest dump
- hourly: the freshness check (no successful drill in 26 hours is an alert)

A database whose backup fails does not stop the other's; the handler then raises, so the
invocation counts as an error (Lambda's Errors metric, the log) after both were attempted.
Each drill and freshness result is also printed as an embedded-metric line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chalice.app import Blueprint, CloudWatchEvent, Cron, Rate

from functions.platform import topology
from functions.platform.backups.composition import backups
from functions.platform.backups.drill import drill_metrics, freshness_metrics
from functions.platform.backups.errors import BackupError
from functions.platform.tracing import in_new_trace

log = logging.getLogger("agistack.backups")
bp = Blueprint(__name__)


def _each_database(action: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    failed: list[str] = []
    for database in backups().databases:
        try:
            results[database] = action(database)
        except Exception as exc:
            log.exception("backup of %s failed", database)
            results[database] = {"error": str(exc)}
            failed.append(f"{database}: {exc}")
    if failed:
        raise BackupError("; ".join(failed))
    return results


def _backup(kind: str) -> dict[str, Any]:
    def one(database: str) -> dict[str, Any]:
        manifest = backups().create(database, kind)
        return {"key": manifest.dump_key, "bytes": manifest.dump_bytes, "seconds": manifest.dump_seconds}

    return _each_database(one)


@bp.schedule(Rate(15, unit=Rate.MINUTES))
@in_new_trace
def backup_incremental(event: CloudWatchEvent) -> dict[str, Any]:
    return _backup(topology.INCREMENTAL_BACKUP.name)


@bp.schedule(Cron(0, 2, "*", "*", "?", "*"))
@in_new_trace
def backup_daily(event: CloudWatchEvent) -> dict[str, Any]:
    return _backup(topology.DAILY_BACKUP.name)


@bp.schedule(Cron(30, 2, "?", "*", "SUN", "*"))
@in_new_trace
def backup_weekly(event: CloudWatchEvent) -> dict[str, Any]:
    return _backup(topology.WEEKLY_BACKUP.name)


@bp.schedule(Cron(0, 4, "*", "*", "?", "*"))
@in_new_trace
def backup_drill(event: CloudWatchEvent) -> dict[str, Any]:
    """Drills never raise for a bad dump (the finding is recorded); the freshness check alarms."""
    results: dict[str, Any] = {}
    for database in backups().databases:
        result = backups().drill(database)
        print(drill_metrics(result), flush=True)  # EMF: Lambda's log is the metric pipeline
        results[database] = {"succeeded": result.succeeded, "failure": result.failure, "rto_s": result.rto_seconds}
    return results


@bp.schedule(Rate(1, unit=Rate.HOURS))
@in_new_trace
def backup_freshness(event: CloudWatchEvent) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for database in backups().databases:
        result = backups().freshness(database)
        print(freshness_metrics(result), flush=True)
        results[database] = {"stale": result.stale, "hours_since": result.hours_since}
    return results
