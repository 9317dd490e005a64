"""Users: sign-up, password login and preferences (a change drops the cached recommendations)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from functions.platform.passwords import dummy_hash, hash_password, verify_password
from functions.platform.ports import Row, TransactionalDatabase
from functions.stepperslife.services.recommendations import RecommendationService
from shared.errors import Conflict, Unauthorized

_PUBLIC_COLUMNS = "id, email, name, role, created_at"


def public_user(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "email", "name", "role", "created_at")}


class UserService:
    def __init__(self, db: TransactionalDatabase, *, recommendations: RecommendationService) -> None:
        self._db = db
        self._recommendations = recommendations

    def sign_up(self, *, email: str, name: str, password: str) -> dict[str, Any]:
        password_hash = hash_password(password)
        try:
            with self._db.transaction() as conn:
                row = conn.execute(
                    f"INSERT INTO users (email, name, password_hash) VALUES (%s, %s, %s) RETURNING {_PUBLIC_COLUMNS}",
                    (email.lower(), name, password_hash),
                ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict("an account with this e-mail already exists", code="email_taken") from exc
        assert row is not None
        return public_user(row)

    def authenticate(self, *, email: str, password: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_PUBLIC_COLUMNS}, password_hash FROM users WHERE email = %s", (email.lower(),)
            ).fetchone()
        if row is None:
            verify_password(password, dummy_hash())
            raise Unauthorized("e-mail or password is wrong", code="invalid_credentials")
        if not verify_password(password, row["password_hash"]):
            raise Unauthorized("e-mail or password is wrong", code="invalid_credentials")
        return public_user(row)

    def set_role(self, *, email: str, role: str) -> dict[str, Any] | None:
        """Operator action (CLI): promote or demote an account."""
        with self._db.transaction() as conn:
            row = conn.execute(
                f"UPDATE users SET role = %s, updated_at = now() WHERE email = %s RETURNING {_PUBLIC_COLUMNS}",
                (role, email.lower()),
            ).fetchone()
        return public_user(row) if row else None

    def preferences(self, user_id: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute("SELECT preferences FROM users WHERE id = %s", (user_id,)).fetchone()
        if row is None:
            raise Unauthorized("this account no longer exists", code="unknown_account")
        return dict(row["preferences"])

    def set_preferences(self, user_id: str, preferences: dict[str, Any]) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute(
                "UPDATE users SET preferences = %s::jsonb, updated_at = now() WHERE id = %s RETURNING preferences",
                (json.dumps(preferences), user_id),
            ).fetchone()
        if row is None:
            raise Unauthorized("this account no longer exists", code="unknown_account")
        self._recommendations.forget(user_id)  # they are ranked by these preferences
        return dict(row["preferences"])
