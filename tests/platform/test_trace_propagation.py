"""The trace reaches PostgreSQL (a sqlcommenter comment on each statement) and the queues (the outbox
row keeps the writer's trace, the SQS message carries it, the handler continues it). Real PostgreSQL
and moto's SQS."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from chalice.app import SQSEvent
from psycopg import sql

from devstack.aws_local import QueuePump
from functions.platform import tracing
from functions.platform.adapters.messaging import SqsPublisher
from functions.platform.adapters.postgres import Database
from functions.platform.composition import aws_client
from functions.platform.config import Settings
from functions.platform.outbox import Outbox
from functions.platform.outbox_relay import OutboxRelay
from functions.platform.queues import QueueMessage, process_batch

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
CURRENT_QUERY = "SELECT current_query() AS q"


@pytest.fixture
def database(stepperslife_url: str, clean_stepperslife: None) -> Iterator[Database]:
    db = Database(stepperslife_url, max_size=2)
    yield db
    db.close()


def test_every_statement_carries_the_current_traceparent(database: Database) -> None:
    with database.transaction() as conn:
        assert conn.execute(CURRENT_QUERY).fetchone() == {"q": CURRENT_QUERY}  # no trace, no comment
        with tracing.traced(TRACEPARENT) as trace:
            comment = f"/*traceparent='{trace.header()}'*/"
            assert conn.execute(CURRENT_QUERY).fetchone() == {"q": f"{CURRENT_QUERY} {comment}"}
            composed = sql.SQL("SELECT current_query() AS {}").format(sql.Identifier("q"))
            assert conn.execute(composed).fetchone() == {"q": f'SELECT current_query() AS "q" {comment}'}
            with conn.cursor() as cursor:
                cursor.execute(b"SELECT current_query() AS q")
                assert cursor.fetchone() == {"q": f"{CURRENT_QUERY} {comment}"}
                # A statement the caller prepares on purpose keeps one text across requests.
                cursor.execute(CURRENT_QUERY, prepare=True)
                assert cursor.fetchone() == {"q": CURRENT_QUERY}
                cursor.executemany("CREATE TEMP TABLE IF NOT EXISTS traced (n int)", [()])
                with cursor.copy("COPY traced (n) FROM STDIN") as copy:
                    for n in range(3):
                        copy.write_row((n,))
                assert cursor.execute("SELECT sum(n) AS total FROM traced").fetchone() == {"total": 3}


def test_an_outbox_row_carries_its_writers_trace_to_the_queue_handler(
    database: Database, settings: Settings, stepperslife_url: str
) -> None:
    sqs = aws_client(settings, "sqs")
    queue_name = f"trace-test-{secrets.token_hex(4)}"
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    relay = OutboxRelay(database, SqsPublisher(lambda: sqs, queue_name))
    with tracing.traced(TRACEPARENT), database.transaction() as conn:
        Outbox({"event.published"}).enqueue(conn, "event.published", {"event_id": "e1"}, dedup_key="trace:1")
    with tracing.traced(None) as relay_trace:  # the scheduled relay: a trace of its own
        assert relay.flush() == 1
    assert relay_trace.trace_id != TRACE
    with psycopg.connect(stepperslife_url) as plain:
        stored = plain.execute("SELECT payload, traceparent FROM outbox WHERE dedup_key = 'trace:1'").fetchone()
    assert stored is not None and stored[0] == {"event_id": "e1"} and stored[1].startswith(f"00-{TRACE}-")

    seen: list[tuple[str | None, str, Any]] = []

    def handle(message: QueueMessage) -> None:
        seen.append((tracing.current_trace_id(), message.body, message.message_attributes.get("traceparent")))

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return process_batch(SQSEvent(event, context), handle, permanent=ValueError, service="t", queue=queue_name)

    # The dev stack's pump hands the message over as Lambda's event source mapping would.
    assert QueuePump(settings, queue_url, lambda_handler, "trace-test", 10).drain_once(wait_seconds=1) == 1
    ((trace_id, body, attribute),) = seen
    assert trace_id == TRACE
    assert attribute["dataType"] == "String" and attribute["stringValue"].startswith(f"00-{TRACE}-")
    assert '"payload":{"event_id":"e1"}' in body  # the domain payload as written
    assert f'"traceparent":"00-{TRACE}-' in body  # also in the envelope, for the way through EventBridge
    sqs.delete_queue(QueueUrl=queue_url)
