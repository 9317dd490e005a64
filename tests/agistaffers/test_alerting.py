"""Alerting on the real database, Chalice app and HTTP: the rule API per role and across tenants,
alert history, webhook registration behind the outbound guard, every channel (owner's mail, staff
web push through the fake push service, signed customer webhooks to a real server on 127.0.0.1)
told once per state change even with evaluators and deliveries racing, bounded webhook retries, and
flapping damped by ``for`` and ``keep_firing_for``."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from functions.agistaffers.adapters.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookPoster, verify
from functions.agistaffers.composition import container
from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.alerts import FLAP_HOLD
from functions.agistaffers.services.provisioning import Provisioning
from functions.agistaffers.services.provisioning_messages import ProvisioningMessages
from functions.agistaffers.services.staff_push import StaffPush
from functions.agistaffers.services.webhooks import WebhookRetryLater, Webhooks
from functions.platform.adapters.postgres import Database
from functions.platform.adapters.webpush import WebPushSender, generate_vapid_keys
from functions.platform.claims import ClaimBusy, Claims
from functions.platform.outbound import GuardedHttpClient
from functions.platform.push import PushDelivery
from functions.platform.queues import QueueMessage
from tests.agistaffers.conftest import Tenants
from tests.agistaffers.test_monitoring import identity, minute_of_cpu, this_minute
from tests.conftest import EdgeSignedClient
from tests.http_fakes import FakePushService, running_push_service, serving_posts

LOOPBACK = {"127.0.0.1"}  # the guard's development allow-list, as PUSH_ALLOW_HOSTS sets it in the dev stack


@pytest.fixture(autouse=True)
def _container(configured_agi_app: Any) -> None:
    """These tests drive the installed container's evaluator and ingest (``container()``)."""


def rule_body(**fields: Any) -> dict[str, Any]:
    return {"metric": "cpu_percent", "comparison": ">", "threshold": 80, **fields}


# --- the rule API ------------------------------------------------------------------------------------


def test_site_rules_per_role_and_across_tenants(
    agi_api: EdgeSignedClient, tenants: Tenants, owner: Actor, site: dict[str, Any]
) -> None:
    owner_id, member_id = identity(owner), identity(tenants.member(owner))
    stranger, staff = identity(tenants.owner()), identity(tenants.staff)
    path = f"/sites/{site['id']}/alert-rules"

    created = agi_api.request("POST", path, identity=owner_id, json_body=rule_body(for_seconds=60))
    assert created.status == 201, created.json
    rule = created.json["rule"]
    assert (rule["site_id"], rule["threshold"], rule["for_seconds"]) == (str(site["id"]), 80.0, 60)
    again = agi_api.request("POST", path, identity=owner_id, json_body=rule_body(threshold=70))
    assert (again.status, again.json["error"]["code"]) == (409, "alert_rule_exists")

    listed = agi_api.request("GET", path, identity=member_id).json
    assert [r["id"] for r in listed["rules"]] == [rule["id"]]
    business_cpu = [r for r in listed["plan_rules"] if (r["metric"], r["comparison"]) == ("cpu_percent", ">")]
    assert business_cpu and business_cpu[0]["replaced"] is True
    assert agi_api.request("GET", path, identity=staff).status == 200

    # A member reads but does not change; another customer finds nothing; staff may change.
    member_post = agi_api.request("POST", path, identity=member_id, json_body=rule_body(comparison="<"))
    assert (member_post.status, member_post.json["error"]["code"]) == (403, "owner_only")
    rule_path = f"/alert-rules/{rule['id']}"
    assert agi_api.request("PATCH", rule_path, identity=member_id, json_body={"threshold": 1}).status == 403
    for method, target, body in [
        ("GET", path, None),
        ("POST", path, rule_body(comparison="<")),
        ("GET", f"/sites/{site['id']}/alerts", None),
        ("PATCH", rule_path, {"threshold": 1}),
        ("DELETE", rule_path, None),
    ]:
        answer = agi_api.request(method, target, identity=stranger, json_body=body)
        assert answer.status == 404, (method, target)
        assert answer.json["error"]["code"] in ("site_not_found", "alert_rule_not_found")

    patched = agi_api.request("PATCH", rule_path, identity=owner_id, json_body={"threshold": 95.5})
    assert patched.status == 200 and patched.json["rule"]["threshold"] == 95.5
    assert agi_api.request("PATCH", rule_path, identity=staff, json_body={"keep_firing_for_seconds": 30}).status == 200
    assert agi_api.request("DELETE", rule_path, identity=owner_id).status == 204
    assert agi_api.request("DELETE", rule_path, identity=owner_id).status == 404


INVALID_RULES = [
    (rule_body(metric="cpu"), "metric"),
    (rule_body(metric="custom.Bad-Name"), "metric"),
    (rule_body(comparison="=="), "comparison"),
    (rule_body(threshold="80"), "threshold"),
    (rule_body(threshold=None), "threshold"),
    (rule_body(for_seconds=86401), "for_seconds"),
    (rule_body(keep_firing_for_seconds=-1), "keep_firing_for_seconds"),
    (rule_body(for_seconds=1.5), "for_seconds"),
    (rule_body(severity="high"), "severity"),
]


def test_rule_validation_is_strict(agi_api: EdgeSignedClient, owner: Actor, site: dict[str, Any]) -> None:
    path = f"/sites/{site['id']}/alert-rules"
    for body, field_name in INVALID_RULES:
        answer = agi_api.request("POST", path, identity=identity(owner), json_body=body)
        assert answer.status == 422, (body, answer.json)
        assert field_name in json.dumps(answer.json["error"]["details"]), body
    patch = agi_api.request("PATCH", f"/alert-rules/{site['id']}", identity=identity(owner), json_body={})
    assert patch.status == 422
    raw = b'{"metric": "cpu_percent", "comparison": ">", "threshold": Infinity}'
    answer = agi_api.request("POST", path, identity=identity(owner), body=raw)
    assert answer.status in (400, 422) and "error" in answer.json
    assert agi_api.request("GET", path, identity=identity(owner)).json["rules"] == []


def test_plan_defaults_are_staffs(agi_api: EdgeSignedClient, tenants: Tenants, owner: Actor) -> None:
    staff, customer = identity(tenants.staff), identity(owner)
    defaults = agi_api.request("GET", "/plans/business/alert-rules", identity=staff)
    assert defaults.status == 200
    assert {r["metric"] for r in defaults.json["rules"]} >= {"cpu_percent", "memory_percent", "disk_percent"}
    created = agi_api.request(
        "POST", "/plans/business/alert-rules", identity=staff, json_body=rule_body(comparison="<")
    )
    assert created.status == 201 and created.json["rule"]["plan"] == "business"
    duplicate = agi_api.request("POST", "/plans/business/alert-rules", identity=staff, json_body=rule_body())
    assert duplicate.status == 409
    assert agi_api.request("GET", "/plans/no_such_plan/alert-rules", identity=staff).status == 404
    assert agi_api.request("GET", "/plans/business/alert-rules", identity=customer).status == 403
    assert (
        agi_api.request("POST", "/plans/business/alert-rules", identity=customer, json_body=rule_body()).status == 403
    )
    plan_rule = f"/alert-rules/{created.json['rule']['id']}"
    # A customer's owner cannot touch a plan default, not even by its id.
    assert agi_api.request("PATCH", plan_rule, identity=customer, json_body={"threshold": 1}).status == 404
    assert agi_api.request("DELETE", plan_rule, identity=customer).status == 404
    assert agi_api.request("DELETE", plan_rule, identity=staff).status == 204


def test_history_and_a_deleted_firing_rule_resolves_its_incident(
    agi_api: EdgeSignedClient, owner: Actor, site: dict[str, Any], sql: psycopg.Connection[Any]
) -> None:
    created = agi_api.request(
        "POST", f"/sites/{site['id']}/alert-rules", identity=identity(owner), json_body=rule_body(threshold=50)
    )
    rule_id = created.json["rule"]["id"]
    minute = this_minute() - timedelta(minutes=5)
    for offset, value in enumerate((70, 99)):
        minute_of_cpu(site, minute + timedelta(minutes=offset), value)
        container().alerts.evaluate(now=minute + timedelta(minutes=offset + 1))

    history = agi_api.request("GET", f"/sites/{site['id']}/alerts", identity=identity(owner)).json
    [incident] = history["incidents"]
    assert incident["peak"] == 99.0 and incident["fired_at"] and incident["resolved_at"] is None
    own = [alert for alert in history["alerts"] if alert["rule_id"] == rule_id]
    assert own and own[0]["state"] == "firing"

    def firing_on_dashboard() -> int:
        [shown] = agi_api.request("GET", "/dashboard", identity=identity(owner)).json["sites"]
        return int(shown["firing"])

    assert firing_on_dashboard() == 1  # and now cached
    assert agi_api.request("DELETE", f"/alert-rules/{rule_id}", identity=identity(owner)).status == 204
    assert firing_on_dashboard() == 0  # the deletion invalidated the cached dashboard
    history = agi_api.request("GET", f"/sites/{site['id']}/alerts", identity=identity(owner)).json
    assert history["incidents"][0]["resolved_at"] is not None
    states = sql.execute("SELECT payload->>'state' FROM outbox WHERE topic = 'monitoring.alert' ORDER BY id")
    assert [row[0] for row in states.fetchall()] == ["firing", "resolved"]


# --- webhooks and staff push: registration ---------------------------------------------------------


GUARD_REFUSES = [
    "https://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254/",
    "https://10.0.0.7/hooks",
    "https://192.168.1.1/hooks",
    "https://127.0.0.1/hooks",
    "https://[::ffff:169.254.169.254]/",
    "https://localhost/hooks",
    "http://8.8.8.8/hooks",  # plain http: refused too
    "https://8.8.8.8:8443/hooks",
    "https://user:pw@8.8.8.8/hooks",
]


def test_webhook_urls_the_guard_refuses_are_422(agi_api: EdgeSignedClient, owner: Actor) -> None:
    for url in GUARD_REFUSES:
        answer = agi_api.request("POST", "/webhooks", identity=identity(owner), json_body={"url": url})
        assert (answer.status, answer.json["error"]["code"]) == (422, "invalid_webhook_url"), url
    assert agi_api.request("GET", "/webhooks", identity=identity(owner)).json["webhooks"] == []


def test_webhook_registration_shows_the_secret_once_and_per_role(
    agi_api: EdgeSignedClient, tenants: Tenants, owner: Actor
) -> None:
    url = "https://8.8.8.8/agi-hooks"  # a public literal: nothing to resolve offline
    created = agi_api.request("POST", "/webhooks", identity=identity(owner), json_body={"url": url})
    assert created.status == 201 and created.json["secret"].startswith("whsec_")
    assert agi_api.request("POST", "/webhooks", identity=identity(owner), json_body={"url": url}).status == 409
    listed = agi_api.request("GET", "/webhooks", identity=identity(owner)).json["webhooks"]
    assert [hook["url"] for hook in listed] == [url] and "secret" not in json.dumps(listed)
    member = identity(tenants.member(owner))
    assert agi_api.request("GET", "/webhooks", identity=member).status == 200
    assert agi_api.request("POST", "/webhooks", identity=member, json_body={"url": url + "2"}).status == 403
    assert agi_api.request("GET", "/webhooks", identity=identity(tenants.staff)).status == 403
    hook_path = f"/webhooks/{created.json['webhook']['id']}"
    assert agi_api.request("DELETE", hook_path, identity=identity(tenants.owner())).status == 404
    assert agi_api.request("DELETE", hook_path, identity=identity(owner)).status == 204


def test_push_subscriptions_are_staffs_and_guarded(agi_api: EdgeSignedClient, tenants: Tenants, owner: Actor) -> None:
    keys = {"p256dh": "BNc" + "A" * 84, "auth": "A" * 22}
    body = {"endpoint": "https://127.0.0.1/push/x", "keys": keys}
    assert agi_api.request("POST", "/push/subscriptions", identity=identity(owner), json_body=body).status == 403
    refused = agi_api.request("POST", "/push/subscriptions", identity=identity(tenants.staff), json_body=body)
    assert (refused.status, refused.json["error"]["code"]) == (422, "invalid_endpoint")


# --- every channel once per state change --------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """A customer's endpoint: verifies each signature, answers as scripted, then 200."""

    url: str = ""
    secret: str = ""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    attempts: int = 0
    bad_signatures: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        signed = verify(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body, now=time.time())
        with self.lock:
            self.attempts += 1
            if not signed or headers.get(TIMESTAMP_HEADER.lower()) is None:
                self.bad_signatures += 1
                return 400, {}
            status, extra = self.script.pop(0) if self.script else (200, {})
            if status == 200:
                self.accepted.append(json.loads(body))
            return status, extra


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    fake = WebhookReceiver()
    with serving_posts(lambda path, headers, body: fake.handle(headers, body)) as base_url:
        fake.url = f"{base_url}/hooks/agi"
        yield fake


@pytest.fixture
def push_service() -> Iterator[FakePushService]:
    with running_push_service() as fake:
        yield fake


class RecordingMailer:
    """SES's stand-in: what was sent, to whom (the SES adapter itself is tested against moto)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        with self._lock:
            self.sent.append((to, subject))
        return f"mail-{len(self.sent)}"


@dataclass
class Channels:
    messages: ProvisioningMessages
    webhooks: Webhooks
    staff_push: StaffPush
    mailer: RecordingMailer
    sleeps: list[float]


@pytest.fixture
def channels(agi_db: Database, provisioning: Provisioning) -> Channels:
    """The monitoring.alert fan-out as the composition wires it, on a guard whose development
    allow-list admits 127.0.0.1 (the receiver and the fake push service); waits are recorded."""
    client = GuardedHttpClient(allow_hosts=LOOPBACK)
    sleeps: list[float] = []
    webhooks = Webhooks(agi_db, WebhookPoster(client, timeout_seconds=2.0), sleep=sleeps.append)
    sender = WebPushSender(private_key=generate_vapid_keys()[0], subject="mailto:ops@agistaffers.com", client=client)
    staff_push = StaffPush(
        agi_db, PushDelivery(sender, check_endpoint=client.check, sleep=sleeps.append), check_endpoint=client.check
    )
    mailer = RecordingMailer()
    steps = [("push", staff_push.push_alert), ("webhooks", webhooks.deliver_alert)]
    messages = ProvisioningMessages(agi_db, Claims(agi_db), provisioning, mailer, alert_channels=steps)
    return Channels(messages, webhooks, staff_push, mailer, sleeps)


def alert_messages(sql: psycopg.Connection[Any]) -> list[QueueMessage]:
    rows = sql.execute("SELECT payload, dedup_key FROM outbox WHERE topic = 'monitoring.alert' ORDER BY id").fetchall()
    return [
        QueueMessage(json.dumps({"topic": "monitoring.alert", "dedup_key": key, "payload": payload}), key, 1, {}, {})
        for payload, key in rows
    ]


def at_once(count: int, work: Callable[[], object]) -> list[BaseException]:
    """Run ``work`` in ``count`` threads released together; returns what they raised."""
    barrier = threading.Barrier(count)
    raised: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            raised.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return raised


def test_each_channel_hears_each_state_change_once(
    site: dict[str, Any],
    owner: Actor,
    tenants: Tenants,
    channels: Channels,
    receiver: WebhookReceiver,
    push_service: FakePushService,
    sql: psycopg.Connection[Any],
) -> None:
    registered = channels.webhooks.register(owner, receiver.url)
    receiver.secret = registered["secret"]
    receiver.script = [(503, {}), (503, {"Retry-After": "2"})]  # fails twice, then accepts
    browser = push_service.browser("ops-laptop")
    channels.staff_push.subscribe(tenants.staff, push_service.endpoint("ops-laptop"), browser.p256dh, browser.auth)
    sql.execute(
        "INSERT INTO alert_rules (site_id, metric, comparison, threshold) VALUES (%s, 'cpu_percent', '>', 80)",
        (site["id"],),
    )

    minute = this_minute() - timedelta(minutes=6)
    for offset, value in enumerate((99, 10)):
        minute_of_cpu(site, minute + timedelta(minutes=offset), value)
        # Two evaluators at once (an overlapping schedule, a retry), each on its own connection.
        evaluate = functools.partial(container().alerts.evaluate, now=minute + timedelta(minutes=offset + 1))
        assert at_once(2, evaluate) == []
    messages = alert_messages(sql)
    assert [json.loads(m.body)["payload"]["state"] for m in messages] == ["firing", "resolved"]

    for message in messages:
        # Two deliveries of one message at once: the loser of a step's claim fails and comes back.
        raised = at_once(2, functools.partial(channels.messages.handle, message))
        assert all(isinstance(exc, ClaimBusy) for exc in raised), raised
        channels.messages.handle(message._replace(receive_count=2))  # and a redelivery later

    assert sorted(subject.split("]")[0] for _, subject in channels.mailer.sent) == ["[firing", "[resolved"]
    assert {to for to, _ in channels.mailer.sent} == {owner.email}
    pushed = [received.message for received in push_service.received]
    assert sorted(message["title"].split("]")[0] for message in pushed) == ["[firing", "[resolved"]
    assert receiver.bad_signatures == 0 and receiver.attempts == 4  # 503, 503, 200; then 200
    assert [hook["type"] for hook in receiver.accepted] == ["alert.firing", "alert.resolved"]
    assert [hook["id"] for hook in receiver.accepted] == [m.message_id for m in messages]
    assert receiver.accepted[0]["data"]["domain"] == "acme.example.com"
    assert channels.sleeps and channels.sleeps[1] >= 2.0  # the endpoint's Retry-After was honoured
    deliveries = sql.execute("SELECT status, attempts FROM webhook_deliveries ORDER BY created_at").fetchall()
    assert deliveries == [("delivered", 3), ("delivered", 1)]


def test_webhook_retries_are_bounded_and_the_failure_recorded(
    site: dict[str, Any], owner: Actor, channels: Channels, receiver: WebhookReceiver, sql: psycopg.Connection[Any]
) -> None:
    receiver.secret = channels.webhooks.register(owner, receiver.url)["secret"]
    receiver.script = [(500, {})] * 20
    payload = {"site_id": str(site["id"]), "incident_id": "8f1d2c3b-0000-4000-8000-000000000002", "state": "firing"}
    body = json.dumps({"topic": "monitoring.alert", "dedup_key": "alert:x:firing", "payload": payload})
    outcomes = []
    for receive in range(1, 5):
        try:
            channels.messages.handle(QueueMessage(body, "m", receive, {}, {}))
            outcomes.append("done")
        except WebhookRetryLater:
            outcomes.append("retry later")
    assert outcomes == ["retry later", "retry later", "done", "done"]
    assert receiver.attempts == 8 and receiver.accepted == []
    assert sql.execute("SELECT status, attempts, last_status FROM webhook_deliveries").fetchall() == [
        ("failed", 8, 500)
    ]
    assert len(channels.mailer.sent) == 1  # the mail went out once, whatever the webhook did


def test_a_webhook_that_refuses_for_good_is_not_retried(
    site: dict[str, Any], owner: Actor, channels: Channels, receiver: WebhookReceiver, sql: psycopg.Connection[Any]
) -> None:
    receiver.secret = channels.webhooks.register(owner, receiver.url)["secret"]
    receiver.script = [(410, {})]
    payload = {"site_id": str(site["id"]), "incident_id": "8f1d2c3b-0000-4000-8000-000000000003", "state": "firing"}
    body = json.dumps({"topic": "monitoring.alert", "dedup_key": "alert:y:firing", "payload": payload})
    channels.messages.handle(QueueMessage(body, "m", 1, {}, {}))
    assert receiver.attempts == 1
    assert sql.execute("SELECT status, last_status FROM webhook_deliveries").fetchall() == [("failed", 410)]


# --- flapping -----------------------------------------------------------------------------------------------


def test_a_flapping_metric_notifies_at_most_once_each_way(site: dict[str, Any], sql: psycopg.Connection[Any]) -> None:
    """The plan defaults' damping (for 120 s, keep firing 120 s): a metric that flips every minute never
    fires; one that breaches long enough fires once and, flipping on, resolves once after it calms."""
    sql.execute(
        "INSERT INTO alert_rules (site_id, metric, comparison, threshold, for_seconds, keep_firing_for_seconds) "
        "VALUES (%s, 'cpu_percent', '>', 80, 120, 120)",
        (site["id"],),
    )
    flapping = [95, 10] * 6
    breaching_then_flapping = [95, 95, 95, 10, 95, 10, 95, 10, 95, 10, 10, 10, 10, 95, 10]
    series = flapping + breaching_then_flapping
    start = this_minute() - timedelta(minutes=len(series) + 2)
    for offset, value in enumerate(series):
        minute = start + timedelta(minutes=offset)
        minute_of_cpu(site, minute, value)
        container().alerts.evaluate(now=minute + timedelta(minutes=1))
        if offset == len(flapping) - 1:
            assert sql.execute("SELECT count(*) FROM outbox WHERE topic = 'monitoring.alert'").fetchone() == (0,)
    states = sql.execute("SELECT payload->>'state' FROM outbox WHERE topic = 'monitoring.alert' ORDER BY id")
    assert [row[0] for row in states.fetchall()] == ["firing", "resolved"]


def test_a_rule_without_damping_still_stops_notifying_a_flapping_metric(
    site: dict[str, Any], sql: psycopg.Connection[Any]
) -> None:
    """for 0 s, keep firing 0 s: the alert's own flap hold takes over after its second firing within
    the hour, and the one incident it then keeps resolves after the hold's calm."""
    sql.execute(
        "INSERT INTO alert_rules (site_id, metric, comparison, threshold) VALUES (%s, 'cpu_percent', '>', 80)",
        (site["id"],),
    )
    series = [95, 10] * 6 + [10] * (int(FLAP_HOLD.total_seconds()) // 60)
    start = this_minute() - timedelta(minutes=len(series) + 2)
    for offset, value in enumerate(series):
        minute = start + timedelta(minutes=offset)
        minute_of_cpu(site, minute, value)
        container().alerts.evaluate(now=minute + timedelta(minutes=1))
    states = sql.execute("SELECT payload->>'state' FROM outbox WHERE topic = 'monitoring.alert' ORDER BY id")
    assert [row[0] for row in states.fetchall()] == ["firing", "resolved", "firing", "resolved"]
    spans = sql.execute("SELECT resolved_at - opened_at FROM incidents ORDER BY opened_at").fetchall()
    assert spans[0][0] == timedelta(minutes=1) and spans[1][0] >= FLAP_HOLD
