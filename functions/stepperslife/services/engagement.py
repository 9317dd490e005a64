"""User engagement (the seed's User_Engagement workflow): a daily digest of recommended events pushed to
the users who opted in (``preferences.digest``). At most one digest per user and day, so a schedule
that fires twice sends nothing twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from functions.platform.ports import TransactionalDatabase
from functions.platform.push import Notification, PushService
from functions.stepperslife.services.recommendations import RecommendationService

DIGEST_SIZE = 3


@dataclass(frozen=True)
class DigestReport:
    candidates: int
    sent: int
    skipped_nothing_to_recommend: int
    skipped_already_sent: int


class EngagementService:
    def __init__(
        self, db: TransactionalDatabase, recommendations: RecommendationService, push: PushService, site_url: str
    ) -> None:
        self._db = db
        self._recommendations = recommendations
        self._push = push
        self._site_url = site_url.rstrip("/")

    def send_daily_digest(self, day: date) -> DigestReport:
        with self._db.transaction() as conn:
            users = [
                str(row["id"])
                for row in conn.execute(
                    "SELECT u.id FROM users u WHERE (u.preferences ->> 'digest')::boolean "
                    "AND EXISTS (SELECT 1 FROM push_subscriptions s WHERE s.user_id = u.id) ORDER BY u.id"
                ).fetchall()
            ]
        sent = nothing = already = 0
        for user_id in users:
            items = self._recommendations.for_user(user_id, limit=DIGEST_SIZE)["items"]
            if not items:
                nothing += 1
                continue
            if not self._claim(user_id, day, [item["event"]["id"] for item in items]):
                already += 1
                continue
            self._push.send(self._push.subscriptions_of(user_id), self._note(items))
            sent += 1
        return DigestReport(len(users), sent, nothing, already)

    def _claim(self, user_id: str, day: date, event_ids: list[str]) -> bool:
        with self._db.transaction() as conn:
            claimed = conn.execute(
                "INSERT INTO digest_deliveries (user_id, day, event_ids) VALUES (%s, %s, %s::uuid[]) "
                "ON CONFLICT (user_id, day) DO NOTHING RETURNING user_id",
                (user_id, day, event_ids),
            ).fetchone()
        return claimed is not None

    def _note(self, items: list[dict[str, Any]]) -> Notification:
        first = items[0]["event"]
        titles = ", ".join(item["event"]["title"] for item in items)
        return Notification(
            title=f"{len(items)} event{'s' if len(items) != 1 else ''} picked for you",
            body=titles[:200],
            url=f"{self._site_url}/events/{first['slug']}",
            kind="digest.daily",
            event_id=str(first["id"]),
            ttl=86400,
            urgency="low",
        )
