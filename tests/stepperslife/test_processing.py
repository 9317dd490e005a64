"""Domain events: the outbox relay, the processing steps with their claims, partial batch
failures, poison messages, and the DLQ through moto's real SQS server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from devstack import aws_local, handlers
from devstack.services import start_moto
from functions.platform.adapters.messaging import EventBridgePublisher, SqsPublisher
from functions.platform.adapters.postgres import Database
from functions.platform.claims import Claims
from functions.platform.config import Settings
from functions.platform.outbox_relay import DomainMessage, OutboxRelay
from functions.platform.processing import PoisonMessage, StepEngine
from functions.platform.queues import QueueMessage
from functions.platform.topology import DOMAIN_EVENTS
from functions.stepperslife.app import app
from functions.stepperslife.composition import container
from functions.stepperslife.services.domain_events import TOPICS, outbox
from functions.stepperslife.services.processing import event_processor, event_steps, parse_message
from tests.conftest import add_user

EVENT_ID = "8f1d2c3b-0000-4000-8000-000000000001"
USER_ID = "8f1d2c3b-0000-4000-8000-0000000000aa"


def envelope(topic: str = "event.published", dedup_key: str = "k1", **payload: Any) -> str:
    body = {"id": 1, "topic": topic, "dedup_key": dedup_key, "payload": {"event_id": EVENT_ID, **payload}}
    return json.dumps(body)


def delivered(body: str, receive_count: int = 1) -> QueueMessage:
    return QueueMessage(body, message_id="m", receive_count=receive_count, attributes={}, message_attributes={})


@pytest.fixture
def db(stepperslife_url: str) -> Iterator[Database]:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox, claims")
    database = Database(stepperslife_url)
    yield database
    database.close()


# --- messages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        envelope(topic="event.exploded"),
        envelope(dedup_key=""),
        json.dumps({"topic": "event.published", "dedup_key": "k", "payload": "x"}),
        json.dumps({"topic": "event.published", "dedup_key": "k", "payload": {"event_id": "nope"}}),
        envelope(topic="registration.promoted"),  # no user_id
    ],
)
def test_poison_messages_are_recognised(body: str) -> None:
    with pytest.raises(PoisonMessage):
        parse_message(body)


def test_eventbridge_wrapping_is_unwrapped() -> None:
    wrapped = {"detail-type": "event.updated", "source": "agistack.stepperslife", "detail": json.loads(envelope())}
    event = parse_message(json.dumps(wrapped))
    assert (event.topic, event.dedup_key, event.payload["event_id"]) == ("event.published", "k1", EVENT_ID)


# --- the relay --------------------------------------------------------------------------------------------


class RecordingPublisher:
    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.sent: list[DomainMessage] = []
        self.fail_on = fail_on or set()

    def publish(self, message: DomainMessage) -> None:
        if message.dedup_key in self.fail_on:
            raise ConnectionError("queue unreachable")
        self.sent.append(message)


def enqueue(db: Database, *keys: str, topic: str = "event.published") -> None:
    with db.transaction() as conn:
        for key in keys:
            outbox.enqueue(conn, topic, {"event_id": EVENT_ID}, dedup_key=key)


def unpublished(db: Database) -> list[str]:
    with db.transaction() as conn:
        rows = conn.execute("SELECT dedup_key FROM outbox WHERE published_at IS NULL ORDER BY id").fetchall()
    return [row["dedup_key"] for row in rows]


def test_relay_sends_in_order_and_marks_published(db: Database) -> None:
    enqueue(db, "a", "b", "c")
    publisher = RecordingPublisher()
    relay = OutboxRelay(db, publisher)
    assert relay.flush() == 3
    assert [m.dedup_key for m in publisher.sent] == ["a", "b", "c"]
    assert publisher.sent[0].envelope()["payload"] == {"event_id": EVENT_ID}
    assert unpublished(db) == []
    assert relay.flush() == 0 and len(publisher.sent) == 3


def test_relay_stops_at_a_transport_failure_and_retries_later(db: Database) -> None:
    enqueue(db, "a", "b", "c")
    publisher = RecordingPublisher(fail_on={"b"})
    relay = OutboxRelay(db, publisher)
    assert relay.flush() == 1
    assert unpublished(db) == ["b", "c"]
    publisher.fail_on.clear()
    assert relay.flush_all(limit=1) == 2
    assert [m.dedup_key for m in publisher.sent] == ["a", "b", "c"]


def test_relays_running_at_once_skip_each_others_rows(db: Database, stepperslife_url: str) -> None:
    enqueue(db, "a", "b")
    publisher = RecordingPublisher()
    with psycopg.connect(stepperslife_url) as other:
        # Another relay is in the middle of sending "a".
        other.execute("SELECT id FROM outbox WHERE dedup_key = 'a' FOR UPDATE")
        assert OutboxRelay(db, publisher).flush() == 1
        other.rollback()
    assert [m.dedup_key for m in publisher.sent] == ["b"]
    assert unpublished(db) == ["a"]


# --- the steps ------------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    calls: list[tuple[str, ...]]
    fail_steps: set[str]

    def enhance_event(self, event_id: str) -> None:
        self._call("enhance", event_id)

    def invalidate_event(self, event_id: str) -> None:
        self._call("invalidate", event_id)

    def notify(self, topic: str, payload: Mapping[str, Any]) -> None:
        self._call("notify", topic)

    def _call(self, *call: str) -> None:
        if call[0] in self.fail_steps:
            raise RuntimeError(f"{call[0]} failed")
        self.calls.append(call)


def processor(db: Database, fail_steps: set[str] | None = None) -> tuple[StepEngine, Recorder]:
    recorder = Recorder([], fail_steps or set())
    return event_processor(Claims(db), enhancer=recorder, invalidation=recorder, notifier=recorder), recorder


def done_steps(db: Database) -> list[str]:
    with db.transaction() as conn:
        rows = conn.execute("SELECT key FROM claims WHERE scope = 'step' AND status = 'done' ORDER BY key").fetchall()
    return [row["key"] for row in rows]


def test_every_topic_the_outbox_accepts_has_its_steps() -> None:
    recorder = Recorder([], set())
    assert set(event_steps(enhancer=recorder, invalidation=recorder, notifier=recorder)) == set(TOPICS) == outbox.topics


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("event.published", ["enhance", "invalidate", "notify"]),
        ("event.updated", ["enhance", "invalidate"]),
        ("event.cancelled", ["invalidate", "notify"]),
        ("registration.promoted", ["invalidate", "notify"]),
    ],
)
def test_each_topic_runs_its_steps(db: Database, topic: str, expected: list[str]) -> None:
    handler, recorder = processor(db)
    handler.handle(delivered(envelope(topic=topic, user_id=USER_ID)))
    assert [call[0] for call in recorder.calls] == expected
    assert ("invalidate", EVENT_ID) in recorder.calls


def test_a_redelivery_resumes_after_the_finished_steps(db: Database) -> None:
    failing, first = processor(db, fail_steps={"notify"})
    with pytest.raises(RuntimeError):
        failing.handle(delivered(envelope()))
    assert [call[0] for call in first.calls] == ["enhance", "invalidate"]

    retry, second = processor(db)
    retry.handle(delivered(envelope(), receive_count=2))
    assert second.calls == [("notify", "event.published")]

    again, third = processor(db)
    again.handle(delivered(envelope(), receive_count=2))  # SQS delivered it twice: nothing runs twice
    assert third.calls == []
    assert done_steps(db) == ["k1:enhance", "k1:invalidate", "k1:notify"]


# --- the Chalice handlers ------------------------------------------------------------------------------------------


def sqs_event(client: Client, bodies: list[str]) -> dict[str, Any]:
    event = client.events.generate_sqs_event(message_bodies=bodies, queue_name="agistack-domain-events")
    for index, record in enumerate(event["Records"]):
        record["messageId"] = f"m{index}"
    return event


def test_only_failed_messages_are_reported(configured_app: Any, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    handler, _ = processor(db, fail_steps={"notify"})
    monkeypatch.setitem(container().__dict__, "event_processor", handler)
    bodies = [
        envelope(topic="event.updated", dedup_key="ok"),
        envelope(dedup_key="fails-at-notify"),
        "poison: dropped, not retried",
        envelope(topic="event.exploded", dedup_key="unknown"),
    ]
    with Client(configured_app) as client:
        response = client.lambda_.invoke("process_domain_events", sqs_event(client, bodies))
    assert response.payload == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_relay_schedule_flushes_the_outbox(configured_app: Any, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    enqueue(db, "a", "b")
    publisher = RecordingPublisher()
    monkeypatch.setitem(container().__dict__, "outbox_relay", OutboxRelay(db, publisher))
    with Client(configured_app) as client:
        event = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        response = client.lambda_.invoke("relay_outbox", event)
    assert response.payload == {"published": 2}
    assert [m.dedup_key for m in publisher.sent] == ["a", "b"]


def stopped_clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def test_old_records_are_pruned_daily(configured_app: Any, db: Database) -> None:
    enqueue(db, "old", "recent", "unsent")
    with db.transaction() as conn:
        conn.execute("UPDATE outbox SET published_at = now() - interval '15 days' WHERE dedup_key = 'old'")
        conn.execute("UPDATE outbox SET published_at = now() - interval '13 days' WHERE dedup_key = 'recent'")
    for key, age in (("old:enhance", 15), ("recent:enhance", 13)):
        at = datetime.now(UTC) - timedelta(days=age)
        Claims(db, now=stopped_clock(at)).run_once("step", key, lambda: None, lease=timedelta(seconds=90))
    with Client(configured_app) as client:
        event = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        response = client.lambda_.invoke("prune_domain_event_records", event)
    assert response.payload == {"outbox": 1, "step_claims": 1, "idempotency_keys": 0, "digest_claims": 0}
    with db.transaction() as conn:
        left = conn.execute("SELECT dedup_key FROM outbox ORDER BY dedup_key").fetchall()
    assert [row["dedup_key"] for row in left] == ["recent", "unsent"]
    assert done_steps(db) == ["recent:enhance"]


# --- through moto's SQS: redelivery and the DLQ -------------------------------------------------------------------


@dataclass
class Aws:
    settings: Settings
    queue_url: str
    dlq_url: str
    sqs: Any


@pytest.fixture(scope="module")
def aws(settings: Settings) -> Iterator[Aws]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "local")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "local")
        moto = start_moto()
        try:
            local = replace(settings, aws=replace(settings.aws, endpoint_url=moto.url))
            urls = aws_local.ensure_resources(local)
            sqs = aws_local.client(local, "sqs")
            queue_url = urls[DOMAIN_EVENTS.name]
            # Redeliver at once instead of after the visibility timeout.
            sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})
            dlq_url = sqs.get_queue_url(QueueName=DOMAIN_EVENTS.dlq_name)["QueueUrl"]
            yield Aws(local, queue_url, dlq_url, sqs)
        finally:
            moto.stop()


def pump(aws: Aws) -> aws_local.QueuePump:
    [handler] = [h for h in handlers.sqs_handlers(app) if h.name == "process_domain_events"]
    return aws_local.QueuePump(aws.settings, aws.queue_url, handler.function, handler.name, handler.batch_size)


def empty(aws: Aws) -> None:
    """Leave the queue empty: moto's servers in one process share one backend, and each API write by an
    earlier test relays its outbox to this queue. (PurgeQueue is allowed once a minute only.)"""
    while drained(aws, aws.queue_url):
        pass


def drained(aws: Aws, url: str) -> list[str]:
    messages = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    for message in messages:
        aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [str(message["Body"]) for message in messages]


@pytest.fixture
def published_event(stepperslife_url: str, clean_stepperslife: None) -> str:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        organizer = add_user(conn, "org")
        row = conn.execute(
            "INSERT INTO events (user_id, title, slug, description, event_date, category, capacity, status, "
            "published_at) VALUES (%s, 'Detroit Ballroom', 'detroit-ballroom', 'Ballroom stepping.', "
            "now() + interval '7 days', 'social', 5, 'published', now()) RETURNING id",
            (organizer,),
        ).fetchone()
        assert row is not None
        return str(row[0])


def test_outbox_to_queue_to_steps(aws: Aws, configured_app: Any, db: Database, published_event: str) -> None:
    empty(aws)
    cache = container().cache
    versions = (cache.version("stepperslife", "events"), cache.version("stepperslife", f"event:{published_event}"))
    with db.transaction() as conn:
        outbox.enqueue(conn, "event.published", {"event_id": published_event}, dedup_key=f"pub:{published_event}")
    relay = OutboxRelay(db, SqsPublisher(lambda: aws_local.client(aws.settings, "sqs"), DOMAIN_EVENTS.name))
    assert relay.flush() == 1

    assert pump(aws).drain_once() == 1

    with db.transaction() as conn:
        row = conn.execute("SELECT metadata FROM events WHERE id = %s", (published_event,)).fetchone()
    assert row is not None and row["metadata"]["enhanced"]["source"] == "offline"
    assert "Detroit Ballroom" in row["metadata"]["enhanced"]["meta_description"]
    key = f"pub:{published_event}"
    assert done_steps(db) == [f"{key}:enhance", f"{key}:invalidate", f"{key}:notify"]
    assert cache.version("stepperslife", "events") > versions[0]
    assert cache.version("stepperslife", f"event:{published_event}") > versions[1]
    assert drained(aws, aws.queue_url) == [] and drained(aws, aws.dlq_url) == []


def test_a_message_that_keeps_failing_reaches_the_dlq(
    aws: Aws, configured_app: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, recorder = processor(db, fail_steps={"notify"})
    monkeypatch.setitem(container().__dict__, "event_processor", handler)
    body = envelope(dedup_key="doomed")
    empty(aws)
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)

    queue = pump(aws)
    deliveries = 0
    while queue.drain_once():
        deliveries += 1
        assert deliveries <= DOMAIN_EVENTS.max_receive_count
    assert deliveries == DOMAIN_EVENTS.max_receive_count
    assert drained(aws, aws.dlq_url) == [body]
    # The steps that succeeded ran once; only the failing one was retried.
    assert [call[0] for call in recorder.calls] == ["enhance", "invalidate"]


def test_poison_is_dropped_not_sent_to_the_dlq(aws: Aws, configured_app: Any) -> None:
    empty(aws)
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="{truncated")
    assert pump(aws).drain_once() == 1
    assert drained(aws, aws.queue_url) == [] and drained(aws, aws.dlq_url) == []


def test_eventbridge_fans_out_the_same_envelope(aws: Aws) -> None:
    events = aws_local.client(aws.settings, "events")
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="domain-events",
        EventBusName=aws.settings.aws.event_bus_name,
        EventPattern=json.dumps({"source": ["agistack.stepperslife"]}),
    )
    events.put_targets(
        Rule="domain-events", EventBusName=aws.settings.aws.event_bus_name, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )
    publisher = EventBridgePublisher(lambda: aws_local.client(aws.settings, "events"), aws.settings.aws.event_bus_name)
    message = DomainMessage(7, "event.updated", "upd:1", {"event_id": EVENT_ID}, "2030-01-01T00:00:00+00:00")
    publisher.publish(message)
    [body] = drained(aws, aws.queue_url)
    received = parse_message(body)
    assert (received.topic, received.dedup_key, received.payload) == ("event.updated", "upd:1", {"event_id": EVENT_ID})

    with pytest.raises(ClientError):
        EventBridgePublisher(lambda: aws_local.client(aws.settings, "events"), "no-such-bus").publish(message)


def test_eventbridge_refusing_an_entry_is_an_error() -> None:
    """AWS answers put_events with 200 and reports a refused entry inside the response."""

    class Refusing:
        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try later"}]}

    message = DomainMessage(7, "event.updated", "upd:1", {"event_id": EVENT_ID}, "2030-01-01T00:00:00+00:00")
    with pytest.raises(RuntimeError, match="InternalFailure"):
        EventBridgePublisher(Refusing, "agistack").publish(message)
