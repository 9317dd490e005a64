"""Message transports for domain events: SQS directly, or EventBridge for fan-out.

Both carry the same JSON envelope (``DomainMessage.envelope()``), ``dedup_key`` included, so a
consumer does not care which way a message came. The boto3 client comes from a factory and is built
on first send, so a cold start that publishes nothing never imports boto3.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from functions.platform import topology, tracing
from functions.platform.outbox_relay import DomainMessage

ClientFactory = Callable[[], Any]
EVENT_SOURCE = f"{topology.EVENT_SOURCE_PREFIX}stepperslife"


class _LazyClient:
    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client


class SqsPublisher:
    def __init__(self, client_factory: ClientFactory, queue_name: str) -> None:
        self._client = _LazyClient(client_factory)
        self._queue_name = queue_name
        self._queue_url: str | None = None

    def _url(self) -> str:
        if self._queue_url is None:
            self._queue_url = str(self._client.get().get_queue_url(QueueName=self._queue_name)["QueueUrl"])
        return self._queue_url

    def publish(self, message: DomainMessage) -> None:
        attributes = {"topic": {"DataType": "String", "StringValue": message.topic}}
        if message.traceparent is not None:
            # Also in the envelope; the attribute spares the handler a parse (functions/platform/queues.py).
            attributes[tracing.MESSAGE_ATTRIBUTE] = {"DataType": "String", "StringValue": message.traceparent}
        self._client.get().send_message(
            QueueUrl=self._url(),
            MessageBody=json.dumps(message.envelope(), separators=(",", ":")),
            MessageAttributes=attributes,
        )


class EventBridgePublisher:
    """put_events on ``bus_name``; the bus's rules route each topic (``detail-type``) to its targets."""

    def __init__(self, client_factory: ClientFactory, bus_name: str) -> None:
        self._client = _LazyClient(client_factory)
        self._bus_name = bus_name

    def publish(self, message: DomainMessage) -> None:
        response = self._client.get().put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": message.topic,
                    "Detail": json.dumps(message.envelope(), separators=(",", ":")),
                    "EventBusName": self._bus_name,
                }
            ]
        )
        # put_events answers 200 even when an entry was refused; the refusal is in the entries.
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise RuntimeError(f"EventBridge refused the event: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")
