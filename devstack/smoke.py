"""`agistack smoke`: a user's journey through each product against a running stack, through the edge only."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SESSION_COOKIE = "__Host-session"
# Cloudflare's documented dummy token: passes against the always-pass test secret that `agistack dev`
# uses; against a deployment with a real Turnstile secret the protected steps fail, as they should.
TURNSTILE_TEST_TOKEN = "XXXX.DUMMY.TOKEN.XXXX"  # noqa: S105 - a public test value


class SmokeFailure(RuntimeError):
    pass


@dataclass
class EdgeClient:
    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)

    def call(
        self, method: str, path: str, body: Any = None, expect: int = 200, extra_headers: dict[str, str] | None = None
    ) -> Any:
        """JSON in and out; an HTML answer comes back as its text."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        for name, value in (extra_headers or {}).items():
            request.add_header(name, value)
        request.add_header("cf-turnstile-response", TURNSTILE_TEST_TOKEN)
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
        if (headers.get("Content-Type") or "").startswith("text/html"):
            return payload.decode("utf-8")
        return json.loads(payload) if payload else None


class Journey:
    """The steps of the smoke journey, in order; each returns a detail line or raises SmokeFailure."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.edge = EdgeClient(self.base_url)
        self.email = f"smoke-{secrets.token_hex(4)}@example.com"
        self.password = secrets.token_urlsafe(16)
        self.state: dict[str, Any] = {}

    def sign_up(self) -> str:
        user = self.edge.call(
            "POST", "/api/users", {"email": self.email, "name": "Smoke Tester", "password": self.password}, 201
        )
        self.state["user_id"] = user["user"]["id"]
        return self.email

    def log_in(self) -> str:
        self.edge.call("POST", "/api/auth/login", {"email": self.email, "password": self.password})
        if SESSION_COOKIE not in self.edge.cookies:
            raise SmokeFailure("login set no session cookie")
        return "session cookie set"

    def create_event(self) -> str:
        when = (datetime.now(UTC) + timedelta(days=14)).replace(microsecond=0).isoformat()
        body = {
            "title": f"Smoke Test Social {self.email[6:14]}",
            "event_date": when,
            "capacity": 2,
            "location": "Chicago, IL",
            "category": "social",
            "tags": [f"smoke{self.email[6:14]}"],
        }
        self.state["event"] = self.edge.call("POST", "/api/events", body, 201)["event"]
        return str(self.state["event"]["slug"])

    def publish(self) -> str:
        event = self.edge.call("PATCH", f"/api/events/{self.state['event']['id']}", {"status": "published"})["event"]
        if event["status"] != "published":
            raise SmokeFailure(f"event status is {event['status']}")
        return "published"

    def listed(self) -> str:
        cursor, pages = "", 0
        while pages < 50:
            page = self.edge.call("GET", "/api/events?limit=100" + (f"&cursor={cursor}" if cursor else ""))
            if any(item["id"] == self.state["event"]["id"] for item in page["items"]):
                return f"found on page {pages + 1}"
            cursor, pages = page["next_cursor"], pages + 1
            if not cursor:
                break
        raise SmokeFailure("the published event is not in the listing")

    def register(self) -> str:
        registration = self.edge.call("POST", f"/api/events/{self.state['event']['id']}/registrations", None, 201)
        status = registration["registration"]["status"]
        if status != "registered":
            raise SmokeFailure(f"registration status is {status}")
        return str(status)

    def see_registration(self) -> str:
        mine = self.edge.call("GET", "/api/me/registrations")["items"]
        if not any(item["event_id"] == self.state["event"]["id"] for item in mine):
            raise SmokeFailure("the registration is not listed")
        return f"{len(mine)} registration(s)"

    def search(self) -> str:
        found = self.edge.call("GET", f"/api/events/search?q=smoke%20social%20tag:smoke{self.email[6:14]}")["items"]
        if [item["id"] for item in found] != [self.state["event"]["id"]]:
            raise SmokeFailure(f"search found {[item['title'] for item in found]}")
        return "found by full-text search"

    def sign_up_another(self, name: str) -> EdgeClient:
        other = EdgeClient(self.base_url)
        other_email = f"smoke-{name}-{secrets.token_hex(4)}@example.com"
        other.call("POST", "/api/users", {"email": other_email, "name": name, "password": self.password}, 201)
        other.call("POST", "/api/auth/login", {"email": other_email, "password": self.password})
        return other

    def fill_last_seat(self) -> str:
        self.state["second"] = self.sign_up_another("Second")
        status = self.state["second"].call("POST", f"/api/events/{self.state['event']['id']}/registrations", None, 201)
        if status["registration"]["status"] != "registered":
            raise SmokeFailure(f"second user got {status['registration']['status']}")
        return "second user took the last seat"

    def waitlisted(self) -> str:
        self.state["third"] = self.sign_up_another("Third")
        answer = self.state["third"].call("POST", f"/api/events/{self.state['event']['id']}/registrations", None, 201)
        registration = answer["registration"]
        if (registration["status"], registration["waitlist_position"]) != ("waitlisted", 1):
            raise SmokeFailure(f"third user got {registration}")
        return "third user is first on the waiting list"

    def cancellation_promotes(self) -> str:
        self.edge.call("DELETE", f"/api/events/{self.state['event']['id']}/registrations/me")
        mine = self.state["third"].call("GET", "/api/me/registrations")["items"]
        statuses = [item["status"] for item in mine if item["event_id"] == self.state["event"]["id"]]
        if statuses != ["registered"]:
            raise SmokeFailure(f"after the cancellation the third user is {statuses}")
        return "the first person waiting was promoted"

    def recommendations(self) -> str:
        when = (datetime.now(UTC) + timedelta(days=21)).replace(microsecond=0).isoformat()
        other_event = {
            "title": "Smoke Follow-up Social",
            "event_date": when,
            "capacity": 5,
            "category": "social",
            "status": "published",
        }
        created = self.edge.call("POST", "/api/events", other_event, 201)["event"]
        items = self.state["third"].call("GET", "/api/me/recommendations")["items"]
        if not any(item["event"]["id"] == created["id"] for item in items):
            raise SmokeFailure("the new event is not recommended")
        return f"{len(items)} recommendation(s), e.g. {items[0]['event']['title']!r}: {items[0]['reasons'][0]}"

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("sign up", self.sign_up),
            ("log in", self.log_in),
            ("create event", self.create_event),
            ("publish event", self.publish),
            ("list events", self.listed),
            ("register", self.register),
            ("see registration", self.see_registration),
            ("search", self.search),
            ("second user fills the last seat", self.fill_last_seat),
            ("third user is waitlisted", self.waitlisted),
            ("a cancellation promotes them", self.cancellation_promotes),
            ("recommendations", self.recommendations),
        ]


# How long the journey waits for the dev stack's minute schedule to roll the posted samples up.
ROLLUP_WAIT_SECONDS = 150


@dataclass(frozen=True)
class AgiStaff:
    """A staff login for the journey's provisioning steps, and where moto shows the mail SES sent."""

    email: str
    password: str
    moto_url: str | None = None
    # A local stack only: where the fake site's health flips, and an in-process hook that keeps the
    # monitoring steps to seconds instead of minutes: running the rollup, evaluation and outbox-relay
    # schedules now, as ``agistack run`` would (the dev scheduler runs them every minute anyway).
    fake_site_health_url: str | None = None
    run_schedules: Callable[[], None] | None = None


class AgiJourney:
    """AGI Staffers: a customer signs up, logs in, adds a site and sees it provisioning; another
    customer cannot read it; the AGI session is worth nothing on SteppersLife's routes; the site's
    agent posts metrics with its ingest token, the rollup schedule makes them appear in the dashboard,
    and the customer's public status page lists the site. With a staff login: staff activate the
    customer, the site goes live through every onboarding step, and the welcome mail is in moto's
    outbox."""

    ONBOARDING_STEPS = ("reserve", "stack", "dns", "https", "activate", "welcome")

    def __init__(self, base_url: str, staff: AgiStaff | None = None, *, patience_seconds: float = 90.0) -> None:
        self.base_url = base_url
        self.staff = staff
        self.patience = patience_seconds
        self.edge = EdgeClient(base_url)
        self.tag = secrets.token_hex(4)
        self.email = f"smoke-agi-{self.tag}@example.com"
        self.password = secrets.token_urlsafe(16)
        self.state: dict[str, Any] = {}

    def _customer(self, client: EdgeClient, email: str, company: str) -> dict[str, Any]:
        body = {"company_name": company, "email": email, "password": self.password, "plan": "starter"}
        created: dict[str, Any] = client.call("POST", "/api/agi/signup", body, 201)
        client.call("POST", "/api/agi/auth/login", {"email": email, "password": self.password})
        if SESSION_COOKIE not in client.cookies:
            raise SmokeFailure("login set no session cookie")
        return created

    def sign_up_and_log_in(self) -> str:
        created = self._customer(self.edge, self.email, f"Smoke Hosting {self.tag}")
        if created["customer"]["status"] != "pending":
            raise SmokeFailure(f"a new customer is {created['customer']['status']}")
        return f"{self.email}, customer pending, session cookie set"

    def me(self) -> str:
        me = self.edge.call("GET", "/api/agi/me")
        if me["user"]["role"] != "owner":
            raise SmokeFailure(f"the new user is {me['user']['role']}")
        return "owner of their customer"

    def add_site(self) -> str:
        domain = f"smoke-{self.tag}.example.com"
        self.state["site"] = self.edge.call("POST", "/api/agi/sites", {"domain": domain}, 201)["site"]
        return f"{domain} is {self.state['site']['status']}"

    def listed(self) -> str:
        items = self.edge.call("GET", "/api/agi/sites")["items"]
        statuses = [item["status"] for item in items if item["id"] == self.state["site"]["id"]]
        if statuses != ["provisioning"]:
            raise SmokeFailure(f"the new site is listed as {statuses}")
        return "listed as provisioning"

    def other_customer_cannot_read(self) -> str:
        other = EdgeClient(self.base_url)
        self._customer(other, f"smoke-agi-other-{self.tag}@example.com", f"Other Hosting {self.tag}")
        other.call("GET", f"/api/agi/sites/{self.state['site']['id']}", expect=404)
        if any(item["id"] == self.state["site"]["id"] for item in other.call("GET", "/api/agi/sites")["items"]):
            raise SmokeFailure("another customer sees the site in their listing")
        return "404 for another customer, absent from their listing"

    def session_stays_in_its_product(self) -> str:
        self.edge.call("GET", "/api/me/registrations", expect=401)
        return "401 on SteppersLife's routes"

    def post_metrics(self) -> str:
        # A minute back: inside the rollups' skew window, so the next scheduled run folds it in.
        at = (datetime.now(UTC) - timedelta(seconds=60)).timestamp()
        samples = [{"metric": "cpu_percent", "value": 42.0, "at": at}, {"metric": "up", "value": 1, "at": at}]
        samples.append({"metric": "no_such_metric", "value": 1, "at": at})
        token = self.state["site"]["ingest_token"]
        answer = EdgeClient(self.base_url).call(
            "POST", "/api/agi/metrics", {"samples": samples}, extra_headers={"Authorization": f"Bearer {token}"}
        )
        if (answer["accepted"], answer["reasons"]) != (2, {"unknown_metric": 1}):
            raise SmokeFailure(f"the ingest answered {answer}")
        EdgeClient(self.base_url).call("POST", "/api/agi/metrics", {"samples": samples}, expect=401)
        return "2 accepted, 1 refused (unknown_metric); no token: 401"

    def metrics_in_dashboard(self) -> str:
        path = f"/api/agi/sites/{self.state['site']['id']}/metrics?range=1h"
        deadline = time.monotonic() + ROLLUP_WAIT_SECONDS
        while time.monotonic() < deadline:
            series = self.edge.call("GET", path)["series"]
            if series.get("cpu_percent"):
                return f"cpu_percent avg {series['cpu_percent'][-1]['avg']} after the rollup schedule"
            time.sleep(3)
        raise SmokeFailure(f"no rollup of the posted samples within {ROLLUP_WAIT_SECONDS} s")

    def status_page(self) -> str:
        page_path = self.edge.call("GET", "/api/agi/dashboard")["status_page"]
        html = EdgeClient(self.base_url).call("GET", page_path)
        domain = self.state["site"]["domain"]
        if domain not in html or "100.00%" not in html:
            raise SmokeFailure(f"the status page does not show {domain} up")
        return f"{page_path} shows {domain} at 100.00%"

    def staff_activate(self) -> str:
        assert self.staff is not None
        staff = EdgeClient(self.base_url)
        staff.call("POST", "/api/agi/auth/login", {"email": self.staff.email, "password": self.staff.password})
        customer_id = self.edge.call("GET", "/api/agi/me")["user"]["customer_id"]
        customer = staff.call("POST", f"/api/agi/customers/{customer_id}/activate")["customer"]
        if customer["status"] != "active":
            raise SmokeFailure(f"the customer is {customer['status']}")
        return "customer active: its pending site's onboarding starts"

    def goes_live(self) -> str:
        site_id = self.state["site"]["id"]
        deadline = time.monotonic() + self.patience
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                onboarding = self.edge.call("GET", f"/api/agi/sites/{site_id}/onboarding")["onboarding"]
            except SmokeFailure as exc:
                # The activation's event reaches the provisioning queue a moment after the response.
                if "onboarding_not_found" not in str(exc):
                    raise
                time.sleep(0.5)
                continue
            done = [step["name"] for step in onboarding["steps"] if step["state"] == "succeeded"]
            seen = done if len(done) > len(seen) else seen
            if onboarding["status"] in ("compensated", "failed"):
                raise SmokeFailure(f"onboarding {onboarding['status']}: {onboarding['reason']}")
            if onboarding["status"] == "succeeded":
                if tuple(done) != self.ONBOARDING_STEPS:
                    raise SmokeFailure(f"onboarding succeeded with steps {done}")
                site = self.edge.call("GET", f"/api/agi/sites/{site_id}")["site"]
                if site["status"] != "active":
                    raise SmokeFailure(f"onboarding succeeded but the site is {site['status']}")
                return f"active after {' → '.join(done)}"
            time.sleep(0.5)
        raise SmokeFailure(f"not live after {self.patience:.0f} s; steps done: {seen}")

    def welcome_mail(self) -> str:
        assert self.staff is not None and self.staff.moto_url
        subject = f"{self.state['site']['domain']} is live"
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            url = f"{self.staff.moto_url.rstrip('/')}/moto-api/data.json"
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local moto
                sent = json.load(response).get("ses", {}).get("Message", [])
            mine = [m for m in sent if m.get("subject") == subject and self.email in json.dumps(m.get("destinations"))]
            if len(mine) == 1:
                return f"{subject!r} to {self.email}"
            if len(mine) > 1:
                raise SmokeFailure(f"{len(mine)} welcome mails")
            time.sleep(0.5)
        raise SmokeFailure("no welcome mail in moto's outbox")

    # --- monitoring on the live site (a local stack: the fake ingress serves it) ----------------------

    def _until(self, what: str, done: Callable[[], Any], *, nudge: bool = False, every: float = 1.0) -> Any:
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            if nudge and self.staff is not None and self.staff.run_schedules is not None:
                self.staff.run_schedules()
            value = done()
            if value:
                return value
            time.sleep(every)
        raise SmokeFailure(f"{what} not within {self.patience:.0f} s")

    def _incidents(self, kind: str, *, open: bool) -> list[dict[str, Any]]:
        query = f"site_id={self.state['site']['id']}&kind={kind}&open={'true' if open else 'false'}"
        items: list[dict[str, Any]] = self.edge.call("GET", f"/api/agi/incidents?{query}")["items"]
        return items

    def _mail(self, subject: str) -> str:
        assert self.staff is not None and self.staff.moto_url
        url = f"{self.staff.moto_url.rstrip('/')}/moto-api/data.json"

        def sent() -> bool:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local moto
                mails = json.load(response).get("ses", {}).get("Message", [])
            return any(m.get("subject") == subject and self.email in json.dumps(m.get("destinations")) for m in mails)

        self._until(f"the mail {subject!r}", sent, every=0.5)
        return subject

    def _flip(self, healthy: bool) -> None:
        assert self.staff is not None and self.staff.fake_site_health_url
        body = json.dumps({"healthy": healthy, "domain": self.state["site"]["domain"]}).encode()
        request = urllib.request.Request(  # noqa: S310 - the local fake
            self.staff.fake_site_health_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the local fake
            pass

    def _post_cpu(self, value: float, at: datetime, count: int = 5) -> None:
        samples = [{"metric": "cpu_percent", "value": value, "at": at.timestamp() + n} for n in range(count)]
        token = self.state["site"]["ingest_token"]
        answer = EdgeClient(self.base_url).call(
            "POST", "/api/agi/metrics", {"samples": samples}, extra_headers={"Authorization": f"Bearer {token}"}
        )
        if answer["accepted"] != count:
            raise SmokeFailure(f"the ingest answered {answer}")

    def checked_up(self) -> str:
        path = f"/api/agi/sites/{self.state['site']['id']}/uptime"
        uptime = self._until(
            "an uptime check", lambda: (u := self.edge.call("GET", path)["uptime"])["state"] == "up" and u
        )
        latency, expires = uptime["last_latency_ms"], uptime["cert_expires_at"]
        return f"up: HTTP {uptime['last_status']} in {latency:.1f} ms, certificate valid until {expires}"

    def alert_fires(self) -> str:
        domain = self.state["site"]["domain"]
        # The site's own rule with no ``for`` duration (the plan's default waits 120 s), set through
        # the alert-rule API as the customer's owner.
        rule = {"metric": "cpu_percent", "comparison": ">", "threshold": 80.0, "for_seconds": 0}
        self.edge.call("POST", f"/api/agi/sites/{self.state['site']['id']}/alert-rules", rule, expect=201)
        last_minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=60)
        self._post_cpu(99.0, last_minute + timedelta(seconds=20))
        [incident] = self._until("the alert firing", lambda: self._incidents("alert", open=True), nudge=True)
        self._mail(f"[firing] {domain}: {incident['title']}")
        return f"{incident['title']!r} firing, the owner mailed"

    def alert_resolves(self) -> str:
        domain = self.state["site"]["domain"]
        self._post_cpu(10.0, datetime.now(UTC))  # resolves once this minute is rolled up
        [incident] = self._until("the alert resolving", lambda: self._incidents("alert", open=False), nudge=True)
        self._mail(f"[resolved] {domain}: {incident['title']}")
        return "resolved, the owner mailed"

    def _status_page_says(self, word: str, *, says: bool = True) -> Callable[[], bool]:
        page_path = self.edge.call("GET", "/api/agi/dashboard")["status_page"]
        # The site's state as the page writes it (``<p class="state down">Down</p>``).
        shown = f'<p class="state {word.lower()}">{word}</p>'
        return lambda: (shown in EdgeClient(self.base_url).call("GET", page_path)) == says

    def site_goes_down(self) -> str:
        domain = self.state["site"]["domain"]
        self._flip(healthy=False)
        [incident] = self._until("a downtime incident", lambda: self._incidents("downtime", open=True))
        self._until("the status page showing it down", self._status_page_says("Down"))
        self._mail(f"[firing] {domain}: {incident['title']}")
        return f"{incident['title']!r}, on the status page, the owner mailed"

    def site_comes_back(self) -> str:
        self._flip(healthy=True)
        self._until("the downtime resolving", lambda: self._incidents("downtime", open=False))
        # Not down any more; "degraded" until a whole minute of good checks is rolled up.
        self._until("the status page no longer showing it down", self._status_page_says("Down", says=False))
        return "the incident resolved, the status page no longer says Down"

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        steps = [
            ("agi: sign up and log in", self.sign_up_and_log_in),
            ("agi: me", self.me),
            ("agi: add a site", self.add_site),
            ("agi: list sites", self.listed),
            ("agi: another customer cannot read it", self.other_customer_cannot_read),
            ("agi: the session stays in its product", self.session_stays_in_its_product),
            ("agi: post metrics with the site's ingest token", self.post_metrics),
            ("agi: see them in the dashboard", self.metrics_in_dashboard),
            ("agi: the public status page", self.status_page),
        ]
        if self.staff is not None:
            steps += [
                ("agi: staff activate the customer", self.staff_activate),
                ("agi: the site goes live through every onboarding step", self.goes_live),
            ]
            if self.staff.moto_url:
                steps.append(("agi: the welcome mail is in moto's outbox", self.welcome_mail))
            if self.staff.moto_url and self.staff.fake_site_health_url:
                steps += [
                    ("agi: the uptime check sees the live site up", self.checked_up),
                    ("agi: a threshold breach fires an alert", self.alert_fires),
                    ("agi: the alert resolves", self.alert_resolves),
                    ("agi: the site goes down (fake flipped): incident, status page, mail", self.site_goes_down),
                    ("agi: flipped back: up again, incident resolved", self.site_comes_back),
                ]
        return steps


def journey(base_url: str, say: Callable[[str], None], *, agi_staff: AgiStaff | None = None) -> None:
    steps = Journey(base_url).steps() + AgiJourney(base_url, agi_staff).steps()
    for number, (name, step) in enumerate(steps, start=1):
        try:
            detail = step()
        except (SmokeFailure, OSError, ValueError, KeyError) as exc:
            say(f"FAIL {number}/{len(steps)} {name}: {exc}")
            raise SmokeFailure(name) from exc
        say(f"ok   {number}/{len(steps)} {name}: {detail}")
