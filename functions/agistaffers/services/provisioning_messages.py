"""The provisioning queue's consumer: each message is one saga step (``saga.due``), a welcome mail to
send (``site.welcome``) or a customer's status change that starts runs (``customer.status_changed``).

Failure model: a saga step is idempotent by the run's lease and records (a duplicate message finds the
run not due or held, and does nothing). The other topics go through the platform's step engine, whose
claims make each of them run once per outbox row. The welcome mail has its own claim per site
(``mail`` / ``welcome:<site>``), because SES has no idempotency key and a resend cannot be undone:
the claim is committed before SES is called and completed with the message id after. SES refusing
(or never being reached: ``NoEffect``) releases it, so a retry sends. A claim found taken over (its
holder died between claiming and recording) or an unclear answer (a read timeout) is "in doubt": SES
may have accepted the mail and cannot be asked, so it is NOT sent again (at most once, logged as an
error for staff). That window (claim committed → SES's answer recorded, milliseconds) is the only one
in which a mail can be lost; nothing can send a site's welcome twice. A message no retry can fix is a
``PoisonMessage``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from functions.agistaffers.services import parse_uuid
from functions.agistaffers.services.domain_events import ALERT_TOPIC, CUSTOMER_STATUS_TOPIC, TOPICS, WELCOME_TOPIC
from functions.agistaffers.services.provisioning import Provisioning, alert_mail, load_site, welcome_mail
from functions.agistaffers.services.saga import DUE_TOPIC, NoEffect
from functions.platform.claims import Claims, Done
from functions.platform.ports import TransactionalDatabase
from functions.platform.processing import PoisonMessage, ReceivedEvent, Step, StepEngine, parse_envelope
from functions.platform.queues import QueueMessage

log = logging.getLogger("agistack.provisioning")

# SQS keeps a message 14 days at most: no redelivery can need a claim older than that.
RETENTION = timedelta(days=14)
WELCOME_SCOPE = "mail"
# Longer than an SES call can take (SesMailer's timeouts: 5 s connect, 20 s read, no client retry).
WELCOME_LEASE = timedelta(seconds=90)


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        """Send one mail; returns the provider's message id. Raises ``NoEffect`` when the provider
        certainly did not accept it; any other exception leaves that in doubt."""
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
        self._claims = claims
        self._provisioning = provisioning
        self._mailer = mailer
        self._once = StepEngine(
            claims,
            {
                CUSTOMER_STATUS_TOPIC: [("start_runs", self._customer_changed)],
                ALERT_TOPIC: [("mail", self._mail_alert), *alert_channels],
            },
            check=check_payload,
        )

    def handle(self, message: QueueMessage) -> None:
        event = parse_envelope(message.body, TOPICS, check_payload)
        if event.topic == DUE_TOPIC:
            self._provisioning.engine.advance(str(event.payload["run_id"]))
        elif event.topic == WELCOME_TOPIC:
            self._send_welcome(str(event.payload["site_id"]))
        else:
            self._once.handle(message)

    def _send_welcome(self, site_id: str) -> None:
        """The site's welcome mail, at most once ever (see the module's failure model)."""
        with self._db.transaction() as conn:
            site = load_site(conn, site_id)
        if site is None or site["status"] != "active":
            return  # deleted (or failed) since: no welcome for a site that is not live
        # Everything but the SES call happens before the claim: the window in doubt holds nothing else.
        subject, text, html = welcome_mail(site)
        claimed = self._claims.claim(WELCOME_SCOPE, f"welcome:{site_id}", lease=WELCOME_LEASE)
        if isinstance(claimed, Done):
            return
        if claimed.taken_over:
            log.error("welcome mail of site %s in doubt: its sender died mid-send; not sent again", site_id)
            self._claims.complete(claimed, {"outcome": "in_doubt", "why": "the sender died mid-send"})
            return
        try:
            message_id = self._mailer.send(to=site["email"], subject=subject, text=text, html=html)
        except NoEffect:
            self._claims.release(claimed)
            raise
        except Exception as exc:
            log.error("welcome mail of site %s in doubt (%s: %s); not sent again", site_id, type(exc).__name__, exc)
            self._claims.complete(claimed, {"outcome": "in_doubt", "why": type(exc).__name__})
            return
        self._claims.complete(claimed, {"outcome": "sent", "message_id": message_id})

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
