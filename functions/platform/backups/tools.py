"""The PostgreSQL client tools (pg_dump, pg_restore) that match the server, and how to run them.

The classic silent backup failure is a version mismatch: an old pg_dump refuses a newer server (or,
worse, a wrapper picks another installation), and nobody reads the cron mail. So the tools are
chosen by asking the server its version and running each candidate's ``--version``: the directory
whose major version equals the server's wins, else the nearest newer one (pg_dump reads older
servers). A configured ``PG_BIN_DIR`` is used alone. Nothing suitable is a ``ToolVersionMismatch``
that names what was found, raised before any byte is written.

Candidates, in order: ``PG_BIN_DIR``; Debian's ``/usr/lib/postgresql/N/bin``; RHEL's
``/usr/pgsql-N/bin``; the Lambda layer's ``/opt/pgclient/pginstall/bin`` (cdk/backups.py); ``PATH``
(last: on Debian that is a wrapper that guesses a version).

Passwords never reach a command line (``ps`` shows it to every user): the tools get a connection
string without it and the password in ``PGPASSWORD``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from functions.platform.backups.errors import ToolVersionMismatch

# Where cdk/backups.py's layer puts the client tools on Lambda.
LAMBDA_LAYER_BIN = "/opt/pgclient/pginstall/bin"
_CANDIDATE_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", LAMBDA_LAYER_BIN)
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgVersion:
    major: int
    text: str  # "15.20", "18.6"

    @classmethod
    def parse(cls, output: str) -> PgVersion:
        """From ``pg_dump --version`` ("pg_dump (PostgreSQL) 15.20 (Debian ...)") or a header line."""
        match = _VERSION.search(output) or re.search(r"(\d+)(?:\.(\d+))?", output)
        if not match:
            raise ValueError(f"no PostgreSQL version in {output!r}")
        major, minor = match.group(1), match.group(2)
        return cls(int(major), f"{major}.{minor}" if minor else major)


@dataclass(frozen=True)
class PgTools:
    bin_dir: Path
    version: PgVersion

    def path(self, tool: str) -> str:
        return str(self.bin_dir / tool)


def tool_version(bin_dir: Path, tool: str = "pg_dump") -> PgVersion | None:
    path = bin_dir / tool
    if not os.access(path, os.X_OK):
        return None
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=True)  # noqa: S603 - our argument list; the tool is a checked PostgreSQL binary
    except (OSError, subprocess.SubprocessError):
        return None
    return PgVersion.parse(out.stdout)


def candidate_dirs() -> list[Path]:
    found = [Path(path) for pattern in _CANDIDATE_GLOBS for path in sorted(glob.glob(pattern))]
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path).parent)
    return list(dict.fromkeys(found))


def tools_for(server: PgVersion, configured: str | None) -> PgTools:
    """pg_dump/pg_restore able to dump ``server`` and restore its dumps; never older than it."""
    if configured:
        version = tool_version(Path(configured))
        if version is None:
            raise ToolVersionMismatch(f"PG_BIN_DIR={configured} holds no runnable pg_dump")
        if version.major < server.major:
            raise ToolVersionMismatch(
                f"pg_dump {version.text} in PG_BIN_DIR={configured} is older than the server ({server.text}): "
                f"it cannot make a correct dump; point PG_BIN_DIR at PostgreSQL {server.major} client tools"
            )
        return PgTools(Path(configured), version)
    seen: list[PgTools] = []
    for bin_dir in candidate_dirs():
        version = tool_version(bin_dir)
        if version and tool_version(bin_dir, "pg_restore"):
            seen.append(PgTools(bin_dir, version))
    usable = sorted((t for t in seen if t.version.major >= server.major), key=lambda t: t.version.major)
    if not usable:
        found = ", ".join(f"{t.version.text} ({t.bin_dir})" for t in seen) or "none"
        raise ToolVersionMismatch(
            f"no pg_dump for PostgreSQL {server.text} (found: {found}); set PG_BIN_DIR to its client tools"
        )
    return usable[0]


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A connection string without the password, and the environment that carries it."""
    params: dict[str, Any] = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    return make_conninfo(**params), env
