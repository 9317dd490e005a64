"""Accounts: sign-up, login, live sessions, invitations and the team's owners."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from functions.agistaffers.schemas import AcceptInvitation, SignUp
from functions.agistaffers.services.accounts import AccountService, Actor
from functions.agistaffers.services.customers import CustomerService
from shared.errors import AppError, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from tests.agistaffers.conftest import PASSWORD, Tenants

# Sign-up and login


def test_sign_up_creates_a_pending_customer_and_its_owner(
    accounts: AccountService, sql: psycopg.Connection[Any]
) -> None:
    result = accounts.sign_up("Acme Ltd", "Boss@Acme.example.com", PASSWORD, "business")
    assert result["user"]["email"] == "boss@acme.example.com"
    assert result["user"]["role"] == "owner"
    assert result["customer"]["status"] == "pending"
    assert result["customer"]["plan"] == "business"
    assert result["customer"]["email"] == "boss@acme.example.com"
    assert result["user"]["customer_id"] == result["customer"]["id"]
    assert sql.execute("SELECT count(*) FROM users").fetchone() == (1,)
    logged_in = accounts.authenticate("BOSS@acme.example.com", PASSWORD)
    assert logged_in == {"user": result["user"], "session": {"generation": 0}}


def test_an_email_signs_up_once_whatever_its_case(accounts: AccountService, sql: psycopg.Connection[Any]) -> None:
    accounts.sign_up("Acme", "boss@acme.example.com", PASSWORD, "starter")
    with pytest.raises(Conflict) as caught:
        accounts.sign_up("Other", "BOSS@ACME.example.com", PASSWORD, "starter")
    assert caught.value.code == "email_taken"
    # Nothing of the refused sign-up stays behind: customer and owner are one transaction.
    assert sql.execute("SELECT count(*) FROM customers").fetchone() == (1,)


def test_staff_email_cannot_sign_up(accounts: AccountService, staff: Actor) -> None:
    with pytest.raises(Conflict) as caught:
        accounts.sign_up("Acme", staff.email, PASSWORD, "starter")
    assert caught.value.code == "email_taken"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1234", "too_short"),
        ("x" * 201, "too_long"),
        ("aaaaaaaaaaaa", "one_character"),
        ("jane.doe@example.com", "same_as_email"),
        ("JANE.DOE@EXAMPLE.COM", "same_as_email"),
        ("jane.doe.smith", None),
    ],
)
def test_password_policy(accounts: AccountService, password: str, reason: str | None) -> None:
    email = "jane.doe@example.com"
    if reason is None:
        accounts.sign_up("Acme", email, password, "starter")
        return
    with pytest.raises(ValidationFailed) as caught:
        accounts.sign_up("Acme", email, password, "starter")
    assert caught.value.code == "weak_password"
    assert caught.value.details == [{"reason": reason}]


def test_password_equal_to_the_local_part_is_refused(accounts: AccountService) -> None:
    with pytest.raises(ValidationFailed) as caught:
        accounts.sign_up("Acme", "correcthorse@example.com", "CorrectHorse", "starter")
    assert caught.value.details == [{"reason": "same_as_email"}]


def test_unknown_plan_and_bad_email_are_refused(accounts: AccountService) -> None:
    with pytest.raises(ValidationFailed) as caught:
        accounts.sign_up("Acme", "a@example.com", PASSWORD, "platinum")
    assert caught.value.code == "unknown_plan"
    with pytest.raises(ValidationFailed) as caught:
        accounts.sign_up("Acme", "not-an-email", PASSWORD, "starter")
    assert caught.value.code == "invalid_email"


def test_login_failures_all_answer_the_same(
    accounts: AccountService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    answers = []
    for email, password in [
        ("nobody@example.com", PASSWORD),
        (owner.email, "wrong password!"),
        (owner.email, ""),
        (owner.email, "x" * 10_000),
    ]:
        with pytest.raises(Unauthorized) as caught:
            accounts.authenticate(email, password)
        answers.append((caught.value.code, caught.value.message))
    sql.execute("UPDATE users SET disabled_at = now() WHERE id = %s", (member.user_id,))
    with pytest.raises(Unauthorized) as caught:
        accounts.authenticate(member.email, PASSWORD)
    answers.append((caught.value.code, caught.value.message))
    assert set(answers) == {("invalid_credentials", "e-mail or password is wrong")}
    # The owner, not disabled, still logs in.
    assert accounts.authenticate(owner.email, PASSWORD)["user"]["role"] == "owner"


def test_a_cancelled_customer_cannot_log_in_and_its_sessions_end(
    accounts: AccountService, customers: CustomerService, tenants: Tenants, staff: Actor
) -> None:
    owner = tenants.owner()
    customers.cancel(staff, owner.customer_id, "asked to leave")
    with pytest.raises(Unauthorized) as caught:
        accounts.authenticate(owner.email, PASSWORD)
    assert caught.value.code == "invalid_credentials"
    with pytest.raises(Unauthorized) as caught:
        accounts.actor(owner.user_id)
    assert caught.value.code == "session_revoked"


def test_pending_and_suspended_customers_log_in(accounts: AccountService, tenants: Tenants) -> None:
    for status in ("pending", "suspended"):
        owner = tenants.owner(status=status)
        assert accounts.authenticate(owner.email, PASSWORD)["user"]["customer_id"] is not None
        assert accounts.actor(owner.user_id).customer_status == status


# Sessions: the actor is read from the database each time


def test_actor_reflects_a_role_change_at_once(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    second = tenants.member(owner, role="owner")
    assert second.role == "owner"
    accounts.change_member_role(owner, second.user_id, "member")
    assert accounts.actor(second.user_id).role == "member"
    # The demoted user, holding the old Actor, is refused once the actor is re-read.
    with pytest.raises(Forbidden):
        accounts.invite(accounts.actor(second.user_id), "new@example.com", "member")


def test_actor_of_a_removed_disabled_or_unknown_user_is_revoked(
    accounts: AccountService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owner = tenants.owner()
    removed = tenants.member(owner)
    disabled = tenants.member(owner)
    accounts.remove_member(owner, removed.user_id)
    sql.execute("UPDATE users SET disabled_at = now() WHERE id = %s", (disabled.user_id,))
    for user_id in (removed.user_id, disabled.user_id, str(uuid.uuid4()), "not-a-uuid", None, 42):
        with pytest.raises(Unauthorized) as caught:
            accounts.actor(user_id)
        assert caught.value.code == "session_revoked"


def test_me_has_the_plan_limits_and_usage(accounts: AccountService, tenants: Tenants, staff: Actor) -> None:
    owner = tenants.owner(plan="business")
    tenants.member(owner)
    me = accounts.me(owner)
    assert me["user"]["id"] == uuid.UUID(owner.user_id)
    customer = me["customer"]
    assert customer["plan"] == "business"
    assert customer["site_count"] == 0
    assert customer["member_count"] == 2
    assert customer["limits"] == {
        "name": "business",
        "max_sites": 25,
        "max_members": 10,
        "metrics_retention_days": 30,
        "min_check_interval_seconds": 60,
    }
    assert accounts.me(staff)["customer"] is None


# Invitations


def test_an_invitation_is_accepted_once(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    invited = accounts.invite(owner, "New.Person@example.com", "member")
    assert invited["invitation"]["email"] == "new.person@example.com"
    assert invited["invitation"]["status"] == "pending"
    assert [i["id"] for i in accounts.list_invitations(owner)] == [invited["invitation"]["id"]]
    user = accounts.accept_invitation(invited["token"], "New Person", PASSWORD)
    assert user["role"] == "member"
    assert str(user["customer_id"]) == owner.customer_id
    assert accounts.authenticate("new.person@example.com", PASSWORD)["user"]["id"] == user["id"]
    with pytest.raises(NotFound) as caught:
        accounts.accept_invitation(invited["token"], "Again", PASSWORD)
    assert caught.value.code == "invitation_not_found"
    assert accounts.list_invitations(owner) == []
    assert [i["status"] for i in accounts.list_invitations(owner, include_closed=True)] == ["accepted"]
    assert {m["email"] for m in accounts.list_members(owner)} == {owner.email, "new.person@example.com"}


def test_unknown_expired_and_revoked_invitations_are_not_found(
    accounts: AccountService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owner = tenants.owner()
    expired = accounts.invite(owner, "late@example.com", "member")
    sql.execute(
        "UPDATE invitations SET created_at = now() - interval '8 days', expires_at = now() - interval '1 day' "
        "WHERE id = %s",
        (expired["invitation"]["id"],),
    )
    revoked = accounts.invite(owner, "gone@example.com", "member")
    accounts.revoke_invitation(owner, revoked["invitation"]["id"])
    for token in (expired["token"], revoked["token"], "x" * 43, "", "y" * 5000):
        with pytest.raises(NotFound) as caught:
            accounts.accept_invitation(token, "Someone", PASSWORD)
        assert caught.value.code == "invitation_not_found"
    # Revoking twice, or someone else's invitation, is a 404 too.
    with pytest.raises(NotFound):
        accounts.revoke_invitation(owner, revoked["invitation"]["id"])
    other = tenants.owner()
    pending = accounts.invite(owner, "pending@example.com", "member")
    with pytest.raises(NotFound):
        accounts.revoke_invitation(other, pending["invitation"]["id"])
    with pytest.raises(NotFound):
        accounts.revoke_invitation(owner, "not-a-uuid")
    # An expired address can be invited again.
    again = accounts.invite(owner, "late@example.com", "member")
    assert accounts.accept_invitation(again["token"], "Late", PASSWORD)["email"] == "late@example.com"


def test_inviting_again_replaces_the_open_invitation(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    first = accounts.invite(owner, "lost@example.com", "member")
    second = accounts.invite(owner, "lost@example.com", "owner")
    assert [i["id"] for i in accounts.list_invitations(owner)] == [second["invitation"]["id"]]
    with pytest.raises(NotFound):
        accounts.accept_invitation(first["token"], "Lost", PASSWORD)
    assert accounts.accept_invitation(second["token"], "Lost", PASSWORD)["role"] == "owner"


def test_members_and_open_invitations_count_against_the_plan(
    accounts: AccountService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owner = tenants.owner(plan="starter")  # max_members 3: the owner and two more
    tenants.member(owner)
    held = accounts.invite(owner, "seat3@example.com", "member")
    with pytest.raises(Conflict) as caught:
        accounts.invite(owner, "seat4@example.com", "member")
    assert caught.value.code == "plan_limit"
    assert caught.value.details == {"limit": 3, "plan": "starter"}
    # A revoked invitation frees its seat; so does an expired one.
    accounts.revoke_invitation(owner, held["invitation"]["id"])
    held = accounts.invite(owner, "seat4@example.com", "member")
    sql.execute(
        "UPDATE invitations SET created_at = now() - interval '8 days', expires_at = now() - interval '1 day' "
        "WHERE id = %s",
        (held["invitation"]["id"],),
    )
    accounts.invite(owner, "seat5@example.com", "member")


def test_who_may_invite(accounts: AccountService, tenants: Tenants, staff: Actor) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    for actor in (member, staff):
        with pytest.raises(Forbidden):
            accounts.invite(actor, "x@example.com", "member")
    with pytest.raises(Conflict) as caught:
        accounts.invite(owner, member.email.upper(), "member")
    assert caught.value.code == "email_taken"
    with pytest.raises(Conflict) as caught:
        accounts.invite(owner, staff.email, "member")
    assert caught.value.code == "email_taken"
    with pytest.raises(ValidationFailed) as refused:
        accounts.invite(owner, "x@example.com", "admin")
    assert refused.value.code == "invalid_role"
    with pytest.raises(Forbidden):
        accounts.list_invitations(member)


def test_two_accepts_of_one_token_at_once_make_one_user(
    accounts: AccountService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owner = tenants.owner()
    token = accounts.invite(owner, "racer@example.com", "member")["token"]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def accept() -> None:
        barrier.wait()
        try:
            accounts.accept_invitation(token, "Racer", PASSWORD)
            outcomes.append("created")
        except AppError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=accept) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "invitation_not_found"]
    assert sql.execute("SELECT count(*) FROM users WHERE email = 'racer@example.com'").fetchone() == (1,)


def test_an_invitation_to_an_address_that_signed_up_meanwhile(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    token = accounts.invite(owner, "busy@example.com", "member")["token"]
    accounts.sign_up("Busy Inc", "busy@example.com", PASSWORD, "starter")
    with pytest.raises(Conflict) as caught:
        accounts.accept_invitation(token, "Busy", PASSWORD)
    assert caught.value.code == "email_taken"


def test_accepting_applies_the_password_policy(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    token = accounts.invite(owner, "weakling@example.com", "member")["token"]
    with pytest.raises(ValidationFailed) as caught:
        accounts.accept_invitation(token, "Weak", "weakling")
    assert caught.value.code == "weak_password"
    # The refusal did not use the invitation up.
    assert accounts.accept_invitation(token, "Weak", PASSWORD)["email"] == "weakling@example.com"


# Owners


def test_the_last_owner_cannot_be_removed_or_demoted(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    attempts: list[Callable[[], object]] = [
        lambda: accounts.remove_member(owner, owner.user_id),
        lambda: accounts.change_member_role(owner, owner.user_id, "member"),
    ]
    for attempt in attempts:
        with pytest.raises(Conflict) as caught:
            attempt()
        assert caught.value.code == "last_owner"
    # With a second owner, the first may step down, and then leave.
    accounts.change_member_role(owner, member.user_id, "owner")
    accounts.change_member_role(owner, owner.user_id, "member")
    new_owner = tenants.refresh(member)
    with pytest.raises(Conflict):
        accounts.remove_member(new_owner, new_owner.user_id)
    accounts.remove_member(new_owner, owner.user_id)
    assert [m["role"] for m in accounts.list_members(new_owner)] == ["owner"]


def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    accounts: AccountService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    first = tenants.owner()
    second = tenants.member(first, role="owner")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor: Actor, target: Actor) -> None:
        barrier.wait()
        try:
            accounts.change_member_role(actor, target.user_id, "member")
            outcomes.append("demoted")
        except AppError as exc:
            outcomes.append(exc.code)

    threads = [
        threading.Thread(target=demote, args=(first, second)),
        threading.Thread(target=demote, args=(second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["demoted", "last_owner"]
    assert sql.execute(
        "SELECT count(*) FROM users WHERE customer_id = %s AND role = 'owner'", (first.customer_id,)
    ).fetchone() == (1,)


def test_only_owners_manage_the_team_and_only_their_own(accounts: AccountService, tenants: Tenants) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    other_owner = tenants.owner()
    with pytest.raises(Forbidden):
        accounts.remove_member(member, owner.user_id)
    with pytest.raises(Forbidden):
        accounts.change_member_role(member, member.user_id, "owner")
    for target in (member.user_id, str(uuid.uuid4()), "nope"):
        with pytest.raises(NotFound) as caught:
            accounts.remove_member(other_owner, target)
        assert caught.value.code == "member_not_found"
    with pytest.raises(ValidationFailed):
        accounts.change_member_role(owner, member.user_id, "admin")
    removed = accounts.remove_member(owner, member.user_id)
    assert removed["email"] == member.email


# Suspended customers read but do not write


def test_a_suspended_customer_reads_its_team_but_cannot_change_it(
    accounts: AccountService, customers: CustomerService, tenants: Tenants, staff: Actor
) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    token = accounts.invite(owner, "later@example.com", "member")["token"]
    customers.suspend(staff, owner.customer_id, "unpaid invoice")
    owner = tenants.refresh(owner)
    assert len(accounts.list_members(owner)) == 2
    assert accounts.me(owner)["customer"]["status"] == "suspended"
    attempts: list[Callable[[], object]] = [
        lambda: accounts.invite(owner, "x@example.com", "member"),
        lambda: accounts.remove_member(owner, member.user_id),
        lambda: accounts.change_member_role(owner, member.user_id, "owner"),
        lambda: accounts.accept_invitation(token, "Later", PASSWORD),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden) as caught:
            attempt()
        assert caught.value.code == "customer_suspended"


def test_a_stale_actor_cannot_write_after_suspension(
    accounts: AccountService, customers: CustomerService, tenants: Tenants, staff: Actor
) -> None:
    owner = tenants.owner()  # read while active
    customers.suspend(staff, owner.customer_id, "abuse report")
    with pytest.raises(Forbidden) as caught:
        accounts.invite(owner, "x@example.com", "member")
    assert caught.value.code == "customer_suspended"


# Staff


def test_ensure_staff_is_idempotent_by_email(accounts: AccountService, tenants: Tenants) -> None:
    first = accounts.ensure_staff("Ops2@agistaffers.example.com", "Ops Two", PASSWORD)
    again = accounts.ensure_staff("ops2@agistaffers.example.com", "Renamed", "another password")
    assert first == again
    assert first["role"] == "admin"
    assert first["customer_id"] is None
    owner = tenants.owner()
    with pytest.raises(Conflict) as caught:
        accounts.ensure_staff(owner.email, "Not Staff", PASSWORD)
    assert caught.value.code == "email_taken"


# Request schemas


def test_request_schemas_refuse_extra_fields_nul_and_wrong_types() -> None:
    good = {"company_name": "Acme", "email": "A@Example.com", "password": PASSWORD}
    assert SignUp.model_validate(good).email == "a@example.com"
    for bad in (
        {**good, "role": "admin"},
        {**good, "company_name": "Ac\x00me"},
        {**good, "company_name": 42},
        {**good, "password": "short"},
        {**good, "email": "not an email"},
        {**good, "company_name": "x" * 256},
    ):
        with pytest.raises(ValueError):
            SignUp.model_validate(bad)
    with pytest.raises(ValueError):
        AcceptInvitation.model_validate({"token": "a b c d e f g h i j k", "name": "N", "password": PASSWORD})
