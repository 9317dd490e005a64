"""Idempotency-Key for POSTs: a retried request gets the first response and does nothing twice.

Keys are scoped to (user, route). The first request claims the key before it runs; a concurrent
duplicate sees the claim and gets 409 rather than running twice; a claim whose request died (no
response stored after ``STALE_AFTER``) may be taken over. Reusing a key with another body is a 422.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg

from functions.platform.ports import TransactionalDatabase
from shared.errors import Conflict, ValidationFailed

STALE_AFTER_SECONDS = 60


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


class IdempotencyStore:
    def __init__(self, db: TransactionalDatabase) -> None:
        self._db = db

    def claim(self, user_id: str, route: str, key: str, fingerprint: str) -> StoredResponse | None:
        """Claim ``key``; returns the stored response when the request already ran."""
        with self._db.transaction() as conn:
            try:
                claimed = conn.execute(
                    "INSERT INTO idempotency_keys (user_id, route, key, request_hash) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (user_id, route, key) DO UPDATE SET created_at = now() "
                    f"WHERE idempotency_keys.status_code IS NULL "
                    f"AND idempotency_keys.created_at < now() - interval '{STALE_AFTER_SECONDS} seconds' "
                    "AND idempotency_keys.request_hash = EXCLUDED.request_hash "
                    "RETURNING key",
                    (user_id, route, key, fingerprint),
                ).fetchone()
            except psycopg.errors.CheckViolation as exc:
                raise ValidationFailed("Idempotency-Key must be 1-200 characters of A-Z a-z 0-9 . _ : -") from exc
            if claimed:
                return None
            existing = conn.execute(
                "SELECT request_hash, status_code, response_body FROM idempotency_keys "
                "WHERE user_id = %s AND route = %s AND key = %s",
                (user_id, route, key),
            ).fetchone()
        assert existing is not None
        if existing["request_hash"] != fingerprint:
            raise ValidationFailed(
                "this Idempotency-Key was used with a different request", code="idempotency_key_reused"
            )
        if existing["status_code"] is None:
            raise Conflict("a request with this Idempotency-Key is still running", code="idempotency_in_progress")
        return StoredResponse(existing["status_code"], existing["response_body"])

    def complete(self, user_id: str, route: str, key: str, status: int, body: Any) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE idempotency_keys SET status_code = %s, response_body = %s::jsonb "
                "WHERE user_id = %s AND route = %s AND key = %s",
                (status, json.dumps(body, default=str), user_id, route, key),
            )

    def release(self, user_id: str, route: str, key: str) -> None:
        """Forget a claim whose request failed unexpectedly, so that a retry runs it again."""
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE user_id = %s AND route = %s AND key = %s AND status_code IS NULL",
                (user_id, route, key),
            )

    def purge(self, older_than_hours: int = 24) -> int:
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => %s)",
                (older_than_hours,),
            )
            return cursor.rowcount
