"""What can go wrong with a backup, each with a one-line reason an operator can act on."""

from __future__ import annotations


class BackupError(RuntimeError):
    """A backup, restore or drill that did not happen; the message is the one-line reason."""


class ToolVersionMismatch(BackupError):
    """The client tools cannot dump or restore this server (older than it, or missing)."""


class BackupRefused(BackupError):
    """A dump that must not be restored: corrupt, truncated, without manifest, made by an older tool,
    or restored data that does not match what was dumped."""


class RowsExist(BackupError):
    """An isolated restore whose rows still exist in the live database (pass overwrite to replace them)."""
