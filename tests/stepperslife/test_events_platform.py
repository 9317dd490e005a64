"""SteppersLife behaviour beyond the first slice: waiting lists, check-in, attendees, idempotency,
filters, search, public caching, recommendations, preferences, Redis degradation."""

from __future__ import annotations

import csv
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from functions.platform.adapters.cloudflare_kv import LoggingEdgeCache
from functions.platform.adapters.postgres import Database
from functions.platform.cache import Cache
from functions.stepperslife.composition import container
from functions.stepperslife.services.events import EventFilters, EventService
from functions.stepperslife.services.invalidation import EventInvalidation
from functions.stepperslife.services.registrations import RegistrationService
from shared.envelope import Identity
from tests.conftest import EdgeSignedClient, create_user
from tests.stepperslife.test_api import FUTURE, assert_error, create_event


def register(api: EdgeSignedClient, event_id: str, who: Identity, **headers: str) -> Any:
    return api.request("POST", f"/events/{event_id}/registrations", identity=who, headers=headers)


def outbox_topics(url: str) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        return [(row[0], row[1]) for row in conn.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()]


# --- waiting list -------------------------------------------------------------------------------------


def test_cancellation_promotes_the_first_waiting_person(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    event = create_event(api, users["admin"], status="published", capacity=1)
    extra = create_user(api, stepperslife_url)
    assert register(api, event["id"], users["user"]).json["registration"]["status"] == "registered"
    first_waiting = register(api, event["id"], users["user2"]).json["registration"]
    second_waiting = register(api, event["id"], extra).json["registration"]
    assert (first_waiting["waitlist_position"], second_waiting["waitlist_position"]) == (1, 2)

    cancelled = api.request("DELETE", f"/events/{event['id']}/registrations/me", identity=users["user"])
    assert cancelled.status == 200 and cancelled.json["registration"]["status"] == "cancelled"
    mine = api.request("GET", "/me/registrations", identity=users["user2"]).json["items"][0]
    assert mine["status"] == "registered"
    theirs = api.request("GET", "/me/registrations", identity=extra).json["items"][0]
    assert theirs["waitlist_position"] == 1
    promoted = [payload for topic, payload in outbox_topics(stepperslife_url) if topic == "registration.promoted"]
    assert promoted == [{"registration_id": mine["id"], "user_id": users["user2"].user_id, "event_id": event["id"]}]
    assert api.request("GET", f"/events/{event['id']}").json["event"]["seats_left"] == 0
    assert_error(api.request("DELETE", f"/events/{event['id']}/registrations/me", identity=users["user"]), 404)


def test_cancelling_a_waitlisted_place_frees_no_seat(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["admin"], status="published", capacity=1)
    register(api, event["id"], users["user"])
    register(api, event["id"], users["user2"])
    api.request("DELETE", f"/events/{event['id']}/registrations/me", identity=users["user2"])
    assert api.request("GET", f"/events/{event['id']}").json["event"]["seats_left"] == 0
    again = register(api, event["id"], users["user2"]).json["registration"]
    assert again["status"] == "waitlisted" and again["waitlist_position"] == 1


def test_concurrent_registrations_never_oversell(settings: Any, api: EdgeSignedClient, stepperslife_url: str) -> None:
    organizer = create_user(api, stepperslife_url, role="admin")
    event = create_event(api, organizer, status="published", capacity=5)
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        ids = [
            str(row[0])
            for row in conn.execute(
                "INSERT INTO users (email, name, password_hash) SELECT 'c' || g || '@example.com', 'C', 'scrypt$x' "
                "FROM generate_series(1, 60) g RETURNING id"
            ).fetchall()
        ]
    db = Database(stepperslife_url, max_size=20)
    service = RegistrationService(db, recommendations=container().recommendations, outbox=container().outbox_relay)
    start = threading.Barrier(20)

    def attempt(user_id: str) -> str:
        if ids.index(user_id) < 20:
            start.wait()
        return str(service.register(event["id"], Identity(user_id=user_id, role="user"))["status"])

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(attempt, ids))
    finally:
        db.close()
    assert statuses.count("registered") == 5 and statuses.count("waitlisted") == 55
    attendees = api.request("GET", f"/events/{event['id']}/registrations?status=waitlisted", identity=organizer)
    assert sorted(item["waitlist_position"] for item in attendees.json["items"]) == list(range(1, 56))


# --- organizer tools -----------------------------------------------------------------------------------


def test_check_in_and_attendee_access_per_role(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"], status="published", capacity=1)
    registration = register(api, event["id"], users["user2"]).json["registration"]
    waiting = register(api, event["id"], users["customer"]).json["registration"]
    path = f"/events/{event['id']}/registrations"
    check_in = f"{path}/{registration['id']}/check-in"
    assert_error(api.request("GET", path), 401)
    for outsider in ("user2", "customer"):
        assert_error(api.request("GET", path, identity=users[outsider]), 403)
        assert_error(api.request("POST", check_in, identity=users[outsider]), 403)
    assert_error(api.request("POST", f"{path}/{waiting['id']}/check-in", identity=users["user"]), 409, "not_registered")
    for organizer in ("user", "admin"):
        done = api.request("POST", check_in, identity=users[organizer])
        assert done.status == 200 and done.json["registration"]["status"] == "checked_in"
    listing = api.request("GET", path, identity=users["admin"]).json["items"]
    assert {item["status"] for item in listing} == {"checked_in", "waitlisted"}
    assert_error(api.request("DELETE", f"/events/{event['id']}/registrations/me", identity=users["user2"]), 409)


def test_csv_export_is_safe_for_spreadsheets(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    event = create_event(api, users["user"], status="published")
    sneaky = api.request(
        "POST",
        "/users",
        json_body={"email": "x@example.com", "name": '=HYPERLINK("http://evil")', "password": "correct horse battery"},
    ).json["user"]
    register(api, event["id"], Identity(user_id=sneaky["id"], role="user"))
    response = api.request("GET", f"/events/{event['id']}/registrations.csv", identity=users["user"])
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.body.decode())))
    assert rows[0] == ["name", "email", "status", "waitlist_position", "registration_date", "id"]
    assert rows[1][0] == '\'=HYPERLINK("http://evil")' and rows[1][2] == "registered"
    assert_error(api.request("GET", f"/events/{event['id']}/registrations.csv", identity=users["user2"]), 403)


# --- Idempotency-Key -----------------------------------------------------------------------------------


def test_retried_registration_returns_the_first_response(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    event = create_event(api, users["admin"], status="published", capacity=3)
    first = register(api, event["id"], users["user"], **{"Idempotency-Key": "reg-123"})
    retry = register(api, event["id"], users["user"], **{"Idempotency-Key": "reg-123"})
    assert first.status == retry.status == 201
    assert retry.json == first.json and retry.headers.get("Idempotent-Replayed") == "true"
    with psycopg.connect(stepperslife_url) as conn:
        assert conn.execute("SELECT count(*) FROM event_registrations").fetchone() == (1,)
    other = register(api, event["id"], users["user2"], **{"Idempotency-Key": "reg-123"})
    assert other.status == 201, "keys are scoped per user"


def test_idempotency_key_reused_for_another_request_is_refused(
    api: EdgeSignedClient, users: dict[str, Identity]
) -> None:
    body = {"title": "A", "event_date": FUTURE.isoformat(), "capacity": 5}
    first = api.request("POST", "/events", identity=users["user"], json_body=body, headers={"Idempotency-Key": "k1"})
    assert first.status == 201
    again = api.request("POST", "/events", identity=users["user"], json_body=body, headers={"Idempotency-Key": "k1"})
    assert again.json == first.json
    other = api.request("POST", "/events", identity=users["user"], json_body={**body, "title": "B"},
                        headers={"Idempotency-Key": "k1"})  # fmt: skip
    assert_error(other, 422, "idempotency_key_reused")
    assert_error(api.request("POST", "/events", identity=users["user"], json_body=body,
                             headers={"Idempotency-Key": "bad key!"}), 422)  # fmt: skip
    assert len(api.request("GET", f"/events?organizer={users['user'].user_id}").json["items"]) == 0  # drafts
    assert api.request("GET", f"/events/{first.json['event']['id']}", identity=users["user"]).status == 200


def test_a_failed_request_can_be_retried_with_its_key(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["admin"])  # a draft: registering is a 404
    first = register(api, event["id"], users["user"], **{"Idempotency-Key": "k2"})
    assert_error(first, 404)
    replay = register(api, event["id"], users["user"], **{"Idempotency-Key": "k2"})
    assert replay.status == 404 and replay.json == first.json


# --- listing filters, public caching -------------------------------------------------------------------


def test_listing_filters(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    def make(title: str, days: int, **extra: Any) -> dict[str, Any]:
        return create_event(api, users["user"], status="published", title=title,
                            event_date=(FUTURE + timedelta(days=days)).isoformat(), **extra)  # fmt: skip

    make("Salsa Social", 1, category="salsa", location="Chicago, IL", tags=["beginner"])
    make("Steppers Ball", 5, category="steppin", location="Detroit, MI", tags=["formal"])
    make("Line Dance", 9, category="line-dance", location="Chicago 100%_Club", tags=["beginner"])
    admin_event = create_event(api, users["admin"], status="published", title="Admin Night", location="Atlanta")

    def titles(query: str) -> list[str]:
        return [item["title"] for item in api.request("GET", "/events" + query).json["items"]]

    assert titles("?category=salsa") == ["Salsa Social"]
    assert titles("?location=chicago") == ["Line Dance", "Salsa Social"]
    assert titles("?location=100%25_") == ["Line Dance"], "% and _ in a filter are literal"
    assert titles("?tag=beginner") == ["Line Dance", "Salsa Social"]
    after = (FUTURE + timedelta(days=3)).isoformat().replace("+", "%2B")
    assert titles(f"?from={after}") == ["Line Dance", "Steppers Ball"]
    assert titles(f"?organizer={users['admin'].user_id}") == [admin_event["title"]]
    assert_error(api.request("GET", "/events?from=yesterday"), 422)


def test_public_reads_carry_etag_and_are_cached(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"], status="published")
    first = api.request("GET", "/events")
    assert first.headers["Cache-Control"] == "public, max-age=60, s-maxage=300"
    assert first.headers["X-Origin-Cache"] == "MISS"
    second = api.request("GET", "/events")
    assert second.headers["X-Origin-Cache"] == "HIT" and second.body == first.body
    not_modified = api.request("GET", "/events", headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status == 304 and not_modified.body == b""
    api.request("PATCH", f"/events/{event['id']}", identity=users["user"], json_body={"title": "Renamed"})
    third = api.request("GET", "/events")
    assert third.headers["X-Origin-Cache"] == "MISS" and third.json["items"][0]["title"] == "Renamed"
    assert third.headers["ETag"] != first.headers["ETag"]
    private = api.request("GET", "/events", identity=users["user"])
    assert private.headers["Cache-Control"] == "private, no-store" and "ETag" not in private.headers


def test_redis_down_degrades_to_postgres(
    stepperslife_url: str, api: EdgeSignedClient, users: dict[str, Identity]
) -> None:
    import redis

    create_event(api, users["user"], status="published", title="Still Served")
    dead_redis = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    db = Database(stepperslife_url)
    try:
        cache = Cache(dead_redis)
        service = EventService(
            db, cache, invalidation=EventInvalidation(cache, LoggingEdgeCache()), outbox=container().outbox_relay
        )
        page, hit = service.list_published(limit=10, cursor=None, filters=EventFilters())
    finally:
        db.close()
    assert hit is False and [item["title"] for item in page["items"]] == ["Still Served"]


# --- search -------------------------------------------------------------------------------------------


def test_search_ranks_and_filters(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    create_event(
        api,
        users["user"],
        status="published",
        title="Chicago Steppers Championship",
        description="The biggest steppin contest",
        category="steppin",
        location="Chicago, IL",
        tags=["contest"],
    )
    create_event(
        api,
        users["user"],
        status="published",
        title="Salsa in the Park",
        description="Outdoor salsa with a steppers corner",
        category="salsa",
        location="Chicago, IL",
    )
    create_event(api, users["user"], status="published", title="Jazz Brunch", category="music", location="Detroit")
    create_event(api, users["user"], title="Steppers Draft Party")  # drafts are never found

    result = api.request("GET", "/events/search?q=steppers").json
    assert [item["title"] for item in result["items"]] == ["Chicago Steppers Championship", "Salsa in the Park"]
    assert result["items"][0]["rank"] >= result["items"][1]["rank"]
    natural = api.request("GET", "/events/search?q=steppers%20category:salsa").json
    assert [item["title"] for item in natural["items"]] == ["Salsa in the Park"]
    assert natural["filters"] == {"category": "salsa"}
    by_tag = api.request("GET", "/events/search?q=tag:contest").json
    assert [item["title"] for item in by_tag["items"]] == ["Chicago Steppers Championship"]
    assert_error(api.request("GET", "/events/search?q=after:someday"), 400, "bad_search_filter")
    assert_error(api.request("GET", "/events/search"), 422)


def test_search_tolerates_typos_where_pg_trgm_exists(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    create_event(api, users["user"], status="published", title="Chicago Steppers Championship")
    result = api.request("GET", "/events/search?q=stepers%20championshp").json
    if not result["typo_tolerant"]:
        pytest.skip("pg_trgm is not installed on this PostgreSQL: search runs without typo tolerance")
    assert [item["title"] for item in result["items"]] == ["Chicago Steppers Championship"]


# --- recommendations and preferences ------------------------------------------------------------------


def test_recommendations_follow_preferences_and_history(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    me = users["user2"]
    salsa = create_event(
        api, users["user"], status="published", title="Salsa Night", category="salsa", location="Chicago"
    )
    steppin = create_event(api, users["user"], status="published", title="Steppin Social", category="steppin")
    past = create_event(api, users["user"], status="published", title="Steppin Lesson", category="steppin")
    full = create_event(api, users["user"], status="published", title="Full House", category="salsa", capacity=1)
    register(api, full["id"], users["customer"])
    register(api, past["id"], me)

    assert_error(api.request("GET", "/me/recommendations"), 401)
    prefs = api.request("PUT", "/me/preferences", identity=me,
                        json_body={"categories": ["salsa"], "locations": ["Chicago"], "notify": True})  # fmt: skip
    assert prefs.status == 200 and prefs.json["preferences"]["categories"] == ["salsa"]
    assert_error(api.request("PUT", "/me/preferences", identity=me, json_body={"categories": ["Not A Slug"]}), 422)
    assert api.request("GET", "/me/preferences", identity=me).json["preferences"]["notify"] is True

    first = api.request("GET", "/me/recommendations", identity=me).json
    ids = [item["event"]["id"] for item in first["items"]]
    assert ids == [salsa["id"], steppin["id"]], "full and already-registered events are left out"
    assert "you follow salsa events" in first["items"][0]["reasons"]
    assert any("before" in reason for reason in first["items"][1]["reasons"])
    assert first["cached"] is False
    assert api.request("GET", "/me/recommendations", identity=me).json["cached"] is True
    register(api, salsa["id"], me)
    after = api.request("GET", "/me/recommendations", identity=me).json
    assert after["cached"] is False and [item["event"]["id"] for item in after["items"]] == [steppin["id"]]


def test_publishing_writes_the_outbox_once(
    api: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    event = create_event(api, users["user"])
    assert outbox_topics(stepperslife_url) == []
    api.request("PATCH", f"/events/{event['id']}", identity=users["user"], json_body={"status": "published"})
    api.request("PATCH", f"/events/{event['id']}", identity=users["user"], json_body={"title": "New"})
    api.request("PATCH", f"/events/{event['id']}", identity=users["user"], json_body={"status": "cancelled"})
    topics = [topic for topic, _ in outbox_topics(stepperslife_url)]
    assert topics == ["event.published", "event.updated", "event.cancelled"]


def test_cache_single_flight_loads_once_under_a_stampede(redis_url: str) -> None:
    import redis

    cache = Cache(redis.Redis.from_url(redis_url))
    key = f"stepperslife:test:stampede:{threading.get_ident()}:v1"
    cache.delete(key)
    calls: list[int] = []
    gate = threading.Barrier(12)

    def slow_load() -> dict[str, int]:
        calls.append(1)
        threading.Event().wait(0.3)  # long enough that every other caller arrives while it loads
        return {"answer": 42}

    def read(_: int) -> tuple[dict[str, int], bool]:
        gate.wait()
        return cache.get_or_load(key, 60, slow_load)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(read, range(12)))
    assert len(calls) == 1
    assert all(value == {"answer": 42} for value, _ in results)
    assert sum(1 for _, hit in results if not hit) == 1
    cache.delete(key)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/events"),
        ("PATCH", "/events/{event}"),
        ("DELETE", "/events/{event}"),
        ("POST", "/events/{event}/registrations"),
        ("DELETE", "/events/{event}/registrations/me"),
        ("GET", "/events/{event}/registrations"),
        ("GET", "/events/{event}/registrations.csv"),
        ("POST", "/events/{event}/registrations/{event}/check-in"),
        ("POST", "/events/{event}/images"),
        ("GET", "/me/registrations"),
        ("GET", "/me/preferences"),
        ("PUT", "/me/preferences"),
        ("GET", "/me/recommendations"),
        ("POST", "/push/subscriptions"),
        ("DELETE", "/push/subscriptions"),
    ],
)
def test_anonymous_callers_get_401_on_every_identified_route(
    api: EdgeSignedClient, users: dict[str, Identity], method: str, path: str
) -> None:
    event = create_event(api, users["user"], status="published")
    response = api.request(method, path.format(event=event["id"]), json_body={})
    assert_error(response, 401, "authentication_required")
