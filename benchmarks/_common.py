"""What the benchmarks share: real PostgreSQL/Redis (configured or embedded), fresh databases, and
figures printed as median and spread."""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.services import start_postgres, start_redis
from functions.platform.adapters.postgres import DATABASES
from functions.platform.config import DatabaseSettings, EdgeSettings, RedisSettings, Settings
from functions.platform.migrations import migrate_all

SIGNING_SECRET = "benchmark-signing-secret-" + "x" * 32


@dataclass(frozen=True)
class BenchEnvironment:
    settings: Settings
    postgres: str  # "configured" or "embedded"


@contextmanager
def environment() -> Iterator[BenchEnvironment]:
    """Fresh, migrated databases (dropped afterwards) on DATABASE_URL or an embedded server."""
    stops = []
    scratch = Path(tempfile.mkdtemp(prefix="agistack-bench-"))
    server_url = os.environ.get("DATABASE_URL")
    kind = "configured"
    if not server_url:
        postgres = start_postgres(scratch / "pg")
        stops.append(postgres.stop)
        server_url, kind = postgres.url, "embedded"
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_service = start_redis(scratch / "redis")
        stops.append(redis_service.stop)
        redis_url = redis_service.url
    prefix = f"bench_{secrets.token_hex(3)}_"
    migrate_all(server_url, name_prefix=prefix)
    try:
        yield BenchEnvironment(
            Settings(
                database=DatabaseSettings(server_url, name_prefix=prefix),
                edge=EdgeSettings(SIGNING_SECRET),
                redis=RedisSettings(redis_url),
            ),
            kind,
        )
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for database in DATABASES:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(prefix + database))
                )
        for stop in reversed(stops):
            stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}, "
        f"stdev {statistics.pstdev(values):.3f} (n={len(values)})"
    )
