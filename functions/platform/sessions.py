"""Sessions that follow the account: the origin, not the session, says who the caller is now.

The edge keeps a session for up to ``SESSION_TTL_SECONDS`` and renews it while it is used, so what it
stored at login (the role) can be days old. The origin therefore re-derives every identified caller
from the product's ``users`` table on every request (one primary-key read, joined with this module's
``session_generations``): the role a handler sees is the role the database holds now, and a session
whose account is gone, disabled, or whose generation is no longer the account's is refused with 401
``session_revoked``. The edge destroys a session the origin answered so (``edge_workers/core/upstream.py``).

Bound: a role change, a deletion or a revocation takes effect on the caller's next request that
reaches the origin (every write and every read that is not served from the edge's cache of public
reads). Revoking every session of an account (log out everywhere, a password change, a demotion by an
operator or an owner) is ``revoke_sessions``: one increment of the account's generation, committed
with the change that caused it.

Failure model: the read is part of the request; when the database is down the request fails as any
other would, it never falls back to the session's word.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import Connection

from functions.platform.ports import Row
from shared.envelope import Identity
from shared.errors import Unauthorized

# The account's current generation, as a column of a query over the product's users table aliased ``u``.
SESSION_GENERATION_COLUMN = (
    "COALESCE((SELECT g.generation FROM session_generations g WHERE g.user_id = u.id), 0) AS session_generation"
)


def session_revoked() -> Unauthorized:
    return Unauthorized("this session is no longer valid; log in again", code="session_revoked")


def account_id(user_id: str) -> UUID:
    """The account an identity names; an id that cannot name one is a session that no longer counts."""
    try:
        return UUID(user_id)
    except ValueError:
        raise session_revoked() from None


def current_identity(identity: Identity, account: Row | None) -> Identity:
    """``identity`` as the database says now: ``account`` is the caller's row (``role``, ``email``,
    ``session_generation``), None when the account is gone or may no longer sign in."""
    if account is None or int(account["session_generation"]) != identity.generation:
        raise session_revoked()
    return identity._replace(role=account["role"], email=account["email"])


def login_answer(user: dict[str, Any], account: Row) -> dict[str, Any]:
    """What a login route returns: the user, and the generation the edge's new session is opened under."""
    return {"user": user, "session": {"generation": int(account["session_generation"])}}


def demoted(ranking: tuple[str, ...], before: str, after: str) -> bool:
    """Whether moving from role ``before`` to ``after`` takes rights away; ``ranking`` lists a
    product's roles from least to most powerful. A promotion needs no revocation: the next request
    already sees the new role."""
    return ranking.index(after) < ranking.index(before)


def revoke_sessions(conn: Connection[Row], user_id: Any) -> None:
    """End every session of ``user_id``, in the caller's transaction (committed with its cause)."""
    conn.execute(
        "INSERT INTO session_generations AS g (user_id, generation) VALUES (%s, 1) "
        "ON CONFLICT (user_id) DO UPDATE SET generation = g.generation + 1, revoked_at = now()",
        (user_id,),
    )


def forget_sessions(conn: Connection[Row], user_id: Any) -> None:
    """Drop the generation of an account being deleted (its sessions end with the account)."""
    conn.execute("DELETE FROM session_generations WHERE user_id = %s", (user_id,))
