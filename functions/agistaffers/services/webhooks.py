"""Customer webhooks: endpoints a customer's owner registers, and the delivery of each alert state
change to every endpoint of the site's customer, signed (``adapters/webhooks.py``).

Registration: the URL must pass the outbound guard now (https on 443, every address public: a
metadata or private address is refused with 422); it is checked again at every send. The secret is
generated here and shown in the registration's answer only (stored as issued: see migration 0006).

Delivery, and its failure model:
- It is a step of the ``monitoring.alert`` fan-out, run once per outbox row by the step engine's
  claim; inside it, each endpoint has one ``webhook_deliveries`` row per state change (unique by
  endpoint and dedup key), so a redelivered message skips the endpoints already done and never posts
  an accepted delivery twice.
- A timeout, a connection failure, a 5xx or a 429 is retried after an exponential backoff with
  jitter (the endpoint's Retry-After when it gives one), a few times within the step; if it still
  fails, the step raises so that the queue redelivers the message later (the claim is released), and
  the attempts counted in the row carry over. After ``max_attempts`` the delivery is 'failed' with
  its last answer: bounded, and visible to the customer.
- Any other answer (a 4xx, a redirect) and a URL the guard now refuses fail at once: retrying cannot
  change them.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from functions.agistaffers.services import parse_uuid
from functions.agistaffers.services.accounts import Actor, require_customer, require_owner, require_writable
from functions.agistaffers.services.saga import backoff
from functions.platform.ports import TransactionalDatabase
from functions.platform.processing import ReceivedEvent
from functions.platform.push import retry_delay
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.net import MAX_URL_LENGTH, UnsafeUrl

if TYPE_CHECKING:  # urllib3 is imported by the adapter when a webhook is sent, not at cold start
    from functions.platform.outbound import Response

log = logging.getLogger("agistack.webhooks")

MAX_ENDPOINTS_PER_CUSTOMER = 10
_ENDPOINT_COLUMNS = "id, url, created_at"


class WebhookSender(Protocol):
    def check(self, url: str) -> None: ...

    def post(self, url: str, secret: str, body: bytes, *, delivery_id: str) -> Response: ...


class WebhookRetryLater(Exception):
    """Some deliveries failed in a way a later attempt may fix: the queue redelivers the message."""


def _retryable(status: int | None, error: str | None) -> bool:
    """No answer (timeout, refused connection), 429 and 5xx may pass later; a refused URL, a 4xx or
    a redirect will not."""
    if status is None:
        return error != "refused"
    return status == 429 or status >= 500


def _not_found() -> NotFound:
    return NotFound("webhook not found", code="webhook_not_found")


def alert_body(event: ReceivedEvent) -> bytes:
    """The JSON a receiver gets: the change's id (its dedup key, the same on every retry), its type
    and the alert's details. Serialised once, so every attempt signs the same bytes."""
    payload = event.payload
    data = {key: payload.get(key) for key in ("alert_id", "incident_id", "site_id", "domain", "metric", "value")}
    document = {
        "id": event.dedup_key,
        "type": f"alert.{payload.get('state')}",
        "created_at": payload.get("at"),
        "data": {**data, "title": payload.get("title")},
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


class Webhooks:
    def __init__(
        self,
        db: TransactionalDatabase,
        sender: WebhookSender,
        *,
        max_attempts: int = 8,
        attempts_per_step: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._sender = sender
        self._max_attempts = max_attempts
        self._attempts_per_step = attempts_per_step
        self._base_delay = base_delay
        # Waits within a step stay short: the step must end well within the queue's visibility timeout.
        self._max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.SystemRandom()

    # --- endpoints ------------------------------------------------------------------------------

    def register(self, actor: Actor, url: str) -> dict[str, Any]:
        """A new endpoint for the actor's customer (owners only); the secret is in this answer only."""
        customer_id = require_owner(actor)
        require_writable(actor)
        if len(url) > MAX_URL_LENGTH:
            raise ValidationFailed("the URL is too long", details=[{"loc": ["url"]}], code="invalid_webhook_url")
        try:
            self._sender.check(url)
        except UnsafeUrl as exc:
            raise ValidationFailed(
                f"the URL is not acceptable: {exc}", details=[{"loc": ["url"]}], code="invalid_webhook_url"
            ) from None
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self._db.transaction() as conn:
            conn.execute("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (customer_id,))
            count = conn.execute("SELECT count(*) AS n FROM webhook_endpoints WHERE customer_id = %s", (customer_id,))
            row = count.fetchone()
            if row is not None and row["n"] >= MAX_ENDPOINTS_PER_CUSTOMER:
                raise Conflict(f"at most {MAX_ENDPOINTS_PER_CUSTOMER} webhooks per account", code="too_many_webhooks")
            created = conn.execute(
                "INSERT INTO webhook_endpoints (customer_id, url, secret, created_by) VALUES (%s, %s, %s, %s) "
                f"ON CONFLICT (customer_id, url) DO NOTHING RETURNING {_ENDPOINT_COLUMNS}",
                (customer_id, url, secret, actor.user_id),
            ).fetchone()
        if created is None:
            raise Conflict("this URL is registered already", code="webhook_exists")
        return {"webhook": created, "secret": secret}

    def list(self, actor: Actor) -> dict[str, Any]:
        """The customer's endpoints (never their secrets) with their latest delivery."""
        customer_id = require_customer(actor)
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT e.id, e.url, e.created_at, d.status AS last_status, d.last_status AS last_http_status, "
                "d.last_error, d.updated_at AS last_delivery_at FROM webhook_endpoints e "
                "LEFT JOIN LATERAL (SELECT * FROM webhook_deliveries WHERE endpoint_id = e.id "
                "ORDER BY updated_at DESC LIMIT 1) d ON TRUE WHERE e.customer_id = %s ORDER BY e.created_at",
                (customer_id,),
            ).fetchall()
        return {"webhooks": rows}

    def delete(self, actor: Actor, webhook_id: Any) -> None:
        customer_id = require_owner(actor)
        require_writable(actor)
        parsed = parse_uuid(webhook_id)
        with self._db.transaction() as conn:
            gone = conn.execute(
                "DELETE FROM webhook_endpoints WHERE id = %s AND customer_id = %s RETURNING id", (parsed, customer_id)
            ).fetchone()
        if parsed is None or gone is None:
            raise _not_found()

    # --- delivery (a step of the monitoring.alert fan-out) ------------------------------------------

    def deliver_alert(self, event: ReceivedEvent) -> None:
        """Post the change to every endpoint of the site's customer; raises ``WebhookRetryLater`` when
        some delivery should be tried again later."""
        with self._db.transaction() as conn:
            endpoints = conn.execute(
                "SELECT e.id, e.url, e.secret FROM webhook_endpoints e JOIN customer_sites s "
                "ON s.customer_id = e.customer_id WHERE s.id = %s ORDER BY e.created_at",
                (str(event.payload["site_id"]),),
            ).fetchall()
        if not endpoints:
            return
        body = alert_body(event)
        # At once, so that the step's time is one endpoint's worst case (its attempts and waits),
        # well within the step's lease, however many endpoints the customer has.
        with ThreadPoolExecutor(max_workers=len(endpoints), thread_name_prefix="webhook") as pool:
            done = list(pool.map(lambda endpoint: self._deliver(endpoint, event.dedup_key, body), endpoints))
        later = [endpoint["id"] for endpoint, ok in zip(endpoints, done, strict=True) if not ok]
        if later:
            raise WebhookRetryLater(f"{len(later)} webhook deliveries of {event.dedup_key} will be retried")

    def _deliver(self, endpoint: Any, dedup_key: str, body: bytes) -> bool:
        """One endpoint's delivery; False when it should be tried again later."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, dedup_key) VALUES (%s, %s) "
                "ON CONFLICT (endpoint_id, dedup_key) DO NOTHING",
                (endpoint["id"], dedup_key),
            )
            delivery = conn.execute(
                "SELECT id, status FROM webhook_deliveries WHERE endpoint_id = %s AND dedup_key = %s",
                (endpoint["id"], dedup_key),
            ).fetchone()
        assert delivery is not None
        if delivery["status"] != "pending":
            return True
        for round_attempt in range(1, self._attempts_per_step + 1):
            attempts = self._count_attempt(delivery["id"])
            status, error, retry_after = self._attempt(endpoint, body, str(delivery["id"]))
            if status is not None and 200 <= status < 300:
                self._record(delivery["id"], "delivered", status, None)
                return True
            if not _retryable(status, error) or attempts >= self._max_attempts:
                self._record(delivery["id"], "failed", status, error or f"HTTP {status}")
                log.warning("webhook %s: %s failed after %d attempts", endpoint["id"], dedup_key, attempts)
                return True
            self._record(delivery["id"], "pending", status, error or f"HTTP {status}")
            asked = retry_delay(attempts, retry_after, base=self._base_delay) if retry_after else None
            delay = backoff(attempts, base=self._base_delay, cap=self._max_delay, retry_after=asked, rng=self._rng)
            if round_attempt == self._attempts_per_step or delay > self._max_delay:
                return False
            self._sleep(delay)
        return False

    def _attempt(self, endpoint: Any, body: bytes, delivery_id: str) -> tuple[int | None, str | None, str | None]:
        """(HTTP status, error, Retry-After) of one POST."""
        try:
            response = self._sender.post(endpoint["url"], endpoint["secret"], body, delivery_id=delivery_id)
        except UnsafeUrl as exc:
            log.warning("webhook %s refused by the outbound guard: %s", endpoint["id"], exc)
            return None, "refused", None
        except OSError as exc:  # the guard's OutboundUnavailable: no answer in time
            return None, str(exc)[:300], None
        return response.status, None, response.headers.get("retry-after")

    def _count_attempt(self, delivery_id: Any) -> int:
        """Counted before the POST, so that even a crash mid-attempt uses one of the bounded attempts."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, updated_at = now() WHERE id = %s "
                "RETURNING attempts",
                (delivery_id,),
            ).fetchone()
        assert row is not None
        return int(row["attempts"])

    def _record(self, delivery_id: Any, status: str, http_status: int | None, error: str | None) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE webhook_deliveries SET status = %s, last_status = %s, last_error = %s, updated_at = now() "
                "WHERE id = %s",
                (status, http_status, error, delivery_id),
            )
