"""Accounts: sign-up, login, who the caller is now, and a customer's team (members and invitations).

Failure model:
- Login failures are one answer, ``Unauthorized(code="invalid_credentials")``, whether the e-mail is
  unknown, the password wrong, the user disabled or the customer cancelled: no oracle. Unknown e-mails
  are verified against a dummy hash so they take as long as known ones. Each attempt passes the
  platform's per-account throttle first (``functions/platform/login_throttle.py``).
- Passwords follow the platform's policy (``functions/platform/password_policy.py``).
- ``actor()`` re-reads the user's role, customer and customer status on every request, so a role change,
  a removal, a disabled user or a cancelled customer takes effect on the next request, not at the end of
  a session; a user who is gone is ``Unauthorized(code="session_revoked")``. A demotion by an owner,
  and "log out everywhere", also end every session of the account (``functions/platform/sessions.py``).
- Team changes lock the customer row (``SELECT ... FOR UPDATE``), so concurrent invitations cannot
  exceed the plan's ``max_members`` and concurrent removals cannot leave a customer without an owner.
- Users of a suspended customer may read but change nothing (``require_writable``).
- Invitation tokens are shown once; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, NamedTuple

import psycopg
from psycopg import Connection

from functions.agistaffers.services import parse_uuid
from functions.agistaffers.services.plans import PLAN_COLUMNS, Plan, load_plan
from functions.platform.login_throttle import LoginThrottle
from functions.platform.password_policy import MAX_PASSWORD_LENGTH, check_password
from functions.platform.passwords import dummy_hash, hash_password, verify_password
from functions.platform.ports import Row, TransactionalDatabase
from functions.platform.sessions import (
    SESSION_GENERATION_COLUMN,
    current_identity,
    demoted,
    forget_sessions,
    login_answer,
    revoke_sessions,
    session_revoked,
)
from shared.envelope import Identity
from shared.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed

MAX_NAME_LENGTH = 255
TEAM_ROLES = ("owner", "member")
TEAM_ROLES_RANKING = ("member", "owner")  # least to most powerful
INVITATION_DAYS = 7

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_USER_COLUMNS = "u.id, u.email, u.name, u.role, u.customer_id, u.disabled_at, u.created_at"
# An invitation's state, computed where now() is: open ones past expires_at are "expired".
_INVITATION_COLUMNS = (
    "i.id, i.customer_id, i.email, i.role, i.invited_by, i.created_at, i.expires_at, i.accepted_at, i.revoked_at, "
    "CASE WHEN i.accepted_at IS NOT NULL THEN 'accepted' WHEN i.revoked_at IS NOT NULL THEN 'revoked' "
    "WHEN i.expires_at <= now() THEN 'expired' ELSE 'pending' END AS status"
)
_OPEN = "i.accepted_at IS NULL AND i.revoked_at IS NULL"


class Actor(NamedTuple):
    """Who is calling, as the database says now (not as the session said at login)."""

    user_id: str
    role: str
    customer_id: str | None
    customer_status: str | None
    email: str

    @property
    def is_staff(self) -> bool:
        return self.role == "admin"


def check_writable(status: str | None) -> None:
    """Refuse a write by a customer in ``status`` (None: staff, who belong to no customer)."""
    if status == "suspended":
        raise Forbidden("this account is suspended: it can be read but not changed", code="customer_suspended")
    if status == "cancelled":
        raise Forbidden("this account is cancelled", code="customer_cancelled")


def require_writable(actor: Actor) -> None:
    """Every customer-side write calls this first; writes that lock the customer row check again."""
    check_writable(actor.customer_status)


def require_customer(actor: Actor) -> str:
    """The actor's customer id; staff, who belong to no customer, are refused."""
    if actor.customer_id is None:
        raise Forbidden("this action is for a customer's users", code="customer_required")
    return actor.customer_id


def require_owner(actor: Actor) -> str:
    customer_id = require_customer(actor)
    if actor.role != "owner":
        raise Forbidden("only an owner of the account can do this", code="owner_only")
    return customer_id


def normalise_email(email: Any) -> str:
    if not isinstance(email, str) or len(email) > 255 or not _EMAIL.match(email.strip()):
        raise ValidationFailed("not a valid e-mail address", code="invalid_email")
    return email.strip().lower()


def check_name(name: Any, *, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_LENGTH or "\x00" in name:
        raise ValidationFailed(f"{field} is 1 to {MAX_NAME_LENGTH} characters", code=f"invalid_{field}")
    return name.strip()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def public_user(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "email", "name", "role", "customer_id")}


def public_member(row: Row) -> dict[str, Any]:
    return {**public_user(row), "disabled_at": row["disabled_at"], "created_at": row["created_at"]}


def public_invitation(row: Row) -> dict[str, Any]:
    keys = ("id", "customer_id", "email", "role", "invited_by", "status", "created_at", "expires_at")
    return {key: row[key] for key in (*keys, "accepted_at", "revoked_at")}


def _lock_customer(conn: Connection[Row], customer_id: str) -> tuple[Row, Plan]:
    """The customer row, locked for the rest of the transaction, with its plan."""
    row = conn.execute(
        "SELECT c.id, c.status, c.plan FROM customers c WHERE c.id = %s FOR UPDATE", (customer_id,)
    ).fetchone()
    if row is None:
        # The actor was read moments ago; the customer is gone since: as good as a revoked session.
        raise Unauthorized("this account no longer exists", code="session_revoked")
    return row, load_plan(conn, row["plan"])


def _owners_left(conn: Connection[Row], customer_id: str, without: str) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM users WHERE customer_id = %s AND role = 'owner' AND disabled_at IS NULL "
        "AND id <> %s",
        (customer_id, without),
    ).fetchone()
    assert row is not None
    return int(row["n"])


class AccountService:
    def __init__(self, db: TransactionalDatabase, *, throttle: LoginThrottle) -> None:
        self._db = db
        self._throttle = throttle

    # Sign-up, login, sessions

    def sign_up(
        self, company_name: str, email: str, password: str, plan: str, *, name: str | None = None
    ) -> dict[str, Any]:
        """A new customer (status pending) and its owner, in one transaction.

        ``name`` is the owner's display name; by default the e-mail's local part."""
        email = normalise_email(email)
        company_name = check_name(company_name, field="company_name")
        owner_name = check_name(name if name is not None else email.partition("@")[0])
        check_password(password, email=email, names=[owner_name, company_name])
        # Hashed before the transaction opens: ~50 ms of CPU need not hold a connection.
        password_hash = hash_password(password)
        try:
            with self._db.transaction() as conn:
                plan_row = load_plan(conn, plan)
                customer = conn.execute(
                    "INSERT INTO customers (email, company_name, plan) VALUES (%s, %s, %s) "
                    "RETURNING id, email, company_name, plan, status, created_at",
                    (email, company_name, plan_row.name),
                ).fetchone()
                assert customer is not None
                user = conn.execute(
                    "INSERT INTO users AS u (customer_id, email, name, password_hash, role) "
                    f"VALUES (%s, %s, %s, %s, 'owner') RETURNING {_USER_COLUMNS}",
                    (customer["id"], email, owner_name, password_hash),
                ).fetchone()
                assert user is not None
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict("an account with this e-mail already exists", code="email_taken") from exc
        return {"user": public_user(user), "customer": dict(customer)}

    def authenticate(self, email: str, password: str) -> dict[str, Any]:
        failed = Unauthorized("e-mail or password is wrong", code="invalid_credentials")
        if not isinstance(email, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            verify_password("", dummy_hash())
            raise failed
        self._throttle.attempt(email)
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_USER_COLUMNS}, u.password_hash, c.status AS customer_status, {SESSION_GENERATION_COLUMN} "
                "FROM users u LEFT JOIN customers c ON c.id = u.customer_id WHERE u.email = %s",
                (email.strip().lower(),),
            ).fetchone()
        if row is None:
            verify_password(password, dummy_hash())
            raise failed
        # The password is checked before the account's state, so a disabled account costs the same
        # time as a live one and answers the same: the state is not revealed to whoever lacks it.
        if not verify_password(password, row["password_hash"]):
            raise failed
        if row["disabled_at"] is not None or row["customer_status"] == "cancelled":
            raise failed
        self._throttle.succeeded(email)
        return login_answer(public_user(row), row)

    def current_identity(self, identity: Identity) -> Identity:
        """The caller as the database says now (``functions.platform.sessions``); handlers then ask
        ``actor`` for the customer's state."""
        parsed = parse_uuid(identity.user_id)
        if parsed is None:
            raise session_revoked()
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT u.role, u.email, {SESSION_GENERATION_COLUMN} FROM users u "
                "WHERE u.id = %s AND u.disabled_at IS NULL",
                (parsed,),
            ).fetchone()
        return current_identity(identity, row)

    def end_sessions(self, actor: Actor) -> None:
        """Log out everywhere: every session of the actor's account, this one included."""
        with self._db.transaction() as conn:
            revoke_sessions(conn, actor.user_id)

    def actor(self, user_id: Any) -> Actor:
        """The caller as the database says now; a gone, disabled or cancelled account is refused."""
        revoked = Unauthorized("this session is no longer valid; log in again", code="session_revoked")
        parsed = parse_uuid(user_id)
        if parsed is None:
            raise revoked
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT u.id, u.role, u.customer_id, u.email, u.disabled_at, c.status AS customer_status "
                "FROM users u LEFT JOIN customers c ON c.id = u.customer_id WHERE u.id = %s",
                (parsed,),
            ).fetchone()
        if row is None or row["disabled_at"] is not None or row["customer_status"] == "cancelled":
            raise revoked
        return Actor(
            user_id=str(row["id"]),
            role=row["role"],
            customer_id=str(row["customer_id"]) if row["customer_id"] is not None else None,
            customer_status=row["customer_status"],
            email=row["email"],
        )

    def me(self, actor: Actor) -> dict[str, Any]:
        """The user and, for a customer's users, the customer with its plan limits and usage."""
        with self._db.transaction() as conn:
            user = conn.execute(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id = %s", (actor.user_id,)).fetchone()
            if user is None:
                raise Unauthorized("this session is no longer valid; log in again", code="session_revoked")
            if actor.customer_id is None:
                return {"user": public_user(user), "customer": None}
            customer = conn.execute(
                "SELECT c.id, c.email, c.company_name, c.plan, c.status, c.status_reason, c.status_changed_at, "
                "(SELECT count(*) FROM customer_sites s WHERE s.customer_id = c.id AND s.status <> 'deleted') "
                "AS site_count, "
                "(SELECT count(*) FROM users m WHERE m.customer_id = c.id AND m.disabled_at IS NULL) AS member_count "
                "FROM customers c WHERE c.id = %s",
                (actor.customer_id,),
            ).fetchone()
            assert customer is not None  # users.customer_id is a cascading FK
            plan = conn.execute(f"SELECT {PLAN_COLUMNS} FROM plans WHERE name = %s", (customer["plan"],)).fetchone()
            assert plan is not None  # customers.plan is a FK
        summary = dict(customer)
        summary["limits"] = Plan.from_row(plan).public()
        return {"user": public_user(user), "customer": summary}

    # Team

    def invite(self, actor: Actor, email: str, role: str) -> dict[str, Any]:
        """An invitation to the actor's customer; the token is in the answer and nowhere else.

        Inviting an address that has an open invitation replaces it (a new token; the old link stops
        working), which is how an owner resends a lost invitation."""
        customer_id = require_owner(actor)
        require_writable(actor)
        email = normalise_email(email)
        if role not in TEAM_ROLES:
            raise ValidationFailed("role is owner or member", code="invalid_role")
        token = secrets.token_urlsafe(32)
        with self._db.transaction() as conn:
            customer, plan = _lock_customer(conn, customer_id)
            check_writable(customer["status"])
            if conn.execute("SELECT 1 FROM users WHERE email = %s", (email,)).fetchone():
                raise Conflict("an account with this e-mail already exists", code="email_taken")
            conn.execute(
                f"UPDATE invitations i SET revoked_at = now() WHERE i.customer_id = %s AND i.email = %s AND {_OPEN}",
                (customer_id, email),
            )
            seats = conn.execute(
                "SELECT (SELECT count(*) FROM users WHERE customer_id = %(c)s AND disabled_at IS NULL) "
                f"+ (SELECT count(*) FROM invitations i WHERE i.customer_id = %(c)s AND {_OPEN} "
                "AND i.expires_at > now()) AS n",
                {"c": customer_id},
            ).fetchone()
            assert seats is not None
            if seats["n"] >= plan.max_members:
                raise Conflict(
                    f"the {plan.name} plan allows {plan.max_members} members, invitations included",
                    code="plan_limit",
                    details={"limit": plan.max_members, "plan": plan.name},
                )
            row = conn.execute(
                "INSERT INTO invitations AS i (customer_id, email, role, token_hash, invited_by, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, now() + make_interval(days => %s)) "
                f"RETURNING {_INVITATION_COLUMNS}",
                (customer_id, email, role, token_hash(token), actor.user_id, INVITATION_DAYS),
            ).fetchone()
            assert row is not None
        return {"invitation": public_invitation(row), "token": token}

    def list_members(self, actor: Actor) -> list[dict[str, Any]]:
        customer_id = require_customer(actor)
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users u WHERE u.customer_id = %s ORDER BY u.created_at, u.id",
                (customer_id,),
            ).fetchall()
        return [public_member(row) for row in rows]

    def list_invitations(self, actor: Actor, *, include_closed: bool = False) -> list[dict[str, Any]]:
        """Open invitations, newest first (all of them, accepted, revoked and expired too, on request)."""
        customer_id = require_owner(actor)
        where = "" if include_closed else f" AND {_OPEN} AND i.expires_at > now()"
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_INVITATION_COLUMNS} FROM invitations i WHERE i.customer_id = %s{where} "
                "ORDER BY i.created_at DESC, i.id DESC LIMIT 500",
                (customer_id,),
            ).fetchall()
        return [public_invitation(row) for row in rows]

    def revoke_invitation(self, actor: Actor, invitation_id: Any) -> dict[str, Any]:
        customer_id = require_owner(actor)
        require_writable(actor)
        not_found = NotFound("no such open invitation", code="invitation_not_found")
        parsed = parse_uuid(invitation_id)
        if parsed is None:
            raise not_found
        with self._db.transaction() as conn:
            row = conn.execute(
                f"UPDATE invitations i SET revoked_at = now() WHERE i.id = %s AND i.customer_id = %s AND {_OPEN} "
                f"RETURNING {_INVITATION_COLUMNS}",
                (parsed, customer_id),
            ).fetchone()
        if row is None:
            raise not_found
        return public_invitation(row)

    def accept_invitation(self, token: str, name: str, password: str) -> dict[str, Any]:
        """The invited person's user, created once: a second accept of the same token is a 404."""
        not_found = NotFound("this invitation is not valid (expired, revoked or used)", code="invitation_not_found")
        if not isinstance(token, str) or not 1 <= len(token) <= 200:
            raise not_found
        name = check_name(name)
        digest = token_hash(token)
        open_invitation = f"i.token_hash = %s AND {_OPEN} AND i.expires_at > now()"
        # A first look without a lock, for the e-mail the password policy needs, so the slow hash is
        # computed before the row lock is taken; the locked read below decides.
        with self._db.transaction() as conn:
            peek = conn.execute(
                f"SELECT i.email, i.customer_id FROM invitations i WHERE {open_invitation}", (digest,)
            ).fetchone()
        if peek is None:
            raise not_found
        check_password(password, email=peek["email"], names=[name])
        password_hash = hash_password(password)
        try:
            with self._db.transaction() as conn:
                # The customer row first, as every team change takes it (invite() locks it and then
                # touches invitations: the same order here cannot deadlock with it). A concurrent
                # accept of the same token waits here, then sees accepted_at set (READ COMMITTED
                # re-reads the row it waited for) and finds nothing.
                conn.execute("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (peek["customer_id"],))
                invitation = conn.execute(
                    "SELECT i.id, i.customer_id, i.email, i.role, c.status AS customer_status "
                    f"FROM invitations i JOIN customers c ON c.id = i.customer_id WHERE {open_invitation} "
                    "FOR UPDATE OF i",
                    (digest,),
                ).fetchone()
                if invitation is None or invitation["customer_status"] == "cancelled":
                    raise not_found
                check_writable(invitation["customer_status"])
                user = conn.execute(
                    "INSERT INTO users AS u (customer_id, email, name, password_hash, role) "
                    f"VALUES (%s, %s, %s, %s, %s) RETURNING {_USER_COLUMNS}",
                    (invitation["customer_id"], invitation["email"], name, password_hash, invitation["role"]),
                ).fetchone()
                assert user is not None
                conn.execute("UPDATE invitations SET accepted_at = now() WHERE id = %s", (invitation["id"],))
        except psycopg.errors.UniqueViolation as exc:
            # Someone signed up (or was made staff) with this address after the invitation was sent.
            raise Conflict("an account with this e-mail already exists", code="email_taken") from exc
        return public_user(user)

    def remove_member(self, actor: Actor, user_id: Any) -> dict[str, Any]:
        """Delete a user of the actor's customer; the last owner stays."""
        customer_id = require_owner(actor)
        require_writable(actor)
        with self._db.transaction() as conn:
            target = self._locked_member(conn, customer_id, user_id)
            if target["role"] == "owner" and _owners_left(conn, customer_id, without=str(target["id"])) == 0:
                raise Conflict("the account needs at least one owner", code="last_owner")
            conn.execute("DELETE FROM users WHERE id = %s", (target["id"],))
            forget_sessions(conn, target["id"])
        return public_member(target)

    def change_member_role(self, actor: Actor, user_id: Any, role: str) -> dict[str, Any]:
        customer_id = require_owner(actor)
        require_writable(actor)
        if role not in TEAM_ROLES:
            raise ValidationFailed("role is owner or member", code="invalid_role")
        with self._db.transaction() as conn:
            target = self._locked_member(conn, customer_id, user_id)
            if (
                target["role"] == "owner"
                and role != "owner"
                and _owners_left(conn, customer_id, without=str(target["id"])) == 0
            ):
                raise Conflict("the account needs at least one owner", code="last_owner")
            row = conn.execute(
                f"UPDATE users u SET role = %s, updated_at = now() WHERE u.id = %s RETURNING {_USER_COLUMNS}",
                (role, target["id"]),
            ).fetchone()
            assert row is not None
            if demoted(TEAM_ROLES_RANKING, target["role"], role):
                # A demoted owner's open sessions end: they sign in again as a member.
                revoke_sessions(conn, target["id"])
        return public_member(row)

    def _locked_member(self, conn: Connection[Row], customer_id: str, user_id: Any) -> Row:
        # The customer row is the lock every owner-count change takes, so two owners demoting each
        # other at once cannot both pass the last-owner check.
        customer, _ = _lock_customer(conn, customer_id)
        check_writable(customer["status"])
        parsed = parse_uuid(user_id)
        row = None
        if parsed is not None:
            row = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id = %s AND u.customer_id = %s", (parsed, customer_id)
            ).fetchone()
        if row is None:
            raise NotFound("no such member", code="member_not_found")
        return row

    # Staff

    def ensure_staff(self, email: str, name: str, password: str) -> dict[str, Any]:
        """The staff user with ``email``, created if missing (operator CLI); an existing one is unchanged."""
        email = normalise_email(email)
        name = check_name(name)
        check_password(password, email=email, names=[name])
        password_hash = hash_password(password)
        with self._db.transaction() as conn:
            row = conn.execute(
                "INSERT INTO users AS u (customer_id, email, name, password_hash, role) "
                "VALUES (NULL, %s, %s, %s, 'admin') ON CONFLICT (email) DO NOTHING "
                f"RETURNING {_USER_COLUMNS}",
                (email, name, password_hash),
            ).fetchone()
            if row is None:
                row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.email = %s", (email,)).fetchone()
                assert row is not None
        if row["role"] != "admin":
            raise Conflict("this e-mail belongs to a customer's user", code="email_taken")
        return public_user(row)
