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


class OutboxFlush(Protocol):
    def flush_after_commit(self) -> None:
        """Hand what was just committed to the transport now; best effort (the scheduled relay catches
        up), so it never raises."""
        ...


class EventInvalidator(Protocol):
    def invalidate_event(self, event_id: str) -> None:
        """Make every cached read of the event and of the listings miss from now on."""
        ...


class EdgeCache(Protocol):
    def invalidate(self, family: str) -> None:
        """Make every cached edge read of ``family`` (say ``events``) miss from now on."""
        ...
