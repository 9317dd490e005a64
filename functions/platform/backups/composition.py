"""The backups' composition root: settings in, the bucket and the operations on both databases out.

The platform owns backups (no product does: both databases live on one server and are dumped alike),
so they have their own installed container beside the products'. Lambda builds it from the
environment on first use; the dev stack, the CLI and tests install one with ``configure``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from functions.platform.adapters.postgres import DATABASES, url_for_database
from functions.platform.backups.drill import DrillResult, Freshness, freshness, run_drill, scratch_name
from functions.platform.backups.dump import Target, create_backup
from functions.platform.backups.manifest import Manifest
from functions.platform.backups.restore import Restored, drop_database, restore_verified
from functions.platform.backups.store import BackupStore, Progress, no_progress
from functions.platform.backups.subset import RowSet, copy_rows
from functions.platform.composition import Installed, aws_client
from functions.platform.config import Settings


@dataclass
class Backups:
    settings: Settings

    @cached_property
    def store(self) -> BackupStore:
        return BackupStore(lambda: aws_client(self.settings, "s3"), self.settings.aws.backup_bucket)

    @property
    def databases(self) -> tuple[str, ...]:
        return DATABASES

    def target(self, database: str) -> Target:
        if database not in DATABASES:
            raise ValueError(f"unknown database {database!r}; known: {', '.join(DATABASES)}")
        return Target(database, self.settings.database_url_for(database))

    def database_url(self, name: str) -> str:
        """A database on the same server, by its real name."""
        return url_for_database(self.settings.database.url, name)

    def real_name(self, database: str) -> str:
        return self.settings.database.name_prefix + database

    def create(self, database: str, kind: str, progress: Progress = no_progress) -> Manifest:
        return create_backup(
            self.target(database), kind, self.store, pg_bin_dir=self.settings.backup.pg_bin_dir, progress=progress
        )

    def drill(
        self,
        database: str,
        *,
        dump_key: str | None = None,
        progress: Callable[[str], Progress] = lambda stage: no_progress,
    ) -> DrillResult:
        with tempfile.TemporaryDirectory(prefix="agistack-drill-", dir=self.settings.backup.work_dir) as work:
            return run_drill(
                self.store,
                self.target(database),
                server_url=self.settings.database.url,
                database_url=self.database_url,
                scratch=scratch_name(self.settings.database.name_prefix, database),
                work_dir=Path(work),
                pg_bin_dir=self.settings.backup.pg_bin_dir,
                jobs=self.settings.backup.restore_jobs,
                dump_key=dump_key,
                progress=progress,
            )

    def restore(
        self, dump_key: str, *, into: str, progress: Callable[[str], Progress] = lambda stage: no_progress
    ) -> Restored:
        """Fetch, check, restore ``dump_key`` into the new database ``into`` and verify it (restore.py),
        working under the configured ``BACKUP_WORK_DIR``."""
        with tempfile.TemporaryDirectory(prefix="agistack-restore-", dir=self.settings.backup.work_dir) as work:
            return restore_verified(
                self.store,
                dump_key,
                server_url=self.settings.database.url,
                database_url=self.database_url,
                into=into,
                work_dir=Path(work),
                pg_bin_dir=self.settings.backup.pg_bin_dir,
                jobs=self.settings.backup.restore_jobs,
                progress=progress,
            )

    def restore_rows(
        self,
        database: str,
        row_sets: Sequence[RowSet],
        params: Mapping[str, Any],
        *,
        overwrite: bool,
        dump_key: str | None = None,
        progress: Callable[[str], Progress] = lambda stage: no_progress,
    ) -> tuple[str, dict[str, int]]:
        """Restore a dump (else the newest) into a scratch database, verify it, and copy ``row_sets``
        into the live database (subset.py); the scratch copy is dropped. Returns (dump key, counts)."""
        key = dump_key or self.store.latest(database).key
        scratch = scratch_name(self.settings.database.name_prefix, database)
        self.restore(key, into=scratch, progress=progress)
        try:
            copied = copy_rows(
                self.database_url(scratch), self.target(database).url, row_sets, params, overwrite=overwrite
            )
        finally:
            drop_database(self.settings.database.url, scratch)
        return key, copied

    def freshness(self, database: str) -> Freshness:
        return freshness(self.target(database))

    def close(self) -> None:
        return None


_installed = Installed(Backups)
configure = _installed.configure
backups = _installed.get
