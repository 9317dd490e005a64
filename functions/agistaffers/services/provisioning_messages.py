"""The provisioning queue's consumer: each message is one saga step (``saga.due``), a welcome mail to
send (``site.welcome``) or a customer's status change that starts runs (``customer.status_changed``).

Failure model: a saga step is idempotent by the run's lease and records (a duplicate message finds the
run not due or held, and does nothing). The other topics go through the platform's step engine, whose
claims make each of them run once per outbox row; the welcome mail's claim is taken before SES is
called and completed after, so a redelivery never sends it again; only a crash between SES accepting
the mail and the claim's completion can send it twice (after the claim's lease), the one window no
API without idempotency keys can close. A message no retry can fix is a ``PoisonMessage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from functions.agistaffers.services import parse_uuid
from functions.agistaffers.services.domain_events import ALERT_TOPIC, CUSTOMER_STATUS_TOPIC, TOPICS, WELCOME_TOPIC
from functions.agistaffers.services.provisioning import Provisioning, alert_mail, load_site, welcome_mail
from functions.agistaffers.services.saga import DUE_TOPIC
from functions.platform.claims import Claims
from functions.platform.ports import TransactionalDatabase
from functions.platform.processing import PoisonMessage, ReceivedEvent, Step, StepEngine, parse_envelope
from functions.platform.queues import QueueMessage

# SQS keeps a message 14 days at most: no redelivery can need a claim older than that.
RETENTION = timedelta(days=14)


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        """Send one mail; returns the provider's message id. Raises when it was not accepted."""
        ...


def check_payload(event: ReceivedEvent) -> None:
    keys = {
        DUE_TOPIC: ("run_id",),
        WELCOME_TOPIC: ("site_id",),
        CUSTOMER_STATUS_TOPIC: ("customer_id",),
        ALERT_TOPIC: ("site_id", "incident_id"),
    }
    for key in keys[event.topic]:
        if parse_uuid(event.payload.get(key)) is None:
            raise PoisonMessage(f"the payload lacks a valid {key}")


class ProvisioningMessages:
    def __init__(
        self,
        db: TransactionalDatabase,
        claims: Claims,
        provisioning: Provisioning,
        mailer: Mailer,
        *,
        alert_channels: Sequence[Step] = (),
    ) -> None:
        """``alert_channels``: the steps after the owner's mail that tell an alert's change elsewhere
        (staff push, customer webhooks), each run once per change by its own claim. A channel that may
        ask for a later retry (raising) goes last, so that the others are not held up by it."""
        self._db = db
        self._provisioning = provisioning
        self._mailer = mailer
        self._once = StepEngine(
            claims,
            {
                WELCOME_TOPIC: [("send", self._send_welcome)],
                CUSTOMER_STATUS_TOPIC: [("start_runs", self._customer_changed)],
                ALERT_TOPIC: [("mail", self._mail_alert), *alert_channels],
            },
            check=check_payload,
        )

    def handle(self, message: QueueMessage) -> None:
        event = parse_envelope(message.body, TOPICS, check_payload)
        if event.topic == DUE_TOPIC:
            self._provisioning.engine.advance(str(event.payload["run_id"]))
        else:
            self._once.handle(message)

    def _send_welcome(self, event: ReceivedEvent) -> None:
        with self._db.transaction() as conn:
            site = load_site(conn, str(event.payload["site_id"]))
        if site is None or site["status"] != "active":
            return  # deleted (or failed) since: no welcome for a site that is not live
        subject, text, html = welcome_mail(site)
        self._mailer.send(to=site["email"], subject=subject, text=text, html=html)

    def _mail_alert(self, event: ReceivedEvent) -> None:
        """An alert fired or resolved: the customer's contact address hears of it, once per change."""
        with self._db.transaction() as conn:
            site = load_site(conn, str(event.payload["site_id"]))
        if site is None:
            return  # the site is gone: nobody to tell
        subject, text, html = alert_mail(site, event.payload)
        self._mailer.send(to=site["email"], subject=subject, text=text, html=html)

    def _customer_changed(self, event: ReceivedEvent) -> None:
        payload = event.payload
        self._provisioning.customer_status_changed(
            str(payload["customer_id"]), str(payload.get("from")), str(payload.get("to")), event.dedup_key
        )
        self._provisioning.engine.flush_outbox()

    def prune(self) -> int:
        return self._once.prune(RETENTION)
