"""Web push: subscription routes, SSRF checks, and delivery to a fake push service on 127.0.0.1 that
decrypts every payload with the subscription's own private key and checks the VAPID signature."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from devstack.cli import main as cli_main
from functions.platform.adapters.cloudflare_kv import CloudflareEdgeCache, CloudflareKvNamespace, CloudflareKvPruner
from functions.platform.adapters.postgres import Database
from functions.platform.adapters.webpush import WebPushSender, generate_vapid_keys, load_private_key, public_key_of
from functions.platform.cache import Cache
from functions.platform.claims import Claims
from functions.platform.config import ConfigurationError, Settings
from functions.platform.outbound import GuardedHttpClient
from functions.platform.push import FanOutReport, Notification, PushDelivery, Subscription, retry_delay
from functions.stepperslife.composition import Container, container
from functions.stepperslife.services.engagement import EngagementService
from functions.stepperslife.services.push import PushService
from functions.stepperslife.services.recommendations import RecommendationService
from shared.envelope import Identity
from shared.errors import ValidationFailed
from shared.kv_keys import endpoint_hash
from shared.net import UnsafeUrl, check_public_https_url
from shared.push_subscription import validate_keys
from tests.conftest import EdgeSignedClient, add_user, create_user
from tests.http_fakes import Browser, FakePushService, b64url, running_push_service

SUBJECT = "mailto:ops@stepperslife.com"


@pytest.fixture
def push_service() -> Iterator[FakePushService]:
    with running_push_service() as fake:
        yield fake


class RecordingPruner:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, endpoint_hash: str) -> None:
        self.deleted.append(endpoint_hash)


@dataclass
class Harness:
    service: PushService
    pruner: RecordingPruner
    sleeps: list[float]
    public_key: str
    conn: psycopg.Connection[Any]


@pytest.fixture(scope="module")
def vapid_private_key() -> str:
    return generate_vapid_keys()[0]


@pytest.fixture
def harness(stepperslife_url: str, clean_stepperslife: None, vapid_private_key: str) -> Iterator[Harness]:
    db = Database(stepperslife_url)
    sender = WebPushSender(
        private_key=vapid_private_key, subject=SUBJECT, client=GuardedHttpClient(allow_hosts={"127.0.0.1"})
    )
    pruner = RecordingPruner()
    sleeps: list[float] = []

    def check(url: str) -> None:
        check_public_https_url(url, allow_hosts={"127.0.0.1"})

    delivery = PushDelivery(sender, check_endpoint=check, concurrency=4, sleep=sleeps.append)
    service = PushService(
        db, delivery=delivery, pruner=pruner, check_endpoint=check, site_url="https://stepperslife.com"
    )
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        yield Harness(service, pruner, sleeps, sender.public_key, conn)
    db.close()


def add_event(conn: psycopg.Connection[Any], organizer: str, **fields: Any) -> str:
    values = {
        "title": "Chicago Steppers Night",
        "slug": f"chicago-steppers-night-{time.time_ns()}",
        "category": "social",
        "location": "Chicago, IL",
        "status": "published",
        **fields,
    }
    row = conn.execute(
        "INSERT INTO events (user_id, title, slug, category, location, status, capacity, event_date, published_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, 10, now() + interval '10 days', now()) RETURNING id",
        (organizer, values["title"], values["slug"], values["category"], values["location"], values["status"]),
    ).fetchone()
    assert row is not None
    return str(row[0])


def subscribe(h: Harness, fake: FakePushService, user_id: str, name: str, *script: tuple[int, dict[str, str]]) -> None:
    browser = fake.browser(name, *script)
    _, created = h.service.subscribe(
        Identity(user_id=user_id, role="user"), fake.endpoint(name), browser.p256dh, browser.auth
    )
    assert created


def count(conn: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def subscriptions(conn: psycopg.Connection[Any]) -> list[Subscription]:
    rows = conn.execute("SELECT id, user_id, endpoint, endpoint_hash, p256dh, auth FROM push_subscriptions").fetchall()
    return [Subscription(*(str(value) for value in row)) for row in rows]


NOTE = Notification(
    title="New event: Chicago Steppers Night",
    body="Sat, May 16, 2026 at 8:00 PM CDT",
    url="https://stepperslife.com/events/chicago-steppers-night",
    kind="event.published",
    event_id="8f1d2c3b-0000-4000-8000-000000000001",
    ttl=3600,
    urgency="low",
)


# --- delivery ----------------------------------------------------------------------------------------


def test_each_payload_is_encrypted_for_its_subscription_and_signed(
    harness: Harness, push_service: FakePushService
) -> None:
    user = add_user(harness.conn, "fan")
    for name in ("alpha", "beta", "gamma"):
        subscribe(harness, push_service, user, name)

    report = harness.service.send(subscriptions(harness.conn), NOTE)

    assert report == FanOutReport(sent=3)
    assert sorted(r.name for r in push_service.received) == ["alpha", "beta", "gamma"]
    for received in push_service.received:
        assert received.message == {
            "title": NOTE.title,
            "body": NOTE.body,
            "url": NOTE.url,
            "kind": "event.published",
            "event_id": NOTE.event_id,
        }
        headers = received.headers
        assert headers["content-encoding"] == "aes128gcm"
        assert headers["ttl"] == "3600"
        assert headers["urgency"] == "low"
        assert headers["topic"] == NOTE.topic == "publish-8f1d2c3b0000400080000000"
        scheme, _, params = headers["authorization"].partition(" ")
        assert scheme == "vapid"
        fields = dict(part.split("=", 1) for part in params.split(","))
        assert fields["k"] == harness.public_key
        assert Vapid02.verify(headers["authorization"])
        claims = json.loads(base64.urlsafe_b64decode(fields["t"].split(".")[1] + "=="))
        assert claims["aud"] == push_service.base_url and claims["sub"] == SUBJECT
        assert claims["exp"] > time.time()


def test_gone_subscriptions_are_deleted_here_and_at_the_edge(harness: Harness, push_service: FakePushService) -> None:
    user = add_user(harness.conn, "fan")
    subscribe(harness, push_service, user, "kept")
    subscribe(harness, push_service, user, "expired", (410, {}))
    subscribe(harness, push_service, user, "unknown", (404, {}))

    report = harness.service.send(subscriptions(harness.conn), NOTE)

    assert report == FanOutReport(sent=1, pruned=2)
    endpoints = [s.endpoint for s in subscriptions(harness.conn)]
    assert endpoints == [push_service.endpoint("kept")]
    gone = {endpoint_hash(push_service.endpoint(name)) for name in ("expired", "unknown")}
    assert set(harness.pruner.deleted) == gone
    assert all(len(value) == 64 for value in gone)


def test_busy_and_failing_services_are_retried_with_backoff(harness: Harness, push_service: FakePushService) -> None:
    user = add_user(harness.conn, "fan")
    subscribe(harness, push_service, user, "throttled", (429, {"Retry-After": "2"}))
    subscribe(harness, push_service, user, "flaky", (503, {}))
    subscribe(harness, push_service, user, "down", (500, {}), (502, {}), (500, {}))
    subscribe(harness, push_service, user, "patient", (429, {"Retry-After": "3600"}))
    subscribe(harness, push_service, user, "refused", (400, {}))

    report = harness.service.send(subscriptions(harness.conn), NOTE)

    assert report == FanOutReport(sent=2, failed=3)
    assert push_service.attempts == {"throttled": 2, "flaky": 2, "down": 3, "patient": 1, "refused": 1}
    # Retry-After honoured (2 s); otherwise 1 s then 2 s; a wait beyond the bound is not attempted.
    assert sorted(harness.sleeps) == [1.0, 1.0, 2.0, 2.0]
    assert len(subscriptions(harness.conn)) == 5  # failures are not prunes


def test_an_unreachable_push_service_is_retried_then_given_up(harness: Harness) -> None:
    user = add_user(harness.conn, "fan")
    browser = Browser("x")
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    harness.service.subscribe(
        Identity(user_id=user, role="user"), "http://127.0.0.1:9/push/x", browser.p256dh, browser.auth
    )
    assert harness.service.send(subscriptions(harness.conn), NOTE) == FanOutReport(failed=1)
    assert harness.sleeps == [1.0, 2.0]
    assert len(subscriptions(harness.conn)) == 1


def test_endpoints_are_checked_again_before_sending(harness: Harness, push_service: FakePushService) -> None:
    user = add_user(harness.conn, "fan")
    subscribe(harness, push_service, user, "fine")
    # Stored earlier, when the rules (or DNS) said otherwise.
    for endpoint in ("https://10.0.0.5/push/x", "http://169.254.169.254/latest/meta-data"):
        harness.conn.execute(
            "INSERT INTO push_subscriptions (user_id, endpoint, endpoint_hash, p256dh, auth) "
            "VALUES (%s, %s, %s, %s, %s)",
            (user, endpoint, endpoint_hash(endpoint), push_service.browsers["fine"].p256dh, "x"),
        )
    report = harness.service.send(subscriptions(harness.conn), NOTE)
    assert report == FanOutReport(sent=1, blocked=2)
    assert [r.name for r in push_service.received] == ["fine"]


def test_fan_out_concurrency_is_bounded(harness: Harness, push_service: FakePushService) -> None:
    user = add_user(harness.conn, "fan")
    for index in range(10):
        subscribe(harness, push_service, user, f"b{index}")
    push_service.hold_seconds = 0.05
    report = harness.service.send(subscriptions(harness.conn), NOTE)
    assert report == FanOutReport(sent=10)
    assert 1 <= push_service.max_inflight <= 4


def test_retry_delay_reads_seconds_and_http_dates() -> None:
    assert retry_delay(1, "7", base=1.0) == 7.0
    assert retry_delay(1, "Wed, 21 Oct 2015 07:28:30 GMT", base=1.0, now=1445412500.0) == 10.0
    assert retry_delay(1, "soon", base=1.0) == 1.0
    assert retry_delay(3, None, base=0.5) == 2.0


# --- who is told --------------------------------------------------------------------------------------


def test_published_event_reaches_matching_preferences_only(harness: Harness, push_service: FakePushService) -> None:
    conn = harness.conn
    organizer = add_user(conn, "organizer", {"notify": True})
    fans: dict[str, dict[str, Any]] = {
        "by-category": {"notify": True, "categories": ["social"]},
        "by-location": {"notify": True, "locations": ["chicago"]},
        "anything": {"notify": True},
        "both-match": {"notify": True, "categories": ["workshop", "social"], "locations": ["Chicago"]},
        "opted-out": {"notify": False, "categories": ["social"]},
        "other-category": {"notify": True, "categories": ["workshop"]},
        "other-city": {"notify": True, "categories": ["social"], "locations": ["Detroit"]},
        "malformed": {"notify": True, "categories": "social"},
        "no-preferences": {},
    }
    for name, preferences in fans.items():
        subscribe(harness, push_service, add_user(conn, name, preferences), name)
    subscribe(harness, push_service, organizer, "organizer")
    event_id = add_event(conn, organizer)

    report = harness.service.notify("event.published", {"event_id": event_id})

    told = sorted(r.name for r in push_service.received)
    assert told == ["anything", "both-match", "by-category", "by-location", "malformed"]
    assert report == FanOutReport(sent=5)
    message = push_service.received[0].message
    assert message["title"] == "New event: Chicago Steppers Night"
    assert message["kind"] == "event.published" and message["event_id"] == event_id
    assert message["url"].startswith("https://stepperslife.com/events/chicago-steppers-night-")
    headers = push_service.received[0].headers
    assert headers["urgency"] == "low"
    assert 0 < int(headers["ttl"]) <= 10 * 86400


def test_cancelled_event_reaches_its_registrants(harness: Harness, push_service: FakePushService) -> None:
    conn = harness.conn
    organizer = add_user(conn, "organizer")
    event_id = add_event(conn, organizer, status="cancelled")
    for name, status in (("seated", "registered"), ("waiting", "waitlisted"), ("left", "cancelled"), ("other", None)):
        user = add_user(conn, name)
        subscribe(harness, push_service, user, name)
        if status:
            conn.execute(
                "INSERT INTO event_registrations (user_id, event_id, status, waitlist_seq) VALUES (%s, %s, %s, %s)",
                (user, event_id, status, 1 if status == "waitlisted" else None),
            )

    harness.service.notify("event.cancelled", {"event_id": event_id})

    assert sorted(r.name for r in push_service.received) == ["seated", "waiting"]
    assert push_service.received[0].message["title"] == "Cancelled: Chicago Steppers Night"
    assert {r.headers["urgency"] for r in push_service.received} == {"high"}


def test_promotion_reaches_the_promoted_person(harness: Harness, push_service: FakePushService) -> None:
    conn = harness.conn
    organizer = add_user(conn, "organizer")
    event_id = add_event(conn, organizer)
    promoted, bystander = add_user(conn, "promoted"), add_user(conn, "bystander")
    subscribe(harness, push_service, promoted, "promoted")
    subscribe(harness, push_service, bystander, "bystander")
    for user in (promoted, bystander):
        conn.execute(
            "INSERT INTO event_registrations (user_id, event_id, status) VALUES (%s, %s, 'registered')",
            (user, event_id),
        )

    harness.service.notify("registration.promoted", {"event_id": event_id, "user_id": promoted})
    assert [r.name for r in push_service.received] == ["promoted"]
    assert push_service.received[0].message["title"] == "You're in: Chicago Steppers Night"

    # Cancelled again before the message was processed: nothing to announce.
    conn.execute("UPDATE event_registrations SET status = 'cancelled' WHERE user_id = %s", (promoted,))
    assert (
        harness.service.notify("registration.promoted", {"event_id": event_id, "user_id": promoted}) == FanOutReport()
    )


def test_notify_without_vapid_or_event_sends_nothing(harness: Harness, stepperslife_url: str) -> None:
    db = Database(stepperslife_url)
    try:
        unconfigured = PushService(
            db,
            delivery=PushDelivery(None, check_endpoint=lambda url: None),
            pruner=RecordingPruner(),
            check_endpoint=lambda url: None,
            site_url="https://x.test",
        )
        assert unconfigured.notify("event.published", {"event_id": NOTE.event_id}) == FanOutReport()
    finally:
        db.close()
    assert harness.service.notify("event.published", {"event_id": NOTE.event_id}) == FanOutReport()


# --- the edge's KV copy ----------------------------------------------------------------------------------


def test_kv_pruner_and_edge_cache_call_cloudflares_api() -> None:
    calls: list[tuple[str, str]] = []
    puts: list[tuple[str, str]] = []
    statuses = [200, 404, 500]

    class Handler(BaseHTTPRequestHandler):
        def do_DELETE(self) -> None:
            calls.append((self.path, self.headers.get("Authorization", "")))
            self.send_response(statuses.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            puts.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        namespace = CloudflareKvNamespace(
            api_base=f"http://127.0.0.1:{server.server_address[1]}/client/v4",
            account_id="acc123",
            namespace_id="ns456",
            api_token="cf-token",
        )
        pruner = CloudflareKvPruner(namespace)
        digest = "ab" * 32
        pruner.delete(digest)
        pruner.delete(digest)  # 404: already gone is fine
        with pytest.raises(OSError):
            pruner.delete(digest)
        edge_cache = CloudflareEdgeCache(namespace)
        edge_cache.invalidate("events")
        edge_cache.invalidate("events")
    finally:
        server.shutdown()
        server.server_close()
    path, auth = calls[0]
    assert path == f"/client/v4/accounts/acc123/storage/kv/namespaces/ns456/values/push%3A{digest}"
    assert unquote(path.rsplit("/", 1)[1]) == f"push:{digest}"
    assert auth == "Bearer cf-token"
    assert [path for path, _ in puts] == [
        "/client/v4/accounts/acc123/storage/kv/namespaces/ns456/values/ver%3Aevents"
    ] * 2
    assert puts[0][1] != puts[1][1], "each invalidation writes a new version"


# --- SSRF --------------------------------------------------------------------------------------------------


def fake_dns(host: str, port: int) -> list[str]:
    return {
        "push.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "rebound.example.com": ["93.184.216.34", "127.0.0.1"],
        "metadata.example.com": ["169.254.169.254"],
        "mapped.example.com": ["::ffff:10.0.0.1"],
    }.get(host, [])


@pytest.mark.parametrize(
    "url",
    [
        "http://push.example.com/x",  # not https
        "https://rebound.example.com/x",  # one of its addresses is loopback
        "https://metadata.example.com/x",
        "https://mapped.example.com/x",
        "https://nowhere.example.com/x",  # does not resolve
        "https://user:pw@push.example.com/x",
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://10.1.2.3/x",
        "https://192.168.0.1/x",
        "https://100.64.0.1/x",
        "https://0.0.0.0/x",
        "https://push.example.com:99999/x",
        "https://push.example.com:8443/x",  # push services listen on 443
        "ftp://push.example.com/x",
        "https:///x",
        "https://push.example.com/" + "x" * 2100,
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_public_https_url(url, resolver=fake_dns)


def test_public_urls_and_the_allow_list_pass() -> None:
    check_public_https_url("https://push.example.com/send/abc", resolver=fake_dns)
    check_public_https_url("https://PUSH.example.com:443/send", resolver=fake_dns)
    check_public_https_url("http://127.0.0.1:8080/push/x", allow_hosts={"127.0.0.1"})
    with pytest.raises(UnsafeUrl):
        check_public_https_url("http://127.0.0.2:8080/push/x", allow_hosts={"127.0.0.1"})


def test_literal_addresses_need_no_dns() -> None:
    check_public_https_url("https://8.8.8.8/x")
    with pytest.raises(UnsafeUrl):
        check_public_https_url("https://169.254.169.254/latest/meta-data/")


# --- keys and configuration ----------------------------------------------------------------------------------


def test_subscription_keys_are_validated() -> None:
    browser = Browser("x")
    validate_keys(browser.p256dh, browser.auth)
    validate_keys(browser.p256dh + "=", browser.auth + "==")  # padding is tolerated
    off_curve = b64url(b"\x04" + b"\x01" * 64)
    compressed = b64url(b"\x02" + b"\x01" * 32)
    for p256dh, auth in (
        (off_curve, browser.auth),
        (compressed, browser.auth),
        (browser.p256dh, b64url(b"\x00" * 15)),
        ("not base64!", browser.auth),
        (browser.p256dh, "a"),
    ):
        with pytest.raises(ValidationFailed):
            validate_keys(p256dh, auth)


def test_vapid_generate_prints_a_usable_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["vapid", "generate"]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert set(printed) == {"VAPID_PUBLIC_KEY", "VAPID_PRIVATE_KEY"}
    assert public_key_of(load_private_key(printed["VAPID_PRIVATE_KEY"])) == printed["VAPID_PUBLIC_KEY"]
    assert len(base64.urlsafe_b64decode(printed["VAPID_PUBLIC_KEY"] + "=")) == 65


def test_vapid_key_may_be_pem() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert public_key_of(load_private_key(pem)) == public_key_of(key)
    with pytest.raises(ValueError):
        load_private_key(b64url(b"short"))


def test_push_settings_from_the_environment() -> None:
    private_key, public_key = generate_vapid_keys()
    env = {
        "DATABASE_URL": "postgresql://localhost/x",
        "EDGE_SIGNING_SECRET": "s" * 40,
        "VAPID_PRIVATE_KEY": private_key,
        "VAPID_PUBLIC_KEY": public_key,
        "VAPID_SUBJECT": SUBJECT,
        "PUSH_ALLOW_HOSTS": " 127.0.0.1, Localhost ,",
        "PUSH_SUBS_KV_ID": "ns",
        "CLOUDFLARE_ACCOUNT_ID": "acc",
        "CLOUDFLARE_API_TOKEN": "token",
    }
    settings = Settings.from_env(env)
    assert settings.push.allow_hosts == ("127.0.0.1", "localhost")
    built = Container(settings)
    assert isinstance(built.push_sender, WebPushSender)
    assert isinstance(built.kv_pruner, CloudflareKvPruner)
    mismatched = Container(Settings.from_env({**env, "VAPID_PUBLIC_KEY": generate_vapid_keys()[1]}))
    with pytest.raises(ConfigurationError):
        _ = mismatched.push_sender
    assert Container(Settings.from_env({**env, "VAPID_PRIVATE_KEY": ""})).push_sender is None
    with pytest.raises(ConfigurationError):
        Settings.from_env({**env, "DOMAIN_EVENTS_VIA": "carrier-pigeon"})


# --- the routes ---------------------------------------------------------------------------------------------------


@pytest.fixture
def routed(api: EdgeSignedClient, monkeypatch: pytest.MonkeyPatch) -> EdgeSignedClient:
    """The API with a push service whose DNS is scripted (no network in tests)."""
    current = container()

    def check(url: str) -> None:
        check_public_https_url(url, resolver=fake_dns)

    service = PushService(
        current.db,
        delivery=PushDelivery(None, check_endpoint=check),
        pruner=RecordingPruner(),
        check_endpoint=check,
        site_url="https://stepperslife.com",
    )
    monkeypatch.setitem(current.__dict__, "push", service)
    return api


def subscription_body(endpoint: str = "https://push.example.com/send/abc", **keys: str) -> dict[str, Any]:
    browser = Browser("x")
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": browser.p256dh, "auth": browser.auth, **keys},
    }


def stored(stepperslife_url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(stepperslife_url) as conn:
        rows = conn.execute("SELECT user_id::text, endpoint, endpoint_hash FROM push_subscriptions ORDER BY endpoint")
        return [(str(a), str(b), str(c)) for a, b, c in rows.fetchall()]


def test_subscribe_requires_a_signed_in_user(routed: EdgeSignedClient, stepperslife_url: str) -> None:
    for method in ("POST", "DELETE"):
        response = routed.request(method, "/push/subscriptions", json_body=subscription_body())
        assert response.status == 401, response.body
        assert response.json["error"]["code"] == "authentication_required"
    assert stored(stepperslife_url) == []


@pytest.mark.parametrize("role", ["user", "customer", "admin"])
def test_every_role_subscribes_and_unsubscribes_its_own(
    routed: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str, role: str
) -> None:
    me = users[role]
    endpoint = f"https://push.example.com/send/{role}"
    body = subscription_body(endpoint)
    first = routed.request("POST", "/push/subscriptions", identity=me, json_body=body)
    assert first.status == 201, first.body
    subscription = first.json["subscription"]
    assert subscription["endpoint"] == endpoint
    assert subscription["endpoint_hash"] == hashlib.sha256(endpoint.encode()).hexdigest()
    assert "p256dh" not in subscription and "auth" not in subscription

    again = routed.request("POST", "/push/subscriptions", identity=me, json_body=body)
    assert again.status == 200 and again.json["subscription"]["id"] == subscription["id"]
    assert stored(stepperslife_url) == [(me.user_id, endpoint, subscription["endpoint_hash"])]

    # Someone else cannot remove it.
    other = users["user2"]
    refused = routed.request("DELETE", "/push/subscriptions", identity=other, json_body={"endpoint": endpoint})
    assert refused.status == 404 and len(stored(stepperslife_url)) == 1

    gone = routed.request("DELETE", "/push/subscriptions", identity=me, json_body={"endpoint": endpoint})
    assert gone.status == 204 and stored(stepperslife_url) == []
    missing = routed.request("DELETE", "/push/subscriptions", identity=me, json_body={"endpoint": endpoint})
    assert missing.status == 404 and missing.json["error"]["code"] == "subscription_not_found"


def test_resubscribing_an_endpoint_from_another_account_moves_it(
    routed: EdgeSignedClient, users: dict[str, Identity], stepperslife_url: str
) -> None:
    body = subscription_body()
    assert routed.request("POST", "/push/subscriptions", identity=users["user"], json_body=body).status == 201
    assert routed.request("POST", "/push/subscriptions", identity=users["user2"], json_body=body).status == 200
    assert [owner for owner, _, _ in stored(stepperslife_url)] == [users["user2"].user_id]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (subscription_body("http://push.example.com/send/abc"), 422),
        (subscription_body("https://rebound.example.com/send"), 422),
        (subscription_body("https://169.254.169.254/latest"), 422),
        (subscription_body("https://[fd00:ec2::254]/latest"), 422),
        (subscription_body(p256dh=b64url(b"\x04" + b"\x01" * 64)), 422),
        (subscription_body(auth=b64url(b"\x00" * 8)), 422),
        (subscription_body(p256dh="%%%"), 422),
        ({"endpoint": "https://push.example.com/send/abc"}, 422),
        ({**subscription_body(), "extra": 1}, 422),
        ({**subscription_body(), "endpoint": 42}, 422),
        ({**subscription_body(), "endpoint": "https://push.example.com/" + "x" * 2100}, 422),
        ([], 422),
    ],
)
def test_bad_subscriptions_are_refused_and_nothing_is_written(
    routed: EdgeSignedClient, stepperslife_url: str, body: Any, status: int
) -> None:
    me = create_user(routed, stepperslife_url, role="customer")
    response = routed.request("POST", "/push/subscriptions", identity=me, json_body=body)
    assert response.status == status, response.body
    assert set(response.json["error"]) == {"code", "message", "details"}
    assert stored(stepperslife_url) == []


def test_malformed_json_is_a_400(routed: EdgeSignedClient, stepperslife_url: str) -> None:
    me = create_user(routed, stepperslife_url)
    response = routed.request("POST", "/push/subscriptions", identity=me, body=b"{not json")
    assert response.status == 400 and response.json["error"]["code"] == "malformed_json"
    assert stored(stepperslife_url) == []


def test_a_user_keeps_at_most_twenty_subscriptions(harness: Harness, push_service: FakePushService) -> None:
    user = add_user(harness.conn, "collector")
    for index in range(22):
        subscribe(harness, push_service, user, f"s{index}")
    kept = {s.endpoint for s in subscriptions(harness.conn)}
    assert len(kept) == 20
    assert push_service.endpoint("s0") not in kept and push_service.endpoint("s21") in kept
    assert harness.pruner.deleted == [endpoint_hash(push_service.endpoint(f"s{i}")) for i in (0, 1)]


# --- the daily digest (User_Engagement) ------------------------------------------------------------


def test_daily_digest_goes_once_to_those_who_opted_in(harness: Harness, push_service: FakePushService) -> None:
    organizer = add_user(harness.conn, "organizer")
    add_event(harness.conn, organizer, title="Salsa Sunday", category="salsa")
    fan = add_user(harness.conn, "fan", {"categories": ["salsa"], "digest": True})
    quiet = add_user(harness.conn, "quiet", {"categories": ["salsa"], "digest": False})
    subscribe(harness, push_service, fan, "fan-phone")
    subscribe(harness, push_service, quiet, "quiet-phone")
    db = Database(harness.conn.info.dsn)
    try:
        engagement = EngagementService(
            db, Claims(db), RecommendationService(db, Cache(None)), harness.service, "https://stepperslife.com"
        )
        first = engagement.send_daily_digest(date(2030, 5, 1))
        again = engagement.send_daily_digest(date(2030, 5, 1))
        next_day = engagement.send_daily_digest(date(2030, 5, 2))
    finally:
        db.close()

    assert (first.candidates, first.sent) == (1, 1)
    assert (again.sent, again.skipped_already_sent) == (0, 1)
    assert next_day.sent == 1
    assert [r.name for r in push_service.received] == ["fan-phone", "fan-phone"]
    message = push_service.received[0].message
    assert message["title"] == "1 event picked for you" and "Salsa Sunday" in message["body"]
    assert push_service.received[0].headers["urgency"] == "low"
