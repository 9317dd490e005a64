"""Content enhancement (the seed's Content_Generation): SEO text, keywords and social posts for an event.

A ``ContentEnhancer`` turns an event's fields into ``EnhancedContent``. ``OfflineEnhancer`` derives
everything from the fields themselves, needs nothing outside the process and is the fallback of every
other implementation (flowise's, in ``functions.stepperslife.adapters.flowise``). Results are stored in
``events.metadata.enhanced`` and cached in Redis under ``ai:content:event:{id}:v1`` for an hour.

Length limits, in characters (Unicode code points):
  meta description 160 (what search engines show);
  X 280 (its post limit; links are counted at their full length, which is conservative);
  Facebook 500: Facebook accepts 63,206 characters, but its feed folds a post behind "See more" after
  a few hundred, so a post meant to be read in the feed stays within 500;
  Instagram 2,200 and LinkedIn 3,000 (their caption and post limits).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from functions.platform.cache import RedisLike, cache_key
from functions.platform.ports import Row, TransactionalDatabase
from functions.stepperslife.cache_policy import TTL_AI_RESPONSE

log = logging.getLogger("agistack.enhancement")

META_DESCRIPTION_LIMIT = 160
SOCIAL_LIMITS: dict[str, int] = {"x": 280, "facebook": 500, "instagram": 2200, "linkedin": 3000}
MAX_KEYWORDS = 10
_HASHTAGS = {"x": 2, "facebook": 2, "instagram": 10, "linkedin": 3}
_STOPWORD_TEXT = (
    "a about after all also an and any are as at be been before but by can come could do for from get "
    "has have here how if in into is it its join just let like more most my new night no not now of on "
    "one or our out over so some than that the their them then there these they this to too up us very "
    "was we were what when where which while who will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*[a-z0-9]|[a-z0-9]")


@dataclass(frozen=True)
class EventContent:
    """The fields content is derived from."""

    id: str
    title: str
    description: str
    category: str
    tags: tuple[str, ...]
    location: str | None
    event_date: datetime
    time_zone: str
    url: str

    @property
    def source_hash(self) -> str:
        """Changes when (and only when) the content would: a repeat run with the same input is skipped."""
        fields = [self.title, self.description, self.category, list(self.tags), self.location]
        raw = json.dumps([*fields, self.event_date.isoformat(), self.time_zone, self.url], ensure_ascii=False)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EnhancedContent:
    meta_description: str
    keywords: tuple[str, ...]
    social: dict[str, str]
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "meta_description": self.meta_description,
            "keywords": list(self.keywords),
            "social": dict(self.social),
            "source": self.source,
        }


class ContentEnhancer(Protocol):
    def enhance(self, event: EventContent) -> EnhancedContent: ...


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word boundary, with an ellipsis when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,;:-—") + "…"


def enhanced_from_json(data: Any, *, source: str) -> EnhancedContent:
    """Validate content produced elsewhere (a model's answer); texts longer than their limit are cut."""
    if not isinstance(data, dict):
        raise ValueError("enhanced content must be an object")
    meta, keywords, social = data.get("meta_description"), data.get("keywords"), data.get("social")
    if not isinstance(meta, str) or not meta.strip():
        raise ValueError("meta_description is missing")
    if not isinstance(keywords, list) or not all(isinstance(word, str) for word in keywords):
        raise ValueError("keywords must be a list of strings")
    if not isinstance(social, dict) or any(not isinstance(social.get(net), str) for net in SOCIAL_LIMITS):
        raise ValueError(f"social must have a text for each of {', '.join(SOCIAL_LIMITS)}")
    return EnhancedContent(
        meta_description=fit(meta, META_DESCRIPTION_LIMIT),
        keywords=tuple(_unique(word.strip().lower() for word in keywords if word.strip()))[:MAX_KEYWORDS],
        social={net: fit(social[net], limit) for net, limit in SOCIAL_LIMITS.items()},
        source=source,
    )


def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))


def when_text(event_date: datetime, time_zone: str) -> str:
    """``Sat, May 16, 2026 at 8:00 PM CDT`` in the event's own time zone."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    try:
        local = (event_date if event_date.tzinfo else event_date.replace(tzinfo=UTC)).astimezone(zone)
    except OverflowError:
        # A date at the edge of the calendar (stored before the API checked the window): the step that
        # formats it must still finish, so it says the date as it was written.
        return event_date.isoformat()
    hour = local.hour % 12 or 12
    return f"{local:%a}, {local:%b} {local.day}, {local.year} at {hour}:{local:%M} {local:%p} {local.tzname()}"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.search(r"(?<=[.!?])\s", text)
    return text[: match.start()] if match else text


def _hashtag(word: str) -> str:
    return "#" + "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", word) if part)


class OfflineEnhancer:
    """Everything derived from the event's own fields: deterministic, free and always available."""

    def enhance(self, event: EventContent) -> EnhancedContent:
        when = when_text(event.event_date, event.time_zone)
        where = f" in {event.location}" if event.location else ""
        headline = f"{event.title}: {when}{where}."
        summary = " ".join(event.description.split())
        keywords = self.keywords(event)
        social = {
            net: self._post(limit, headline, summary, event.url, keywords[: _HASHTAGS[net]])
            for net, limit in SOCIAL_LIMITS.items()
        }
        meta = f"{headline} {_first_sentence(event.description)}".strip()
        return EnhancedContent(
            meta_description=fit(meta, META_DESCRIPTION_LIMIT),
            keywords=tuple(keywords),
            social=social,
            source="offline",
        )

    @staticmethod
    def keywords(event: EventContent) -> list[str]:
        """Category, tags and city first (the organizer chose them), then the title's and the
        description's most frequent significant words."""
        chosen = [event.category.replace("-", " "), *(tag.lower() for tag in event.tags)]
        if event.location:
            chosen.append(event.location.split(",")[0].strip().lower())
        title_words = [w for w in _WORD.findall(event.title.lower()) if len(w) > 2 and w not in _STOPWORDS]
        body_words = Counter(w for w in _WORD.findall(event.description.lower()) if len(w) > 3 and w not in _STOPWORDS)
        ranked = [word for word, _ in sorted(body_words.items(), key=lambda item: (-item[1], item[0]))]
        return _unique(word for word in [*chosen, *title_words, *ranked] if word)[:MAX_KEYWORDS]

    @staticmethod
    def _post(limit: int, headline: str, summary: str, url: str, tags: list[str]) -> str:
        """Headline, as much of the description as fits, the link and hashtags, within ``limit``."""
        tail = "\n\n".join(part for part in (url, " ".join(_hashtag(tag) for tag in tags)) if part)
        room = limit - len(headline) - len(tail) - 4  # the two paragraph breaks around the summary
        body = fit(summary, room) if summary and room >= 40 else ""
        return fit("\n\n".join(part for part in (headline, body, tail) if part), limit)


class ContentEnhancementService:
    def __init__(
        self, db: TransactionalDatabase, enhancer: ContentEnhancer, redis: RedisLike | None, site_url: str
    ) -> None:
        self._db = db
        self._enhancer = enhancer
        self._redis = redis
        self._site_url = site_url

    def enhance_event(self, event_id: str) -> dict[str, Any] | None:
        """Enhance ``event_id``'s content (unless its fields are unchanged since the last run), store it
        in the event's metadata and cache it. ``None`` when the event no longer exists."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id, title, slug, description, category, tags, location, event_date, time_zone, metadata "
                "FROM events WHERE id = %s",
                (event_id,),
            ).fetchone()
        if row is None:
            log.info("event %s is gone: nothing to enhance", event_id)
            return None
        content = self._content(row)
        previous = row["metadata"].get("enhanced")
        if isinstance(previous, dict) and previous.get("source_hash") == content.source_hash:
            record: dict[str, Any] = previous
        else:
            enhanced = self._enhancer.enhance(content)
            record = {
                **enhanced.to_json(),
                "source_hash": content.source_hash,
                "generated_at": datetime.now(UTC).isoformat(),
            }
            with self._db.transaction() as conn:
                # jsonb_set on the current row: other metadata keys written meanwhile are kept.
                conn.execute(
                    "UPDATE events SET metadata = jsonb_set(metadata, '{enhanced}', %s::jsonb) WHERE id = %s",
                    (json.dumps(record), event_id),
                )
        self._cache(event_id, record)
        return record

    def _content(self, row: Row) -> EventContent:
        return EventContent(
            id=str(row["id"]),
            title=row["title"],
            description=row["description"] or "",
            category=row["category"],
            tags=tuple(row["tags"] or ()),
            location=row["location"],
            event_date=row["event_date"],
            time_zone=row["time_zone"],
            url=f"{self._site_url}/events/{row['slug']}",
        )

    def _cache(self, event_id: str, record: dict[str, Any]) -> None:
        if self._redis is None:
            return
        try:
            key = cache_key("ai", "content", f"event:{event_id}", 1)
            self._redis.set(key, json.dumps(record), ex=TTL_AI_RESPONSE)
        except Exception as exc:
            # The metadata column holds the result; the cache is only a faster copy.
            log.warning("redis unavailable, enhanced content not cached: %s", type(exc).__name__)
