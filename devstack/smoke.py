"""`agistack smoke`: a user's journey against a running stack, through the edge only."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SESSION_COOKIE = "__Host-session"


class SmokeFailure(RuntimeError):
    pass


@dataclass
class EdgeClient:
    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.cookies:
            # Sent by hand: the session cookie is Secure, which urllib's jar would withhold over plain http.
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - operator-given URL
                status, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, payload = error.code, error.headers, error.read()
        for cookie in headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";")[0]
        if status != expect:
            raise SmokeFailure(f"{method} {path}: expected {expect}, got {status}: {payload[:300]!r}")
        return json.loads(payload) if payload else None


def journey(base_url: str, say: Callable[[str], None]) -> None:
    edge = EdgeClient(base_url)
    email = f"smoke-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(16)
    steps: list[tuple[str, Callable[[], str]]] = []
    state: dict[str, Any] = {}

    def sign_up() -> str:
        user = edge.call("POST", "/api/users", {"email": email, "name": "Smoke Tester", "password": password}, 201)
        state["user_id"] = user["user"]["id"]
        return email

    def log_in() -> str:
        edge.call("POST", "/api/auth/login", {"email": email, "password": password})
        if SESSION_COOKIE not in edge.cookies:
            raise SmokeFailure("login set no session cookie")
        return "session cookie set"

    def create_event() -> str:
        when = (datetime.now(UTC) + timedelta(days=14)).replace(microsecond=0).isoformat()
        body = {
            "title": f"Smoke Test Social {email[6:14]}",
            "event_date": when,
            "capacity": 10,
            "location": "Chicago, IL",
            "category": "social",
        }
        state["event"] = edge.call("POST", "/api/events", body, 201)["event"]
        return str(state["event"]["slug"])

    def publish() -> str:
        event = edge.call("PATCH", f"/api/events/{state['event']['id']}", {"status": "published"})["event"]
        if event["status"] != "published":
            raise SmokeFailure(f"event status is {event['status']}")
        return "published"

    def listed() -> str:
        cursor, pages = "", 0
        while pages < 50:
            page = edge.call("GET", "/api/events?limit=100" + (f"&cursor={cursor}" if cursor else ""))
            if any(item["id"] == state["event"]["id"] for item in page["items"]):
                return f"found on page {pages + 1}"
            cursor, pages = page["next_cursor"], pages + 1
            if not cursor:
                break
        raise SmokeFailure("the published event is not in the listing")

    def register() -> str:
        registration = edge.call("POST", f"/api/events/{state['event']['id']}/registrations", None, 201)
        status = registration["registration"]["status"]
        if status != "registered":
            raise SmokeFailure(f"registration status is {status}")
        return str(status)

    def see_registration() -> str:
        mine = edge.call("GET", "/api/me/registrations")["items"]
        if not any(item["event_id"] == state["event"]["id"] for item in mine):
            raise SmokeFailure("the registration is not listed")
        return f"{len(mine)} registration(s)"

    steps = [
        ("sign up", sign_up),
        ("log in", log_in),
        ("create event", create_event),
        ("publish event", publish),
        ("list events", listed),
        ("register", register),
        ("see registration", see_registration),
    ]
    for number, (name, step) in enumerate(steps, start=1):
        try:
            detail = step()
        except (SmokeFailure, OSError, ValueError, KeyError) as exc:
            say(f"FAIL {number}/{len(steps)} {name}: {exc}")
            raise SmokeFailure(name) from exc
        say(f"ok   {number}/{len(steps)} {name}: {detail}")
