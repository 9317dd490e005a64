"""Content enhancement: the offline enhancer's limits, flowise's HTTP contract against a fake flowise
server on 127.0.0.1 (including its failures), and storage in events.metadata + Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
import redis

from functions.platform.adapters.postgres import Database
from functions.stepperslife.adapters.flowise import FlowiseEnhancer
from functions.stepperslife.services.enhancement import (
    META_DESCRIPTION_LIMIT,
    SOCIAL_LIMITS,
    ContentEnhancementService,
    EnhancedContent,
    EventContent,
    OfflineEnhancer,
    fit,
)
from tests.conftest import add_user

EVENT = EventContent(
    id="8f1d2c3b-0000-4000-8000-000000000001",
    title="Chicago Steppers Night",
    description="Smooth stepping all night with DJ Ray. Beginners welcome: a free lesson opens the night. "
    "Dress to impress; the dance floor is sprung maple.",
    category="social",
    tags=("stepping", "live-dj"),
    location="Chicago, IL",
    event_date=datetime(2030, 5, 17, 1, 0, tzinfo=UTC),
    time_zone="America/Chicago",
    url="https://stepperslife.com/events/chicago-steppers-night",
)


def assert_within_limits(content: EnhancedContent) -> None:
    assert 0 < len(content.meta_description) <= META_DESCRIPTION_LIMIT
    assert set(content.social) == set(SOCIAL_LIMITS)
    for network, limit in SOCIAL_LIMITS.items():
        assert 0 < len(content.social[network]) <= limit, network


# --- the offline enhancer ---------------------------------------------------------------------------


def test_offline_content_is_derived_from_the_fields() -> None:
    content = OfflineEnhancer().enhance(EVENT)
    assert content.source == "offline"
    assert_within_limits(content)
    # The event's local time, not UTC: 01:00 UTC on the 17th is 8 PM CDT on the 16th.
    assert "Chicago Steppers Night" in content.meta_description
    assert "May 16, 2030 at 8:00 PM CDT" in content.meta_description
    assert content.keywords[:4] == ("social", "stepping", "live-dj", "chicago")
    assert "steppers" in content.keywords and len(content.keywords) <= 10
    for post in content.social.values():
        assert post.startswith("Chicago Steppers Night: Thu, May 16, 2030 at 8:00 PM CDT in Chicago, IL.")
        assert EVENT.url in post
    assert "#Social" in content.social["x"] and "#LiveDj" in content.social["instagram"]
    assert "sprung maple" in content.social["linkedin"]  # the long networks carry the whole description


@pytest.mark.parametrize(
    ("event_date", "time_zone"),
    [
        (datetime(9999, 12, 31, 23, 0, tzinfo=UTC), "Pacific/Kiritimati"),  # +14:00: past year 9999
        (datetime(1, 1, 1, 0, 30, tzinfo=UTC), "America/Los_Angeles"),  # -07:53 (LMT): before year 1
    ],
)
def test_dates_at_the_calendar_edge_still_make_content(event_date: datetime, time_zone: str) -> None:
    # Rows written before the API checked its date window must not make a step fail into the DLQ.
    content = OfflineEnhancer().enhance(replace(EVENT, event_date=event_date, time_zone=time_zone))
    assert event_date.isoformat() in content.meta_description
    assert_within_limits(content)


def test_offline_content_stays_within_limits_for_huge_fields() -> None:
    huge = EventContent(
        **{
            **EVENT.__dict__,
            "title": "Stepping " * 28,
            "description": "Marathon of stepping and line dancing. " * 200,
            "tags": tuple(f"tag{i}" for i in range(20)),
            "location": None,
        }
    )
    content = OfflineEnhancer().enhance(huge)
    assert_within_limits(content)
    assert content.meta_description.endswith("…")
    assert content.social["x"].endswith("…") or len(content.social["x"]) <= 280


def test_fit_cuts_at_a_word_boundary() -> None:
    assert fit("short", 10) == "short"
    cut = fit("one two three four five six", 15)
    assert cut == "one two three…" and len(cut) <= 15


# --- flowise over HTTP -------------------------------------------------------------------------------


@dataclass
class FakeFlowise:
    """Answers like flowise's prediction API; records what it was sent."""

    reply_text: str = ""
    status: int = 200
    hang: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def flowise() -> Iterator[tuple[FakeFlowise, str]]:
    fake = FakeFlowise()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            fake.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(self.rfile.read(length))}
            )
            if fake.hang:
                fake.release.wait(10)
            body = json.dumps({"text": fake.reply_text}).encode() if fake.status == 200 else b"{}"
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/"
    fake.release.set()
    server.shutdown()
    server.server_close()


def flowise_enhancer(url: str, timeout: float = 5.0) -> FlowiseEnhancer:
    return FlowiseEnhancer(
        base_url=url,
        chatflow_id="chatflow-1",
        api_key="flowise-key",
        timeout_seconds=timeout,
        fallback=OfflineEnhancer(),
    )


def test_flowise_request_and_answer(flowise: tuple[FakeFlowise, str]) -> None:
    fake, url = flowise
    answer = {
        "meta_description": "Step into the night in Chicago.",
        "keywords": ["Stepping", "chicago", "stepping"],
        "social": {
            "x": "X " * 200,  # longer than X allows: cut, not rejected
            "facebook": "Facebook post",
            "instagram": "Instagram caption",
            "linkedin": "LinkedIn post",
        },
    }
    fake.reply_text = "Here you go:\n```json\n" + json.dumps(answer) + "\n```"
    content = flowise_enhancer(url).enhance(EVENT)

    [request] = fake.requests
    assert request["path"] == "/api/v1/prediction/chatflow-1"
    assert request["headers"]["Authorization"] == "Bearer flowise-key"
    assert request["headers"]["Content-Type"] == "application/json"
    assert set(request["body"]) == {"question"}
    assert "Chicago Steppers Night" in request["body"]["question"]
    assert "meta_description" in request["body"]["question"]

    assert content.source == "flowise"
    assert content.meta_description == "Step into the night in Chicago."
    assert content.keywords == ("stepping", "chicago")
    assert content.social["facebook"] == "Facebook post"
    assert_within_limits(content)


@pytest.mark.parametrize(
    ("status", "reply"),
    [
        (500, ""),  # flowise is failing
        (200, "I cannot help with that."),  # no JSON in the answer
        (200, json.dumps({"meta_description": "x", "keywords": [], "social": {"x": "only x"}})),  # incomplete
    ],
)
def test_flowise_failure_falls_back_to_offline(flowise: tuple[FakeFlowise, str], status: int, reply: str) -> None:
    fake, url = flowise
    fake.status, fake.reply_text = status, reply
    content = flowise_enhancer(url).enhance(EVENT)
    assert len(fake.requests) == 1
    assert content == OfflineEnhancer().enhance(EVENT)


def test_flowise_timeout_falls_back_to_offline(flowise: tuple[FakeFlowise, str]) -> None:
    fake, url = flowise
    fake.hang = True
    content = flowise_enhancer(url, timeout=0.2).enhance(EVENT)
    assert content.source == "offline"
    assert len(fake.requests) == 1


def test_flowise_unreachable_falls_back_to_offline() -> None:
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    content = flowise_enhancer("http://127.0.0.1:9").enhance(EVENT)
    assert content.source == "offline"


# --- storage: events.metadata and Redis ----------------------------------------------------------------


class CountingEnhancer(OfflineEnhancer):
    def __init__(self) -> None:
        self.calls = 0

    def enhance(self, event: EventContent) -> EnhancedContent:
        self.calls += 1
        return super().enhance(event)


@pytest.fixture
def event_id(stepperslife_url: str, clean_stepperslife: None) -> str:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        organizer = add_user(conn, "org")
        row = conn.execute(
            "INSERT INTO events (user_id, title, slug, description, event_date, time_zone, location, category, "
            "capacity, status, published_at, tags, metadata) VALUES (%s, %s, 'chicago-steppers-night', %s, %s, "
            "%s, %s, 'social', 10, 'published', now(), %s, '{\"kept\": 1}') RETURNING id",
            (
                organizer,
                EVENT.title,
                EVENT.description,
                EVENT.event_date,
                EVENT.time_zone,
                EVENT.location,
                list(EVENT.tags),
            ),
        ).fetchone()
        assert row is not None
        return str(row[0])


def test_enhancement_is_stored_and_cached(stepperslife_url: str, redis_url: str, event_id: str) -> None:
    db = Database(stepperslife_url)
    client = redis.Redis.from_url(redis_url)
    enhancer = CountingEnhancer()
    service = ContentEnhancementService(db, enhancer, client, "https://stepperslife.com")
    try:
        record = service.enhance_event(event_id)
        assert record is not None and record["source"] == "offline"
        with psycopg.connect(stepperslife_url) as conn:
            row = conn.execute("SELECT metadata FROM events WHERE id = %s", (event_id,)).fetchone()
        assert row is not None
        metadata = row[0]
        assert metadata["kept"] == 1  # other metadata survives
        assert metadata["enhanced"] == record
        assert EVENT.url in metadata["enhanced"]["social"]["x"]

        key = f"ai:content:event:{event_id}:v1"
        cached = client.get(key)
        assert cached is not None and json.loads(cached) == record
        assert 0 < int(client.ttl(key)) <= 3600

        # Unchanged fields: no second call to the enhancer (a paid API, possibly).
        assert service.enhance_event(event_id) == record
        assert enhancer.calls == 1
        with psycopg.connect(stepperslife_url, autocommit=True) as conn:
            conn.execute("UPDATE events SET title = 'Chicago Steppers Gala' WHERE id = %s", (event_id,))
        changed = service.enhance_event(event_id)
        assert changed is not None and enhancer.calls == 2
        assert "Chicago Steppers Gala" in changed["meta_description"]
    finally:
        client.delete(f"ai:content:event:{event_id}:v1")
        db.close()


def test_enhancement_of_a_deleted_event_is_a_no_op(stepperslife_url: str) -> None:
    db = Database(stepperslife_url)
    try:
        service = ContentEnhancementService(db, OfflineEnhancer(), None, "https://stepperslife.com")
        assert service.enhance_event("00000000-0000-4000-8000-000000000000") is None
    finally:
        db.close()


class DownRedis:
    """Every command fails the way redis-py fails when the server is unreachable."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("connection refused")

        return fail


def test_enhancement_survives_redis_being_down(stepperslife_url: str, event_id: str) -> None:
    db = Database(stepperslife_url)
    try:
        service = ContentEnhancementService(db, OfflineEnhancer(), DownRedis(), "https://x.test")
        record = service.enhance_event(event_id)
        assert record is not None and record["source"] == "offline"
        with psycopg.connect(stepperslife_url) as conn:
            row = conn.execute("SELECT metadata -> 'enhanced' FROM events WHERE id = %s", (event_id,)).fetchone()
        assert row is not None and row[0] == record
    finally:
        db.close()
