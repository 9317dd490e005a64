"""`agistack backup create|list|verify|restore|drill`: the operator's side of functions/platform/backups.

Against the running dev stack (its state file) or the configured services (DATABASE_URL,
AWS_ENDPOINT_URL, PG_BIN_DIR...). Long work shows progress bars with ETA (rich); sizes and times are
human-readable; any failure exits non-zero with one line saying why. ``restore`` makes a new database
by default; over a live database only with ``--over-live`` and the database's name typed back (or
given as ``--confirm NAME``), and then the live one is kept under another name, not dropped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from functions.platform import topology
from functions.platform.adapters.postgres import DATABASES

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
BYTE_STAGES = ("upload", "download")


def human_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@contextmanager
def progress_bars() -> Iterator[Callable[[str], Callable[[int, int | None], None]]]:
    """``stage -> callback(done, total)``: a bar per stage (bytes for transfers, items otherwise)."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bars:
        tasks: dict[str, Any] = {}

        def for_stage(stage: str) -> Callable[[int, int | None], None]:
            def update(done: int, total: int | None) -> None:
                if stage not in tasks:
                    tasks[stage] = bars.add_task(stage, total=total, amount="")
                if stage in BYTE_STAGES:
                    amount = decimal(done) + (f" / {decimal(total)}" if total else "")
                else:
                    amount = f"{done}/{total}" if total else str(done)
                bars.update(tasks[stage], completed=done, total=total, amount=amount)

            return update

        yield for_stage


def _backups(args: argparse.Namespace) -> Any:
    from devstack.cli import settings_from_running_stack
    from functions.platform.backups import composition

    return composition.configure(settings_from_running_stack(Path(args.data_dir)))


def _databases(args: argparse.Namespace) -> list[str]:
    return [args.database] if args.database else list(DATABASES)


def _create(args: argparse.Namespace) -> int:
    backups = _backups(args)
    for database in _databases(args):
        with progress_bars() as stage:
            manifest = backups.create(database, args.kind, progress=stage("upload"))
        out.print(
            f"{database}: {manifest.dump_key}  {decimal(manifest.dump_bytes)} "
            f"(database {decimal(manifest.database_bytes)}), "
            f"{len(manifest.tables)} tables, {manifest.rows} rows, in {human_seconds(manifest.dump_seconds)}"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    backups = _backups(args)
    found = backups.store.list(args.database, args.kind)
    table = Table("taken (UTC)", "age", "database", "kind", "size", "storage", "key")
    now = datetime.now(UTC)
    for backup in found:
        table.add_row(
            f"{backup.taken_at:%Y-%m-%d %H:%M:%S}",
            human_seconds((now - backup.taken_at).total_seconds()),
            backup.database,
            backup.kind,
            decimal(backup.size),
            backup.storage_class,
            backup.key,
        )
    out.print(table if found else f"no backups in s3://{backups.store.bucket}")
    return 0


def _latest_or(backups: Any, args: argparse.Namespace, database: str) -> str:
    return str(args.key or backups.store.latest(database).key)


def _verify(args: argparse.Namespace) -> int:
    """The bytes and the archive, without restoring: size, SHA-256, versions, pg_restore --list."""
    import tempfile

    from functions.platform.backups.restore import check_archive, fetch, read_archive, restore_tools

    backups = _backups(args)
    for database in _databases(args) if not args.key else [args.key.split("/")[1]]:
        key = _latest_or(backups, args, database)
        with tempfile.TemporaryDirectory(prefix="agistack-verify-") as work, progress_bars() as stage:
            manifest, path = fetch(backups.store, key, Path(work), stage("download"))
            tools = restore_tools(backups.settings.database.url, manifest, backups.settings.backup.pg_bin_dir)
            check_archive(manifest, read_archive(tools, path))
        out.print(
            f"{key}: intact ({decimal(manifest.dump_bytes)}, SHA-256 matches, pg_dump {manifest.pg_dump_version} "
            f"for server {manifest.server_version}, {len(manifest.tables)} tables as listed)"
        )
    return 0


def _drill(args: argparse.Namespace) -> int:
    backups = _backups(args)
    failed = 0
    for database in _databases(args):
        with progress_bars() as stage:
            result = backups.drill(database, dump_key=args.key, progress=stage)
        if not result.succeeded:
            err.print(f"[red]{database}: drill FAILED[/red]: {result.failure}")
            failed += 1
            continue
        out.print(
            f"{database}: {result.dump_key} restored and verified: {result.tables} tables, {result.rows} rows, "
            f"{result.indexes_checked} indexes checked\n"
            f"  RTO {human_seconds(result.rto_seconds)} (restore {human_seconds(result.restore_seconds)} + verify "
            f"{human_seconds(result.verify_seconds)}; download {human_seconds(result.download_seconds)}), "
            f"RPO {human_seconds(result.rpo_seconds or 0)}, dump {decimal(result.dump_bytes)}, restored "
            f"{decimal(result.restored_bytes)} at {result.restore_mb_per_s:.1f} MB/s"
        )
    if failed:
        raise SystemExit(f"agistack backup drill: {failed} of {len(_databases(args))} drills failed")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from functions.platform.backups.restore import swap_into_place

    backups = _backups(args)
    database = args.database
    if args.customer:
        return _restore_customer(backups, args)
    live = backups.real_name(database)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    if args.over_live:
        confirmed = args.confirm or (
            input(f"This replaces the live database {live!r}. Type its name to confirm: ") if sys.stdin.isatty() else ""
        )
        if confirmed != live:
            raise SystemExit(f"agistack backup restore: not confirmed (expected {live!r}); nothing was changed")
    into = args.into or f"{live}_restored_{stamp}"
    key = _latest_or(backups, args, database)
    with progress_bars() as stage:
        restored = backups.restore(key, into=into, progress=stage)
    summary = (
        f"{key} restored and verified in {human_seconds(restored.restore_seconds + restored.verify_seconds)} "
        f"(data as of {restored.manifest.data_as_of:%Y-%m-%d %H:%M:%S} UTC)"
    )
    if not args.over_live:
        out.print(f"{summary} into the new database {into!r}; the live database was not touched")
        return 0
    kept = f"{live}_before_{stamp}"
    swap_into_place(backups.settings.database.url, restored=into, live=live, keep_as=kept)
    out.print(f"{summary}; it is now {live!r}. The previous one is kept as {kept!r} (drop it when satisfied)")
    return 0


def _restore_customer(backups: Any, args: argparse.Namespace) -> int:
    from functions.agistaffers.services.customer_restore import CUSTOMER_ROWS, DATABASE

    if args.database != DATABASE:
        raise SystemExit(f"agistack backup restore: --customer restores from the {DATABASE} database")
    with progress_bars() as stage:
        key, copied = backups.restore_rows(
            DATABASE,
            CUSTOMER_ROWS,
            {"customer_id": args.customer},
            overwrite=args.overwrite,
            dump_key=args.key,
            progress=stage,
        )
    if not copied.get("customers"):
        raise SystemExit(f"agistack backup restore: customer {args.customer} is not in {key}")
    rows = ", ".join(f"{table} {count}" for table, count in copied.items())
    out.print(f"customer {args.customer} restored from {key}: {rows}")
    return 0


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Any failure: exit 1 with one line saying why (no traceback for an operator)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except SystemExit as stop:
            if isinstance(stop.code, str):
                err.print(stop.code, markup=False, highlight=False)
                return 1
            return int(stop.code or 0)
        except KeyboardInterrupt:
            err.print(f"agistack backup {args.backup_command}: interrupted")
            return 130
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            err.print(f"agistack backup {args.backup_command}: {reason}", markup=False, highlight=False)
            return 1

    return run


def add_commands(commands: Any) -> None:
    backup = commands.add_parser("backup", help="database backups: create, list, verify, restore, drill")
    sub = backup.add_subparsers(dest="backup_command", required=True)
    kinds = [kind.name for kind in topology.BACKUP_KINDS]

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        parser.add_argument("--data-dir", default=".agistack")
        parser.set_defaults(handler=_run(handler))
        return parser

    create = command("create", "dump the databases to the backup bucket now", _create)
    create.add_argument("--database", choices=DATABASES, help="one database (default: both)")
    create.add_argument("--kind", choices=kinds, default=topology.DAILY_BACKUP.name)

    listing = command("list", "the backups in the bucket, oldest first", _list)
    listing.add_argument("--database", choices=DATABASES)
    listing.add_argument("--kind", choices=kinds)

    verify = command("verify", "check a dump's bytes and archive against its manifest (no restore)", _verify)
    verify.add_argument("--database", choices=DATABASES, help="its newest dump (default: each database's)")
    verify.add_argument("--key", help="a dump's key (default: the newest)")

    drill = command("drill", "restore the newest dumps into scratch databases and verify them", _drill)
    drill.add_argument("--database", choices=DATABASES)
    drill.add_argument("--key", help="a dump's key (default: the newest)")

    restore = command("restore", "restore a dump into a new database (or, confirmed, over the live one)", _restore)
    restore.add_argument("--database", choices=DATABASES, required=True)
    restore.add_argument("--key", help="a dump's key (default: the newest)")
    restore.add_argument("--into", help="the new database's name (default: <database>_restored_<time>)")
    restore.add_argument("--over-live", action="store_true", help="replace the live database (asks to confirm)")
    restore.add_argument("--confirm", help="the live database's name, instead of typing it when asked")
    restore.add_argument("--customer", help="restore only this AGI Staffers customer's rows into the live database")
    restore.add_argument("--overwrite", action="store_true", help="with --customer: replace rows that still exist")
