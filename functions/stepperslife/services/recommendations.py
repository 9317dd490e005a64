"""Event recommendations (the seed's Event_Recommendations): upcoming, published events with seats
left that the user has not registered for, scored by stated preferences, past registrations and
popularity. Each result says why it was chosen. Cached per user for 30 minutes (the seed's TTL)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from functions.platform.cache import Cache, cache_key
from functions.platform.jsonable import json_ready
from functions.platform.ports import Row, TransactionalDatabase
from functions.stepperslife.cache_policy import TTL_RECOMMENDATIONS
from functions.stepperslife.services.events import EVENT_COLUMNS, public_event

CANDIDATES = 500
WEIGHT_PREFERRED_CATEGORY = 3.0
WEIGHT_PREFERRED_LOCATION = 2.0
WEIGHT_HISTORY = 2.0
WEIGHT_POPULARITY = 1.0


def recommendations_key(user_id: str) -> str:
    return cache_key("ai", "recommendations", f"user:{user_id}", 1)


def score(event: Row, preferences: dict[str, Any], history: Counter[str]) -> tuple[float, list[str]]:
    points, reasons = 0.0, []
    if event["category"] in preferences.get("categories", []):
        points += WEIGHT_PREFERRED_CATEGORY
        reasons.append(f"you follow {event['category']} events")
    location = (event["location"] or "").lower()
    wanted = [place for place in preferences.get("locations", []) if place.lower() in location]
    if wanted:
        points += WEIGHT_PREFERRED_LOCATION
        reasons.append(f"near {wanted[0]}")
    total = sum(history.values())
    if total and history[event["category"]]:
        points += WEIGHT_HISTORY * history[event["category"]] / total
        reasons.append(f"you went to {history[event['category']]} {event['category']} event(s) before")
    fill = event["registered_count"] / event["capacity"]
    if fill >= 0.5:
        reasons.append(f"popular: {round(fill * 100)}% of seats taken")
    points += WEIGHT_POPULARITY * fill
    return points, reasons or ["upcoming event with seats left"]


class RecommendationService:
    def __init__(self, db: TransactionalDatabase, cache: Cache) -> None:
        self._db = db
        self._cache = cache

    def for_user(self, user_id: str, limit: int = 10) -> dict[str, Any]:
        result, hit = self._cache.get_or_load(
            recommendations_key(user_id), TTL_RECOMMENDATIONS, lambda: self._compute(user_id, limit)
        )
        return {**result, "cached": hit}

    def forget(self, user_id: str) -> None:
        """The user's registrations changed: the next request recomputes."""
        self._cache.delete(recommendations_key(user_id))

    def _compute(self, user_id: str, limit: int) -> dict[str, Any]:
        with self._db.transaction() as conn:
            user = conn.execute("SELECT preferences FROM users WHERE id = %s", (user_id,)).fetchone()
            preferences: dict[str, Any] = user["preferences"] if user else {}
            history = Counter(
                row["category"]
                for row in conn.execute(
                    "SELECT e.category FROM event_registrations r JOIN events e ON e.id = r.event_id "
                    "WHERE r.user_id = %s AND r.status <> 'cancelled'",
                    (user_id,),
                ).fetchall()
            )
            candidates = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events e WHERE status = 'published' AND event_date > now() "
                "AND registered_count < capacity AND NOT EXISTS (SELECT 1 FROM event_registrations r "
                "  WHERE r.event_id = e.id AND r.user_id = %s AND r.status <> 'cancelled') "
                "ORDER BY event_date LIMIT %s",
                (user_id, CANDIDATES),
            ).fetchall()
        scored = []
        for event in candidates:
            points, reasons = score(event, preferences, history)
            scored.append((points, event, reasons))
        scored.sort(key=lambda item: (-item[0], item[1]["event_date"]))
        items = [
            {"event": public_event(event), "score": round(points, 3), "reasons": reasons}
            for points, event, reasons in scored[:limit]
        ]
        result: dict[str, Any] = json_ready({"items": items})
        return result
