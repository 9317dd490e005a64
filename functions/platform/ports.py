"""What the domain services need from the outside world, as small protocols."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from psycopg import Connection

Row = dict[str, Any]


class TransactionalDatabase(Protocol):
    def transaction(self) -> AbstractContextManager[Connection[Row]]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        ...


class EdgeCache(Protocol):
    def invalidate(self, family: str) -> None:
        """Make every cached edge read of ``family`` (say ``events``) miss from now on."""
        ...
