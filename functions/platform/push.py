"""Web push delivery: a bounded, self-pruning fan-out of one notification to many subscriptions.

Delivery: each subscription's endpoint is checked against SSRF before every attempt (DNS may have
changed since it was stored); 404/410 mean the browser dropped the subscription, so the product is told
(``on_gone``) to forget it; 429 and 5xx are retried with exponential backoff, honouring Retry-After
within ``max_delay``; anything else is logged and counted. Individual failures never fail the step:
retrying the step would notify again everyone who already got the message.

Who receives what is the product's business; it hands the subscriptions and the notification here,
and is told through ``on_gone`` which subscriptions the push services no longer know.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol

from shared.net import UnsafeUrl

log = logging.getLogger("agistack.push")

EndpointChecker = Callable[[str], None]  # raises shared.net.UnsafeUrl


@dataclass(frozen=True)
class Subscription:
    id: str
    user_id: str
    endpoint: str
    endpoint_hash: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class Notification:
    title: str
    body: str
    url: str
    kind: str  # the domain topic, for the service worker
    event_id: str
    ttl: int
    urgency: str  # very-low | low | normal | high (RFC 8030)

    @property
    def topic(self) -> str:
        """RFC 8030 Topic (≤ 32 URL-safe characters): a newer message with the same topic replaces a
        pending one, so a redelivered notification does not pile up on an offline device."""
        return f"{self.kind.split('.')[-1][:7]}-{self.event_id.replace('-', '')[:24]}"

    def payload(self) -> bytes:
        body = {"title": self.title, "body": self.body, "url": self.url, "kind": self.kind, "event_id": self.event_id}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class SendResult:
    status: int
    retry_after: str | None = None


class PushSender(Protocol):
    def send(self, subscription: Subscription, payload: bytes, *, ttl: int, urgency: str, topic: str) -> SendResult:
        """Encrypt and deliver; return the push service's status. Raises on network failure."""
        ...


class KvPruner(Protocol):
    def delete(self, endpoint_hash: str) -> None:
        """Remove the edge's copy (``shared.kv_keys.push_subscription_key``) from PUSH_SUBS_KV."""
        ...


@dataclass(frozen=True)
class FanOutReport:
    sent: int = 0
    pruned: int = 0
    failed: int = 0
    blocked: int = 0


def retry_delay(attempt: int, retry_after: str | None, *, base: float, now: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the server's Retry-After (seconds or an HTTP
    date) when given, else ``base * 2**(attempt-1)``."""
    if retry_after:
        text = retry_after.strip()
        if text.isdigit():
            return float(text)
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return float(base * 2 ** (attempt - 1))


class PushDelivery:
    def __init__(
        self,
        sender: PushSender | None,
        *,
        check_endpoint: EndpointChecker,
        concurrency: int = 8,
        max_attempts: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sender = sender
        self._check_endpoint = check_endpoint
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        # Bounded so that a batch finishes well within the queue's visibility timeout.
        self._max_delay = max_delay
        self._sleep = sleep

    @property
    def configured(self) -> bool:
        return self._sender is not None

    def send(
        self, subscriptions: Sequence[Subscription], note: Notification, *, on_gone: Callable[[Subscription], None]
    ) -> FanOutReport:
        """Deliver ``note`` to every subscription, at most ``concurrency`` at a time; ``on_gone`` hears
        of each subscription its push service reports gone (404/410)."""
        if not subscriptions or self._sender is None:
            return FanOutReport()
        payload = note.payload()
        workers = min(self._concurrency, len(subscriptions))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push") as pool:
            outcomes = Counter(pool.map(lambda sub: self._deliver(sub, payload, note, on_gone), subscriptions))
        return FanOutReport(**outcomes)

    def _deliver(
        self, subscription: Subscription, payload: bytes, note: Notification, on_gone: Callable[[Subscription], None]
    ) -> str:
        """One subscription's delivery; returns its outcome (a FanOutReport field)."""
        try:
            return self._attempts(subscription, payload, note, on_gone)
        except Exception:
            log.exception("push %s failed unexpectedly", subscription.endpoint_hash[:12])
            return "failed"

    def _attempts(
        self, subscription: Subscription, payload: bytes, note: Notification, on_gone: Callable[[Subscription], None]
    ) -> str:
        assert self._sender is not None
        target = subscription.endpoint_hash[:12]
        for attempt in range(1, self._max_attempts + 1):
            try:
                self._check_endpoint(subscription.endpoint)
            except UnsafeUrl as exc:
                log.warning("push %s: endpoint refused before sending: %s", target, exc)
                return "blocked"
            retry_after = None
            try:
                result = self._sender.send(subscription, payload, ttl=note.ttl, urgency=note.urgency, topic=note.topic)
            except UnsafeUrl as exc:  # the guard's check at connection time (the name now resolves elsewhere)
                log.warning("push %s: endpoint refused when sending: %s", target, exc)
                return "blocked"
            except OSError as exc:  # refused, reset, timed out (requests' errors are OSErrors too): retried
                log.warning("push %s attempt %d: %s", target, attempt, type(exc).__name__)
            else:
                if 200 <= result.status < 300:
                    return "sent"
                if result.status in (404, 410):
                    on_gone(subscription)
                    return "pruned"
                if result.status != 429 and result.status < 500:
                    log.warning("push %s refused with %d: not retried", target, result.status)
                    return "failed"
                retry_after = result.retry_after
            if attempt == self._max_attempts:
                break
            delay = retry_delay(attempt, retry_after, base=self._base_delay)
            if delay > self._max_delay:
                log.warning("push %s: asked to wait %.0f s, longer than a batch may; giving up", target, delay)
                return "failed"
            self._sleep(delay)
        log.warning("push %s failed after %d attempts", target, self._max_attempts)
        return "failed"
