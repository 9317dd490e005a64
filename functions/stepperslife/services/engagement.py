"""User engagement (the seed's User_Engagement workflow): a daily digest of recommended events pushed to
the users who opted in (``preferences.digest``).

At most one digest per user and day, so a schedule that fires twice sends nothing twice: each digest
is a claim (``functions/platform/claims.py``) under scope ``digest`` and key ``<day>:<user>``, whose
record keeps the events sent. A run that is sending a user's digest while another run reaches that
user makes the other skip it; a send that raises releases the claim, so that a later run sends it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from functions.platform.claims import ClaimBusy, Claims, Done
from functions.platform.ports import TransactionalDatabase
from functions.platform.push import Notification
from functions.stepperslife.services.push import PushService
from functions.stepperslife.services.recommendations import RecommendationService

DIGEST_SIZE = 3
SCOPE = "digest"
# Longer than one user's fan-out with its retries can take.
SEND_LEASE = timedelta(minutes=5)
# A digest claim matters on its day only; a week keeps a short record of what was sent.
RETENTION = timedelta(days=7)


@dataclass(frozen=True)
class DigestReport:
    candidates: int
    sent: int
    skipped_nothing_to_recommend: int
    skipped_already_sent: int


class EngagementService:
    def __init__(
        self,
        db: TransactionalDatabase,
        claims: Claims,
        recommendations: RecommendationService,
        push: PushService,
        site_url: str,
    ) -> None:
        self._db = db
        self._claims = claims
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
            send = functools.partial(self._send, user_id, items)
            try:
                outcome = self._claims.run_once(SCOPE, f"{day.isoformat()}:{user_id}", send, lease=SEND_LEASE)
            except ClaimBusy:  # another run is sending it right now
                already += 1
                continue
            if isinstance(outcome, Done):
                already += 1
            else:
                sent += 1
        return DigestReport(len(users), sent, nothing, already)

    def prune(self) -> int:
        """Forget digest records older than ``RETENTION``; returns how many."""
        return self._claims.prune(RETENTION, family=SCOPE)

    def _send(self, user_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        self._push.send(self._push.subscriptions_of(user_id), self._note(items))
        return {"event_ids": [item["event"]["id"] for item in items]}

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
