"""Web push: durable subscriptions, who hears about what, and a bounded, self-pruning fan-out.

Who gets a notification:
  event.published        subscribers whose ``users.preferences`` match the event (see below);
  event.cancelled        everyone holding a registration (registered, waitlisted or checked in);
  registration.promoted  the person promoted from the waiting list, if still holding the seat.
Preferences: ``{"notify": true, "categories": [...], "locations": [...]}``. ``notify`` must be true;
an empty or missing list does not restrict on that field; a category matches the event's exactly
(case-insensitively), a location when it appears in the event's location text ("Chicago" matches
"Chicago, IL"). The organizer is not told about their own event.

Delivery is the platform's (``functions/platform/push.py``): bounded, retried, self-pruning; a
subscription its push service forgot is deleted here and in the edge's KV copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from psycopg import Connection

from functions.platform.ports import Row, TransactionalDatabase
from functions.platform.push import (
    EndpointChecker,
    FanOutReport,
    KvPruner,
    Notification,
    PushDelivery,
    Subscription,
)
from functions.platform.push_subscriptions import (
    check_subscription,
    delete_subscription,
    save_subscription,
    subscription_from_row,
)
from functions.stepperslife.services.enhancement import when_text
from shared.envelope import Identity

log = logging.getLogger("agistack.push")

MAX_SUBSCRIPTIONS_PER_USER = 20
MAX_TTL_SECONDS = 28 * 86400  # what push services keep a message for at most
_COLUMNS = "id, user_id, endpoint, endpoint_hash, p256dh, auth"


class PushService:
    def __init__(
        self,
        db: TransactionalDatabase,
        *,
        delivery: PushDelivery,
        pruner: KvPruner,
        check_endpoint: EndpointChecker,
        site_url: str,
    ) -> None:
        self._db = db
        self._delivery = delivery
        self._pruner = pruner
        self._check_endpoint = check_endpoint
        self._site_url = site_url

    # --- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, owner: Identity, endpoint: str, p256dh: str, auth: str) -> tuple[dict[str, Any], bool]:
        """Store (or refresh) the subscription for ``endpoint``; returns (subscription, created).

        An endpoint belongs to one browser: subscribing it again, even from another account signed in
        on that browser, moves it rather than duplicating it; each user keeps their newest
        ``MAX_SUBSCRIPTIONS_PER_USER`` (``functions/platform/push_subscriptions.py``)."""
        check_subscription(endpoint, p256dh, auth, self._check_endpoint)
        with self._db.transaction() as conn:
            row, evicted = save_subscription(
                conn, owner.user_id, endpoint, p256dh, auth, keep=MAX_SUBSCRIPTIONS_PER_USER
            )
        for old_hash in evicted:
            self._prune_kv(old_hash)
        created = bool(row.pop("created"))
        return row, created

    def unsubscribe(self, owner: Identity, endpoint: str) -> None:
        """Delete ``owner``'s subscription for ``endpoint`` (another user's looks absent: 404). The edge
        deletes its KV copy itself before forwarding the request here."""
        with self._db.transaction() as conn:
            delete_subscription(conn, owner.user_id, endpoint)

    # --- who hears about what ---------------------------------------------------------------------

    def subscriptions_of(self, user_id: str) -> list[Subscription]:
        with self._db.transaction() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = %s", (user_id,)).fetchall()
        return [subscription_from_row(row) for row in rows]

    def notify(self, topic: str, payload: Mapping[str, Any]) -> FanOutReport:
        """The notification step of a domain event."""
        if not self._delivery.configured:
            log.info("web push is not configured (VAPID_PRIVATE_KEY, VAPID_SUBJECT): %s not sent", topic)
            return FanOutReport()
        event_id = str(payload["event_id"])
        with self._db.transaction() as conn:
            event = conn.execute(
                "SELECT id, user_id, title, slug, category, location, status, event_date, time_zone, "
                "greatest(extract(epoch FROM event_date - now()), 0)::bigint AS seconds_to_start "
                "FROM events WHERE id = %s",
                (event_id,),
            ).fetchone()
            if event is None:
                log.info("event %s is gone: no %s notification", event_id, topic)
                return FanOutReport()
            note, subscriptions = self._audience(conn, topic, event, payload)
        if note is None:
            return FanOutReport()
        report = self.send(subscriptions, note)
        log.info("%s %s: %s", topic, event_id, json.dumps(asdict(report)))
        return report

    def _audience(
        self, conn: Connection[Row], topic: str, event: Row, payload: Mapping[str, Any]
    ) -> tuple[Notification | None, list[Subscription]]:
        when = when_text(event["event_date"], event["time_zone"])
        where = f" · {event['location']}" if event["location"] else ""
        # Until the event starts, the news is worth delivering to a device that comes online late.
        ttl = max(60, min(int(event["seconds_to_start"]), MAX_TTL_SECONDS))
        url = f"{self._site_url}/events/{event['slug']}"
        event_id = str(event["id"])
        if topic == "event.published":
            if event["status"] != "published":
                return None, []
            rows = conn.execute(
                f"SELECT {', '.join('s.' + c for c in _COLUMNS.split(', '))} FROM push_subscriptions AS s "
                "JOIN users AS u ON u.id = s.user_id "
                "WHERE u.preferences -> 'notify' = 'true'::jsonb AND u.id <> %(organizer)s "
                "AND CASE WHEN jsonb_typeof(u.preferences -> 'categories') IS DISTINCT FROM 'array' THEN true "
                "  WHEN u.preferences -> 'categories' = '[]'::jsonb THEN true "
                "  ELSE EXISTS (SELECT 1 FROM jsonb_array_elements_text(u.preferences -> 'categories') AS c(name) "
                "               WHERE lower(c.name) = lower(%(category)s)) END "
                "AND CASE WHEN jsonb_typeof(u.preferences -> 'locations') IS DISTINCT FROM 'array' THEN true "
                "  WHEN u.preferences -> 'locations' = '[]'::jsonb THEN true "
                "  ELSE EXISTS (SELECT 1 FROM jsonb_array_elements_text(u.preferences -> 'locations') AS l(place) "
                "               WHERE btrim(l.place) <> '' "
                "               AND strpos(lower(%(location)s), lower(btrim(l.place))) > 0) END",
                {"organizer": event["user_id"], "category": event["category"], "location": event["location"]},
            ).fetchall()
            note = Notification(f"New event: {event['title']}", f"{when}{where}", url, topic, event_id, ttl, "low")
        elif topic == "event.cancelled":
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id IN (SELECT user_id FROM "
                "event_registrations WHERE event_id = %s AND status IN ('registered', 'waitlisted', 'checked_in'))",
                (event_id,),
            ).fetchall()
            note = Notification(
                f"Cancelled: {event['title']}",
                f"The event on {when} will not take place.",
                url,
                topic,
                event_id,
                ttl,
                "high",
            )
        elif topic == "registration.promoted":
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = %(user)s AND EXISTS (SELECT 1 FROM "
                "event_registrations WHERE user_id = %(user)s AND event_id = %(event)s "
                "AND status IN ('registered', 'checked_in'))",
                {"user": str(payload["user_id"]), "event": event_id},
            ).fetchall()
            note = Notification(
                f"You're in: {event['title']}",
                f"A seat opened up and it is yours. {when}{where}",
                url,
                topic,
                event_id,
                ttl,
                "high",
            )
        else:
            raise ValueError(f"no notification for {topic!r}")
        return note, [subscription_from_row(row) for row in rows]

    def send(self, subscriptions: Sequence[Subscription], note: Notification) -> FanOutReport:
        """Deliver ``note`` to ``subscriptions``; forgotten ones are pruned here and at the edge."""
        return self._delivery.send(subscriptions, note, on_gone=self._prune)

    def _prune(self, subscription: Subscription) -> None:
        """The push service forgot this subscription: forget it here and at the edge."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM push_subscriptions WHERE endpoint = %s", (subscription.endpoint,))
        self._prune_kv(subscription.endpoint_hash)

    def _prune_kv(self, hash_hex: str) -> None:
        try:
            self._pruner.delete(hash_hex)
        except Exception as exc:
            # The durable copy is gone; the edge only stores subscriptions, it never sends from KV.
            log.warning("could not delete push:%s from the edge KV: %s", hash_hex[:12], exc)
