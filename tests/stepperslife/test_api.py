"""The functions API through the real Chalice app, the real envelope and a real PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from shared.envelope import Identity
from tests.conftest import EdgeSignedClient, create_user

FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)


def event_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Chicago Steppers Night",
        "description": "Smooth stepping all night.",
        "event_date": FUTURE.isoformat(),
        "location": "Chicago, IL",
        "category": "social",
        "capacity": 2,
    }
    body.update(overrides)
    return body


def create_event(api: EdgeSignedClient, organizer: Identity, **overrides: Any) -> dict[str, Any]:
    response = api.request("POST", "/events", identity=organizer, json_body=event_body(**overrides))
    assert response.status == 201, response.body
    event: dict[str, Any] = response.json["event"]
    return event


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def assert_error(response: Any, status: int, code: str | None = None) -> None:
    assert response.status == status, response.body
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert "Traceback" not in response.body.decode()
    if code:
        assert error["code"] == code


# --- the envelope: the origin trusts only the gateway ---------------------------------------------


def test_unsigned_request_is_refused(api: EdgeSignedClient) -> None:
    assert_error(api.request("GET", "/events", sign=False), 401, "unsigned_request")


def test_stale_signature_is_refused(api: EdgeSignedClient) -> None:
    assert_error(api.request("GET", "/events", signed_at=int(time.time()) - 3600), 401, "stale_request")


def test_identity_header_cannot_be_swapped(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    signed_as_user = api.request("GET", "/events", identity=users["user"])
    assert signed_as_user.status == 200
    forged = Identity(user_id=users["admin"].user_id, role="admin")
    from shared import envelope

    headers = envelope.sign(
        "another-secret-of-enough-length-000000", method="GET", path="/events", now=int(time.time()), identity=forged
    )
    response = api.request("GET", "/events", sign=False, headers=headers)
    assert_error(response, 401, "bad_signature")


def test_signature_covers_the_body(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    from shared import envelope

    body = b'{"title": "x"}'
    headers = envelope.sign(
        "test-signing-secret-" + "x" * 32,
        method="POST",
        path="/events",
        now=int(time.time()),
        identity=users["user"],
        body=body,
    )
    response = api.request("POST", "/events", sign=False, headers=headers, body=b'{"title": "tampered"}')
    assert_error(response, 401, "bad_signature")


def test_healthz_reports_dependencies(api: EdgeSignedClient) -> None:
    response = api.request("GET", "/healthz", sign=False)
    assert response.status == 200
    assert response.json == {"status": "ok", "checks": {"postgres": "up", "redis": "up"}}


# --- users and login --------------------------------------------------------------------------------


def test_sign_up_and_login(api: EdgeSignedClient, stepperslife_url: str) -> None:
    signed = api.request(
        "POST", "/users", json_body={"email": "Ada@Example.com", "name": "Ada", "password": "correct horse battery"}
    )
    assert signed.status == 201
    user = signed.json["user"]
    assert user["email"] == "ada@example.com" and user["role"] == "user"
    assert "password" not in signed.body.decode() and "scrypt" not in signed.body.decode()
    with psycopg.connect(stepperslife_url) as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE id = %s", (user["id"],)).fetchone()
    assert row is not None and row[0].startswith("scrypt$") and "correct horse" not in row[0]

    login = api.request(
        "POST", "/auth/login", json_body={"email": "ADA@example.com", "password": "correct horse battery"}
    )
    assert login.status == 200
    assert login.json["user"]["id"] == user["id"]


def test_duplicate_email_is_a_conflict(api: EdgeSignedClient, stepperslife_url: str) -> None:
    body = {"email": "bo@example.com", "name": "Bo", "password": "correct horse battery"}
    assert api.request("POST", "/users", json_body=body).status == 201
    assert_error(api.request("POST", "/users", json_body={**body, "email": "BO@example.com"}), 409, "email_taken")
    assert count_rows(stepperslife_url, "users") == 1


@pytest.mark.parametrize(
    ("email", "password"), [("nobody@example.com", "correct horse battery"), ("cy@example.com", "wrong password!")]
)
def test_login_failures_look_the_same(api: EdgeSignedClient, email: str, password: str) -> None:
    api.request(
        "POST", "/users", json_body={"email": "cy@example.com", "name": "Cy", "password": "correct horse battery"}
    )
    response = api.request("POST", "/auth/login", json_body={"email": email, "password": password})
    assert_error(response, 401, "invalid_credentials")
    assert response.json["error"]["message"] == "e-mail or password is wrong"


# --- events: access rules per role ---------------------------------------------------------------------


def test_create_event_rules_per_role(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    assert_error(api.request("POST", "/events", json_body=event_body()), 401, "authentication_required")
    assert_error(api.request("POST", "/events", identity=users["customer"], json_body=event_body()), 403)
    for role in ("user", "admin"):
        event = create_event(api, users[role])
        assert event["status"] == "draft" and event["organizer_id"] == users[role].user_id
        assert event["slug"].startswith("chicago-steppers-night")


def test_draft_is_visible_only_to_owner_and_admin(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"])
    path = f"/events/{event['id']}"
    for who in (None, users["user2"], users["customer"]):
        assert_error(api.request("GET", path, identity=who), 404)
    for who in (users["user"], users["admin"]):
        assert api.request("GET", path, identity=who).json["event"]["id"] == event["id"]
    listing = api.request("GET", "/events")
    assert listing.json["items"] == []


def test_patch_and_delete_rules_per_role(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"], status="published")
    path = f"/events/{event['id']}"
    assert_error(api.request("PATCH", path, json_body={"title": "Hijack"}), 401)
    assert_error(api.request("PATCH", path, identity=users["user2"], json_body={"title": "Hijack"}), 403)
    assert_error(api.request("PATCH", path, identity=users["customer"], json_body={"title": "Hijack"}), 403)
    assert_error(api.request("DELETE", path, identity=users["user2"]), 403)
    owner = api.request("PATCH", path, identity=users["user"], json_body={"title": "Renamed"})
    assert owner.status == 200 and owner.json["event"]["title"] == "Renamed"
    assert owner.json["event"]["slug"] == event["slug"], "a slug is stable across renames"
    admin = api.request("PATCH", path, identity=users["admin"], json_body={"capacity": 50})
    assert admin.json["event"]["capacity"] == 50
    assert api.request("DELETE", path, identity=users["admin"]).status == 204
    assert_error(api.request("GET", path), 404)


def test_status_transitions(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"])
    path = f"/events/{event['id']}"
    published = api.request("PATCH", path, identity=users["user"], json_body={"status": "published"})
    assert published.json["event"]["status"] == "published" and published.json["event"]["published_at"]
    assert_error(
        api.request("PATCH", path, identity=users["user"], json_body={"status": "draft"}), 409, "invalid_transition"
    )
    assert api.request("PATCH", path, identity=users["user"], json_body={"status": "cancelled"}).status == 200
    assert_error(
        api.request("PATCH", path, identity=users["user"], json_body={"title": "Back"}), 409, "event_cancelled"
    )


def test_listing_is_keyset_paginated_newest_first(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    created = [
        create_event(
            api,
            users["user"],
            status="published",
            title=f"Night {day}",
            event_date=(FUTURE + timedelta(days=day)).isoformat(),
        )
        for day in range(5)
    ]
    create_event(api, users["user"], title="Draft night")
    seen: list[str] = []
    cursor = None
    while True:
        query = "/events?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.request("GET", query).json
        seen += [item["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [event["title"] for event in reversed(created)]


def test_explicit_slug_conflict(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    create_event(api, users["user"], slug="spring-ball")
    response = api.request("POST", "/events", identity=users["user"], json_body=event_body(slug="spring-ball"))
    assert_error(response, 409, "slug_taken")
    second = create_event(api, users["user"])
    third = create_event(api, users["user"])
    assert second["slug"] != third["slug"]


# --- registrations ---------------------------------------------------------------------------------------


def test_registration_fills_seats_then_waitlists(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    event = create_event(api, users["admin"], status="published", capacity=2)
    path = f"/events/{event['id']}/registrations"
    assert_error(api.request("POST", path), 401)
    first = api.request("POST", path, identity=users["user"])
    second = api.request("POST", path, identity=users["customer"])
    third = api.request("POST", path, identity=users["user2"])
    assert [r.json["registration"]["status"] for r in (first, second, third)] == [
        "registered",
        "registered",
        "waitlisted",
    ]
    assert third.json["registration"]["waitlist_position"] == 1
    again = api.request("POST", path, identity=users["user"])
    assert_error(again, 409, "already_registered")
    assert count_rows(stepperslife_url, "event_registrations") == 3
    detail = api.request("GET", f"/events/{event['id']}").json["event"]
    assert detail["seats_left"] == 0
    mine = api.request("GET", "/me/registrations", identity=users["user2"])
    assert [item["event_id"] for item in mine.json["items"]] == [event["id"]]
    assert_error(
        api.request("PATCH", f"/events/{event['id']}", identity=users["admin"], json_body={"capacity": 1}),
        409,
        "capacity_below_registrations",
    )


def test_cannot_register_for_draft_or_cancelled(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    draft = create_event(api, users["admin"])
    assert_error(api.request("POST", f"/events/{draft['id']}/registrations", identity=users["user"]), 404)
    cancelled = create_event(api, users["admin"], status="published")
    api.request("PATCH", f"/events/{cancelled['id']}", identity=users["admin"], json_body={"status": "cancelled"})
    assert_error(
        api.request("POST", f"/events/{cancelled['id']}/registrations", identity=users["user"]), 409, "event_cancelled"
    )


def test_event_with_registrations_cannot_be_deleted(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"], status="published")
    api.request("POST", f"/events/{event['id']}/registrations", identity=users["user2"])
    assert_error(
        api.request("DELETE", f"/events/{event['id']}", identity=users["user"]), 409, "event_has_registrations"
    )


# --- bad input for every route: the documented 4xx, and nothing written ----------------------------------

WRITE_ROUTES = [
    ("POST", "/users", None),
    ("POST", "/auth/login", None),
    ("POST", "/events", "user"),
    ("PATCH", "/events/{event_id}", "user"),
]


@pytest.mark.parametrize(("method", "path", "role"), WRITE_ROUTES)
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"[1, 2, 3]", 422, "validation_failed"),
        (b'{"unknown_field": 1}', 422, "validation_failed"),
        (b'{"email": 5, "name": ["x"], "password": null, "title": 7, "capacity": "many"}', 422, "validation_failed"),
        (b'{"email": "a@b.co\\u0000", "title": "x\\u0000"}', 422, "validation_failed"),
        (b"x" * (1024 * 1024 + 1), 413, "payload_too_large"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    api: EdgeSignedClient,
    users: dict[str, Identity],
    stepperslife_url: str,
    method: str,
    path: str,
    role: str | None,
    body: bytes,
    status: int,
    code: str,
) -> None:
    event = create_event(api, users["user"])
    before = {table: count_rows(stepperslife_url, table) for table in ("users", "events", "event_registrations")}
    target = path.format(event_id=event["id"])
    response = api.request(method, target, identity=users[role] if role else None, body=body)
    assert_error(response, status, code)
    after = {table: count_rows(stepperslife_url, table) for table in ("users", "events", "event_registrations")}
    assert after == before
    assert api.request("GET", f"/events/{event['id']}", identity=users["user"]).json["event"]["title"] == event["title"]


def test_sql_metacharacters_are_data(api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str) -> None:
    title = "Robert'); DROP TABLE events;-- \" % _ \\"
    event = create_event(api, users["user"], title=title, location="' OR 1=1 --")
    assert event["title"] == title
    assert count_rows(stepperslife_url, "events") == 1
    assert_error(api.request("GET", "/events/%27%20OR%201%3D1%20--"), 404)


@pytest.mark.parametrize(
    "query",
    [
        "/events?limit=0",
        "/events?limit=abc",
        "/events?limit=1000",
        "/events?cursor=%%%",
        "/events?foo=1",
        "/events?limit=1&limit=2",
    ],
)
def test_bad_query_strings(api: EdgeSignedClient, query: str) -> None:
    response = api.request("GET", query)
    assert response.status in (400, 422)
    assert_error(response, response.status)


def test_wrong_content_type_is_415(api: EdgeSignedClient) -> None:
    response = api.request("POST", "/users", headers={"content-type": "text/plain"}, body=b"email=a")
    assert_error(response, 415, "unsupported_media_type")


def test_naive_datetime_and_bad_time_zone_are_422(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    for override in (
        {"event_date": "2030-01-01T19:00:00"},
        {"time_zone": "Mars/Olympus"},
        {"capacity": 0},
        {"ends_at": "2000-01-01T00:00:00+00:00"},
    ):
        response = api.request("POST", "/events", identity=users["user"], json_body=event_body(**override))
        assert response.status in (409, 422), (override, response.body)


def test_a_user_created_by_helper_can_log_in(api: EdgeSignedClient, stepperslife_url: str) -> None:
    admin = create_user(api, stepperslife_url, role="admin", email="root@example.com")
    login = api.request(
        "POST", "/auth/login", json_body={"email": "root@example.com", "password": "correct horse battery"}
    )
    assert login.json["user"] == {**login.json["user"], "id": admin.user_id, "role": "admin"}


@pytest.mark.parametrize(
    "date",
    [
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59+14:00",
        "1999-12-31T23:00:00+00:00",
    ],
)
def test_dates_outside_the_window_are_422_everywhere(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str, date: str
) -> None:
    organizer = users["user"]
    assert_error(api.request("POST", "/events", identity=organizer, json_body=event_body(event_date=date)), 422)
    assert_error(api.request("POST", "/events", identity=organizer, json_body=event_body(ends_at=date)), 422)
    event = create_event(api, organizer)
    for field in ("event_date", "ends_at"):
        response = api.request("PATCH", f"/events/{event['id']}", identity=organizer, json_body={field: date})
        assert_error(response, 422, "validation_failed")
    for name in ("from", "to"):
        assert_error(api.request("GET", f"/events?{name}={quote(date)}"), 422, "validation_failed")
    assert count_rows(stepperslife_url, "events") == 1


def test_the_edges_of_the_window_are_accepted(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    for date in ("2099-12-31T23:59:59-12:00", "2000-01-01T00:00:00+14:00"):
        event = create_event(api, users["user"], event_date=date, status="published")
        assert api.request("GET", f"/events/{event['id']}").status == 200
