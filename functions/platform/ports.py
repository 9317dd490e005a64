"""What the domain services need from the outside world, as small protocols."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
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


class ObjectNotFound(LookupError):
    pass


class ObjectTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class PresignedPost:
    """Where and how a browser uploads one object: POST ``fields`` then the file, as multipart."""

    url: str
    fields: dict[str, str]


class ObjectStore(Protocol):
    def get(self, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; ObjectNotFound, or ObjectTooLarge past ``max_bytes`` (read no further)."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None: ...

    def copy(self, source_key: str, destination_key: str) -> None: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def presigned_post(self, key: str, *, content_type: str, max_bytes: int, expires_in_seconds: int) -> PresignedPost:
        """An upload form for exactly ``key`` and ``content_type``, 1 to ``max_bytes`` bytes long."""
        ...
