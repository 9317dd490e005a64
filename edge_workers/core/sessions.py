"""Edge sessions in SESSION_KV (``session:{id}``), carried by a ``__Host-`` cookie.

Ids are 256-bit random values, new at every login (no fixation). The KV TTL removes a session when it
expires; ``expires_at`` in the record is checked too, because KV expiry is not instantaneous
everywhere. A session used past its half-life is renewed (a new ``expires_at`` and cookie Max-Age,
same id): an active user stays signed in while an idle one is dropped, at one KV write per session
per half-life rather than one per request.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from edge_workers.core.ports import Clock, KeyValueStore, RandomSource
from shared.envelope import Identity

COOKIE_NAME = "__Host-session"
KEY_PREFIX = "session:"
ID_BYTES = 32  # 256 bits
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # what token_urlsafe(32) produces
_COOKIE_ATTRIBUTES = "Path=/; HttpOnly; Secure; SameSite=Lax"


class Session(NamedTuple):
    id: str
    identity: Identity
    created_at: int
    expires_at: int


def session_id_from_cookies(cookie_headers: list[str]) -> str | None:
    """The session id from ``Cookie`` headers, if one is present and well-formed."""
    for header in cookie_headers:
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE_NAME:
                value = value.strip().strip('"')
                return value if _ID_PATTERN.match(value) else None
    return None


def session_cookie(session_id: str, max_age: int) -> str:
    return f"{COOKIE_NAME}={session_id}; {_COOKIE_ATTRIBUTES}; Max-Age={max_age}"


def cleared_cookie() -> str:
    return f"{COOKIE_NAME}=; {_COOKIE_ATTRIBUTES}; Max-Age=0"


class SessionStore:
    def __init__(self, kv: KeyValueStore, *, clock: Clock, random: RandomSource, ttl_seconds: int) -> None:
        self._kv = kv
        self._clock = clock
        self._random = random
        self.ttl_seconds = ttl_seconds

    async def create(self, identity: Identity) -> Session:
        now = int(self._clock.now())
        session = Session(
            id=self._random.token_urlsafe(ID_BYTES),
            identity=identity,
            created_at=now,
            expires_at=now + self.ttl_seconds,
        )
        await self._store(session)
        return session

    def needs_renewal(self, session: Session) -> bool:
        return session.expires_at - self._clock.now() < self.ttl_seconds / 2

    async def renew(self, session: Session) -> Session:
        renewed = Session(
            id=session.id,
            identity=session.identity,
            created_at=session.created_at,
            expires_at=int(self._clock.now()) + self.ttl_seconds,
        )
        await self._store(renewed)
        return renewed

    async def _store(self, session: Session) -> None:
        record = {
            "identity": json.loads(session.identity.to_json()),
            "created_at": session.created_at,
            "expires_at": session.expires_at,
        }
        await self._kv.put(KEY_PREFIX + session.id, json.dumps(record), expiration_ttl=self.ttl_seconds)

    async def load(self, session_id: str) -> Session | None:
        if not _ID_PATTERN.match(session_id):
            return None
        raw = await self._kv.get(KEY_PREFIX + session_id)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            identity = Identity.from_json(json.dumps(record["identity"]))
            created_at, expires_at = int(record["created_at"]), int(record["expires_at"])
        except (ValueError, KeyError, TypeError):
            # A record this code did not write is not a session.
            return None
        if expires_at <= self._clock.now():
            return None
        return Session(id=session_id, identity=identity, created_at=created_at, expires_at=expires_at)

    async def destroy(self, session_id: str) -> None:
        if _ID_PATTERN.match(session_id):
            await self._kv.delete(KEY_PREFIX + session_id)
