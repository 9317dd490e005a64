"""Lambda SnapStart runtime hooks: no connection survives a snapshot.

With SnapStart (cdk/snapstart.py turns it on) Lambda runs the init (imports, the app's module-level
code) once when a version is published, snapshots the memory, and starts every execution environment
from a copy of it. A socket opened before the snapshot is dead after a restore (and would be shared
by every copy), so before the snapshot and again after each restore every process-wide container
(``Installed``) drops its database pool and Redis client; the next request builds them anew from the
same settings. Secrets were read, if at all, into those settings: nothing to refetch.

``snapshot_restore_py`` exists only in Lambda's Python runtime; elsewhere (tests, the dev stack) it
is absent and ``register_hooks`` does nothing.
"""

from __future__ import annotations

import logging

from functions.platform.composition import Installed

log = logging.getLogger("agistack.snapstart")


def reopen_connections() -> None:
    """The hook itself: every installed container closes its connections and rebuilds on next use."""
    for installed in list(Installed.every):
        installed.reopen()
    log.info("snapstart: connections dropped, reopened on first use")


def register_hooks() -> bool:
    """Register ``reopen_connections`` before the snapshot and after each restore; whether it could."""
    try:
        import snapshot_restore_py  # type: ignore[import-not-found]  # only in Lambda's runtime
    except ImportError:
        return False
    snapshot_restore_py.register_before_snapshot(reopen_connections)
    snapshot_restore_py.register_after_restore(reopen_connections)
    return True
