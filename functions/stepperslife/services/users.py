"""Users: sign-up, password login, the account's sessions and preferences (a change drops the cached
recommendations).

Failure model:
- Login failures are one answer, ``Unauthorized(code="invalid_credentials")``, for an unknown e-mail
  and a wrong password alike; unknown e-mails are checked against a dummy hash so they take as long.
  Each attempt passes the per-account throttle first (``functions/platform/login_throttle.py``): many
  guesses at one account, from any number of addresses, are slowed to one per few minutes.
- The role of a signed-in caller is read from the database on every request (``current_identity``);
  a role change, a password change and "log out everywhere" also end every session of the account
  (``functions/platform/sessions.py``), committed with the change.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from functions.platform.login_throttle import LoginThrottle
from functions.platform.password_policy import check_password
from functions.platform.passwords import dummy_hash, hash_password, verify_password
from functions.platform.ports import Row, TransactionalDatabase
from functions.platform.sessions import (
    SESSION_GENERATION_COLUMN,
    account_id,
    current_identity,
    demoted,
    login_answer,
    revoke_sessions,
)
from functions.stepperslife.services.recommendations import RecommendationService
from shared.envelope import Identity
from shared.errors import Conflict, Forbidden, Unauthorized

# Least to most powerful: a customer buys, a user also organizes, an admin does everything.
ROLE_RANKING = ("customer", "user", "admin")
_PUBLIC_COLUMNS = "u.id, u.email, u.name, u.role, u.created_at"


def public_user(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "email", "name", "role", "created_at")}


def _wrong_credentials() -> Unauthorized:
    return Unauthorized("e-mail or password is wrong", code="invalid_credentials")


class UserService:
    def __init__(
        self, db: TransactionalDatabase, *, recommendations: RecommendationService, throttle: LoginThrottle
    ) -> None:
        self._db = db
        self._recommendations = recommendations
        self._throttle = throttle

    def sign_up(self, *, email: str, name: str, password: str) -> dict[str, Any]:
        check_password(password, email=email, names=[name])
        password_hash = hash_password(password)
        try:
            with self._db.transaction() as conn:
                row = conn.execute(
                    f"INSERT INTO users AS u (email, name, password_hash) VALUES (%s, %s, %s) "
                    f"RETURNING {_PUBLIC_COLUMNS}",
                    (email.lower(), name, password_hash),
                ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict("an account with this e-mail already exists", code="email_taken") from exc
        assert row is not None
        return public_user(row)

    def authenticate(self, *, email: str, password: str) -> dict[str, Any]:
        """The login answer (``functions.platform.sessions.login_answer``) for the right password."""
        self._throttle.attempt(email)
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_PUBLIC_COLUMNS}, u.password_hash, {SESSION_GENERATION_COLUMN} FROM users u "
                "WHERE u.email = %s",
                (email.lower(),),
            ).fetchone()
        if row is None:
            verify_password(password, dummy_hash())
            raise _wrong_credentials()
        if not verify_password(password, row["password_hash"]):
            raise _wrong_credentials()
        self._throttle.succeeded(email)
        return login_answer(public_user(row), row)

    def current_identity(self, identity: Identity) -> Identity:
        """The caller as the database says now (``functions.platform.sessions``)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT u.role, u.email, {SESSION_GENERATION_COLUMN} FROM users u WHERE u.id = %s",
                (account_id(identity.user_id),),
            ).fetchone()
        return current_identity(identity, row)

    def set_role(self, *, email: str, role: str) -> dict[str, Any] | None:
        """Operator action (CLI): promote or demote an account. The next request sees the new role; a
        demotion also ends the account's sessions."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "UPDATE users u SET role = %s, updated_at = now() "
                "FROM (SELECT id, role FROM users WHERE email = %s FOR UPDATE) previous WHERE u.id = previous.id "
                f"RETURNING {_PUBLIC_COLUMNS}, previous.role AS previous_role",
                (role, email.lower()),
            ).fetchone()
            if row is not None and demoted(ROLE_RANKING, row["previous_role"], role):
                revoke_sessions(conn, row["id"])
        return public_user(row) if row else None

    def change_password(self, identity: Identity, *, current_password: str, new_password: str) -> None:
        """Replace the password (the current one proves the caller knows it) and end every session."""
        self._throttle.attempt(identity.email)
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT u.email, u.name, u.password_hash FROM users u WHERE u.id = %s", (identity.user_id,)
            ).fetchone()
        if row is None:
            raise Unauthorized("this account no longer exists", code="session_revoked")
        if not verify_password(current_password, row["password_hash"]):
            # 403, not 401: the session is fine, the proof is not.
            raise Forbidden("the current password is wrong", code="wrong_password")
        self._throttle.succeeded(identity.email)
        check_password(new_password, email=row["email"], names=[row["name"]])
        password_hash = hash_password(new_password)
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
                (password_hash, identity.user_id),
            )
            revoke_sessions(conn, identity.user_id)

    def end_sessions(self, identity: Identity) -> None:
        """Log out everywhere: every session of the caller's account, this one included."""
        with self._db.transaction() as conn:
            revoke_sessions(conn, identity.user_id)

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
