"""One backup: pg_dump (custom format) streamed to the bucket, then its manifest beside it.

Consistency: a REPEATABLE READ transaction exports its snapshot and pg_dump dumps exactly that
snapshot (``--snapshot``); the manifest's statistics are computed in the same transaction, in a
thread, while pg_dump's output is being uploaded. So the manifest describes precisely the data in
the dump, whatever was written meanwhile, and its ``data_as_of`` is when that snapshot was current.

Failure model: the client tools are checked against the server first (tools.py): an older pg_dump is
refused before anything is written. pg_dump failing mid-way aborts the multipart upload: no object
appears. The manifest is written last; a dump without one is an unfinished backup, and a restore
refuses it. Nothing is retried here: the next scheduled run is the retry, and the drill's freshness
alert notices when runs keep failing.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from functions.platform.backups.errors import BackupError
from functions.platform.backups.manifest import Manifest, TableStats, snapshot_stats
from functions.platform.backups.store import BackupStore, Progress, dump_key, no_progress
from functions.platform.backups.tools import PgVersion, libpq_target, tools_for

log = logging.getLogger("agistack.backups")


@dataclass(frozen=True)
class Target:
    """A database to back up: its logical name (in keys and manifests) and its connection URL."""

    database: str
    url: str


def server_version(conn: psycopg.Connection[Any]) -> PgVersion:
    row = conn.execute("SELECT current_setting('server_version')").fetchone()
    assert row is not None
    return PgVersion.parse(str(row[0]))


def create_backup(
    target: Target,
    kind: str,
    store: BackupStore,
    *,
    pg_bin_dir: str | None = None,
    progress: Progress = no_progress,
) -> Manifest:
    started = time.monotonic()
    with psycopg.connect(target.url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        server = server_version(conn)
        tools = tools_for(server, pg_bin_dir)  # refuses an older pg_dump before anything is written
        snapshot_row = conn.execute("SELECT pg_export_snapshot(), now()").fetchone()
        assert snapshot_row is not None
        snapshot, data_as_of = str(snapshot_row[0]), snapshot_row[1]
        key = dump_key(target.database, kind, data_as_of)
        retain_until = store.retain_until(kind, datetime.now(UTC))

        stats: dict[str, Any] = {}

        def compute_stats() -> None:
            try:
                stats["value"] = snapshot_stats(conn)
            except BaseException as exc:  # reported by the main thread
                stats["error"] = exc

        conninfo, env = libpq_target(target.url)
        with tempfile.TemporaryFile() as stderr:
            command = [tools.path("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--dbname", conninfo]
            dumper = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)  # noqa: S603 - our argument list; the tool is a checked PostgreSQL binary
            assert dumper.stdout is not None
            # pg_dump imports the snapshot as it starts; the statistics then read the same one.
            stats_thread = threading.Thread(target=compute_stats, name="backup-stats")
            stats_thread.start()
            try:
                sha256 = store.upload(key, _Checked(dumper, stderr), retain_until, progress)
            finally:
                dumper.stdout.close()
                dumper.wait()
                stats_thread.join()
        if "error" in stats:
            raise BackupError(f"{target.database}: table statistics failed: {stats['error']}")
        tables: list[TableStats]
        tables, indexes, database_bytes = stats["value"]
    head = store.s3.head_object(Bucket=store.bucket, Key=key)
    manifest = Manifest(
        database=target.database,
        kind=kind,
        dump_key=key,
        server_version=server.text,
        server_major=server.major,
        pg_dump_version=tools.version.text,
        pg_dump_major=tools.version.major,
        data_as_of=data_as_of,
        finished_at=datetime.now(UTC),
        dump_seconds=round(time.monotonic() - started, 3),
        dump_bytes=int(head["ContentLength"]),
        sha256=sha256,
        database_bytes=database_bytes,
        indexes=indexes,
        tables=tuple(tables),
    )
    store.put_manifest(manifest, retain_until)
    log.info(
        "backup %s: %s (%d bytes, %d tables, %d rows) in %.1f s",
        target.database,
        key,
        manifest.dump_bytes,
        len(tables),
        manifest.rows,
        manifest.dump_seconds,
    )
    return manifest


class _Checked:
    """pg_dump's stdout as a stream that raises, instead of ending quietly, when pg_dump failed."""

    def __init__(self, process: subprocess.Popen[bytes], stderr: Any) -> None:
        self._process = process
        self._stderr = stderr

    def read(self, size: int = -1, /) -> bytes:
        assert self._process.stdout is not None
        chunk = self._process.stdout.read(size)
        if not chunk and self._process.wait() != 0:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            raise BackupError(f"pg_dump failed: {lines[-1] if lines else f'exit {self._process.returncode}'}")
        return chunk
