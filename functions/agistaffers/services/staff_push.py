"""Web push to staff: their browsers' subscriptions, and one push per alert state change to every
staff member who subscribed (disabled staff hear nothing).

The subscription is the same contract as SteppersLife's (``shared/push_subscription.py`` for the
keys, the outbound guard for the endpoint, checked here and again at every send); delivery is the
platform's (``functions/platform/push.py``): bounded, retried on 429/5xx, and a subscription its push
service forgot (404/410) is deleted. A failed push never fails the step, as the platform's delivery
decides: retrying would push again to everyone who already got it.
"""

from __future__ import annotations

import logging
from typing import Any

from functions.agistaffers.services.accounts import Actor
from functions.platform.ports import TransactionalDatabase
from functions.platform.processing import ReceivedEvent
from functions.platform.push import EndpointChecker, FanOutReport, Notification, PushDelivery, Subscription
from functions.platform.push_subscriptions import (
    check_subscription,
    delete_subscription,
    save_subscription,
    subscription_from_row,
)
from shared.errors import Forbidden

log = logging.getLogger("agistack.push")

MAX_SUBSCRIPTIONS_PER_USER = 10
# Long enough for a laptop opened the next morning; an alert older than that is in the dashboard.
ALERT_TTL_SECONDS = 12 * 3600


def alert_notification(event: ReceivedEvent) -> Notification:
    payload = event.payload
    state = str(payload.get("state"))
    value = payload.get("value")
    reading = f" (value {value:g})" if isinstance(value, int | float) else ""
    return Notification(
        title=f"[{state}] {payload.get('domain')}",
        body=f"{payload.get('title') or payload.get('metric')}{reading}",
        url=f"/sites/{payload['site_id']}/alerts",
        kind=event.topic,
        event_id=str(payload["incident_id"]),
        ttl=ALERT_TTL_SECONDS,
        urgency="high" if state == "firing" else "normal",
    )


class StaffPush:
    def __init__(self, db: TransactionalDatabase, delivery: PushDelivery, *, check_endpoint: EndpointChecker) -> None:
        self._db = db
        self._delivery = delivery
        self._check_endpoint = check_endpoint

    def subscribe(self, actor: Actor, endpoint: str, p256dh: str, auth: str) -> tuple[dict[str, Any], bool]:
        """Store (or move to this staff member) the browser's subscription; returns (it, created).
        Each staff member keeps their newest ``MAX_SUBSCRIPTIONS_PER_USER``."""
        if not actor.is_staff:
            raise Forbidden("alert pushes are for staff", code="staff_only")
        check_subscription(endpoint, p256dh, auth, self._check_endpoint)
        with self._db.transaction() as conn:
            row, _ = save_subscription(conn, actor.user_id, endpoint, p256dh, auth, keep=MAX_SUBSCRIPTIONS_PER_USER)
        created = bool(row.pop("created"))
        return row, created

    def unsubscribe(self, actor: Actor, endpoint: str) -> None:
        with self._db.transaction() as conn:
            delete_subscription(conn, actor.user_id, endpoint)

    def push_alert(self, event: ReceivedEvent) -> FanOutReport:
        """The staff-push step of the ``monitoring.alert`` fan-out."""
        if not self._delivery.configured:
            log.info("web push is not configured (VAPID_PRIVATE_KEY, VAPID_SUBJECT): alert push not sent")
            return FanOutReport()
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT p.id, p.user_id, p.endpoint, p.endpoint_hash, p.p256dh, p.auth FROM push_subscriptions p "
                "JOIN users u ON u.id = p.user_id WHERE u.role = 'admin' AND u.disabled_at IS NULL"
            ).fetchall()
        report = self._delivery.send(
            [subscription_from_row(row) for row in rows], alert_notification(event), on_gone=self._prune
        )
        log.info("alert push %s: %s", event.dedup_key, report)
        return report

    def _prune(self, subscription: Subscription) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM push_subscriptions WHERE id = %s", (subscription.id,))
