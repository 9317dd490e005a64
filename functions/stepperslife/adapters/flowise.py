"""Content enhancement through flowise's prediction API, with the offline enhancer as the fallback.

``POST {FLOWISE_URL}/api/v1/prediction/{FLOWISE_CHATFLOW_ID}`` with ``{"question": ...}`` and, when an
API key is set, ``Authorization: Bearer {FLOWISE_API_KEY}``; the answer is ``{"text": ...}`` where the
text holds the JSON the question asks for. Any failure (network, timeout, HTTP error, an answer that is
not the JSON asked for) is logged and answered by the fallback: enhancement never blocks processing.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

from functions.stepperslife.services.enhancement import (
    MAX_KEYWORDS,
    META_DESCRIPTION_LIMIT,
    SOCIAL_LIMITS,
    ContentEnhancer,
    EnhancedContent,
    EventContent,
    enhanced_from_json,
    when_text,
)

log = logging.getLogger("agistack.flowise")

MAX_RESPONSE_BYTES = 256 * 1024


def question(event: EventContent) -> str:
    """The prompt: the event as JSON data (never as instructions) and the exact JSON shape wanted."""
    limits = ", ".join(f'"{net}" (at most {limit} characters)' for net, limit in SOCIAL_LIMITS.items())
    facts = {
        "title": event.title,
        "description": event.description,
        "category": event.category,
        "tags": list(event.tags),
        "location": event.location,
        "when": when_text(event.event_date, event.time_zone),
        "url": event.url,
    }
    return (
        "You write marketing copy for a dance event listing. The event, as JSON data:\n"
        f"{json.dumps(facts, ensure_ascii=False)}\n"
        "Answer with one JSON object and nothing else, with keys: "
        f'"meta_description" (at most {META_DESCRIPTION_LIMIT} characters), '
        f'"keywords" (a list of at most {MAX_KEYWORDS} lower-case strings), '
        f'"social" (an object with keys {limits}; each post includes the url).'
    )


def _json_in(text: str) -> Any:
    """The JSON object in a model's answer, which may wrap it in prose or a ``` fence."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the answer holds no JSON object")
    return json.loads(text[start : end + 1])


class FlowiseEnhancer:
    def __init__(
        self,
        *,
        base_url: str,
        chatflow_id: str,
        api_key: str | None,
        timeout_seconds: float,
        fallback: ContentEnhancer,
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError("FLOWISE_URL must be an http(s) URL")
        self._url = f"{base_url.rstrip('/')}/api/v1/prediction/{quote(chatflow_id, safe='')}"
        self._api_key = api_key
        self._timeout = timeout_seconds
        self._fallback = fallback

    def enhance(self, event: EventContent) -> EnhancedContent:
        try:
            return enhanced_from_json(_json_in(self._predict(question(event))), source="flowise")
        except Exception as exc:
            log.warning(
                "flowise enhancement of event %s failed (%s: %s); using the offline one",
                event.id,
                type(exc).__name__,
                exc,
            )
            return self._fallback.enhance(event)

    def _predict(self, prompt: str) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._url, data=json.dumps({"question": prompt}).encode("utf-8"), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 - as above
            body = response.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ValueError("the answer is too large")
        answer = json.loads(body)
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise ValueError('the answer has no "text"')
        text: str = answer["text"]
        return text
