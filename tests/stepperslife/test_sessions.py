"""Sessions follow the account at the origin: the role is the database's, and a demotion, a deletion,
a password change or "log out everywhere" ends the account's sessions (401 ``session_revoked``).

The identity below is what the edge would forward from a session opened at login: the login answer's
user and session generation, exactly as ``edge_workers.core.gateway._login_identity`` builds it.
"""

from __future__ import annotations

import psycopg
import pytest

from devstack import cli
from functions.stepperslife.composition import container
from shared.envelope import Identity
from tests.conftest import EdgeSignedClient, create_user
from tests.stepperslife.test_api import assert_error, create_event, event_body

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


def login(api: EdgeSignedClient, email: str, password: str = PASSWORD) -> Identity:
    response = api.request("POST", "/auth/login", json_body={"email": email, "password": password})
    assert response.status == 200, response.body
    user = response.json["user"]
    return Identity(
        user_id=user["id"], role=user["role"], email=user["email"], generation=response.json["session"]["generation"]
    )


@pytest.fixture
def organizer(api: EdgeSignedClient, stepperslife_url: str) -> Identity:
    return login(api, create_user(api, stepperslife_url, role="user").email)


@pytest.fixture
def admin(api: EdgeSignedClient, stepperslife_url: str) -> Identity:
    return login(api, create_user(api, stepperslife_url, role="admin").email)


def test_the_role_is_the_databases_not_the_sessions(
    api: EdgeSignedClient, organizer: Identity, stepperslife_url: str
) -> None:
    """Changed behind the session's back (no revocation): the next request already sees the new role."""
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET role = 'customer' WHERE id = %s", (organizer.user_id,))
    # The session still says "user", which may create events; the database says customer.
    assert_error(api.request("POST", "/events", identity=organizer, json_body=event_body()), 403, "role_forbidden")
    # And the other way: a session that says "customer" for an admin in the database is an admin.
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (organizer.user_id,))
    stale = organizer._replace(role="customer")
    assert api.request("POST", "/events", identity=stale, json_body=event_body()).status == 201


def test_a_demoted_admin_loses_every_session(api: EdgeSignedClient, admin: Identity, organizer: Identity) -> None:
    event = create_event(api, organizer)
    edit = {"title": "Renamed by staff"}
    assert api.request("PATCH", f"/events/{event['id']}", identity=admin, json_body=edit).status == 200
    container().users.set_role(email=admin.email, role="user")
    assert_error(api.request("PATCH", f"/events/{event['id']}", identity=admin, json_body=edit), 401, "session_revoked")
    assert_error(api.request("GET", "/me/registrations", identity=admin), 401, "session_revoked")
    # A new login is the new role's session.
    again = login(api, admin.email)
    assert again.role == "user" and again.generation == 1
    # Someone else's draft: invisible to a user.
    assert_error(api.request("PATCH", f"/events/{event['id']}", identity=again, json_body=edit), 404)


def test_agistack_user_role_reaches_open_sessions(
    api: EdgeSignedClient, organizer: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's command, as typed: a user made customer can no longer create events."""
    monkeypatch.setattr(cli, "_configure_from_running_stack", lambda data_dir: None)  # the test's stack
    assert cli.main(["user", "role", organizer.email, "customer"]) == 0
    response = api.request("POST", "/events", identity=organizer, json_body=event_body())
    assert_error(response, 401, "session_revoked")


def test_a_promotion_keeps_the_session_and_counts_at_once(
    api: EdgeSignedClient, organizer: Identity, stepperslife_url: str
) -> None:
    someone_elses = create_event(api, login(api, create_user(api, stepperslife_url, role="user").email))
    edit = {"title": "Renamed by staff"}
    assert_error(api.request("PATCH", f"/events/{someone_elses['id']}", identity=organizer, json_body=edit), 404)
    container().users.set_role(email=organizer.email, role="admin")
    assert api.request("PATCH", f"/events/{someone_elses['id']}", identity=organizer, json_body=edit).status == 200


def test_a_deleted_account_has_no_session(api: EdgeSignedClient, organizer: Identity, stepperslife_url: str) -> None:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id = %s", (organizer.user_id,))
    assert_error(api.request("GET", "/me/registrations", identity=organizer), 401, "session_revoked")


def test_an_identity_naming_no_account_is_refused(api: EdgeSignedClient) -> None:
    ghost = Identity(user_id="not-a-uuid", role="admin")
    assert_error(api.request("GET", "/me/registrations", identity=ghost), 401, "session_revoked")


def test_logout_everywhere_ends_every_session(api: EdgeSignedClient, organizer: Identity) -> None:
    laptop, phone = organizer, login(api, organizer.email)
    response = api.request("POST", "/auth/logout-all", identity=phone)
    assert response.status == 204
    for session in (laptop, phone):
        assert_error(api.request("GET", "/me/registrations", identity=session), 401, "session_revoked")
    fresh = login(api, organizer.email)
    assert fresh.generation == 1
    assert api.request("GET", "/me/registrations", identity=fresh).status == 200


def test_a_password_change_ends_every_session(api: EdgeSignedClient, organizer: Identity) -> None:
    wrong = {"current_password": "not my password", "new_password": NEW_PASSWORD}
    assert_error(api.request("POST", "/me/password", identity=organizer, json_body=wrong), 403, "wrong_password")
    weak = {"current_password": PASSWORD, "new_password": "password1234"}
    assert_error(api.request("POST", "/me/password", identity=organizer, json_body=weak), 422, "weak_password")
    # Refusals end nothing.
    assert api.request("GET", "/me/registrations", identity=organizer).status == 200

    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert api.request("POST", "/me/password", identity=organizer, json_body=change).status == 204
    assert_error(api.request("GET", "/me/registrations", identity=organizer), 401, "session_revoked")
    failed = api.request("POST", "/auth/login", json_body={"email": organizer.email, "password": PASSWORD})
    assert_error(failed, 401, "invalid_credentials")
    assert login(api, organizer.email, NEW_PASSWORD).generation == 1
