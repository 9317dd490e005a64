"""Uptime checks on the real database, through the real outbound guard, against real HTTPS servers on
127.0.0.1 (reached only through the test's explicit allow-list and ``connect_to``): the fake
Portainer's ingress flipped down and up (incident, one notification per change, the owner's mail,
the status page), two runs at once, certificate expiry from a real handshake, keywords, refused
redirects and private addresses, and the incident log's access rules per role and tenant."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from devstack.fakes.portainer import FakePortainer
from devstack.fakes.tls import ThrowAwayCa
from functions.agistaffers.adapters.ses_mail import SesMailer
from functions.agistaffers.composition import container
from functions.agistaffers.services import domain_events
from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.provisioning import Provisioning
from functions.agistaffers.services.provisioning_messages import ProvisioningMessages
from functions.agistaffers.services.sites import SiteService
from functions.agistaffers.services.uptime import CheckResult, SiteChecker, UptimeMonitor, UptimePolicy
from functions.platform.adapters.postgres import Database
from functions.platform.claims import Claims
from functions.platform.composition import aws_client
from functions.platform.config import Settings
from functions.platform.outbound import GuardedHttpClient
from functions.platform.queues import QueueMessage
from shared.net import WEB_PORTS
from tests.agistaffers.conftest import Tenants
from tests.agistaffers.test_api import identity
from tests.agistaffers.test_provisioning import Fakes, sent_mails

DOMAIN = "acme.example.com"


@pytest.fixture(autouse=True)
def _container(configured_agi_app: Any) -> None:
    """The monitor stores samples and invalidates through the installed container's services."""


def client_for(connect_to: str, ca_file: str, **options: Any) -> GuardedHttpClient:
    return GuardedHttpClient(
        schemes=("https", "http"),
        ports=WEB_PORTS,
        allow_hosts={"127.0.0.1"},
        connect_to=connect_to,
        ca_file=ca_file,
        **options,
    )


def monitor_for(agi_db: Database, client: GuardedHttpClient, **policy: Any) -> UptimeMonitor:
    rules = UptimePolicy(**{"failures_to_down": 2, "successes_to_up": 2, "timeout_seconds": 2.0, **policy})
    checker = SiteChecker(client, timeout_seconds=rules.timeout_seconds, max_redirects=rules.max_redirects)
    return UptimeMonitor(
        agi_db,
        domain_events.outbox,
        checker,
        store_samples=container().metrics.store,
        invalidate=container().dashboards.invalidate,
        flush=lambda: None,  # the test reads the outbox rows themselves
        policy=rules,
    )


def active_site(sites: SiteService, owner: Actor, sql: psycopg.Connection[Any], domain: str) -> dict[str, Any]:
    site = sites.add(owner, domain)
    sql.execute("UPDATE customer_sites SET status = 'active' WHERE id = %s", (site["id"],))
    return site


def serve_on_fake_ingress(portainer: FakePortainer, domain: str) -> None:
    """A running stack that declares ``domain``, as provisioning's stack step leaves it."""
    portainer.stacks[len(portainer.stacks) + 1000] = {
        "Id": 1000,
        "Name": domain.replace(".", "-"),
        "Status": 1,
        "StackFileContent": f'labels:\n  io.agistack.domain: "{domain}"\n',
    }


def flip(portainer: FakePortainer, healthy: bool) -> None:
    request = urllib.request.Request(
        f"{portainer.url}/_fake/health",
        data=json.dumps({"healthy": healthy}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["healthy"] is healthy


def run_due(monitor: UptimeMonitor, sql: psycopg.Connection[Any]) -> dict[str, int]:
    """One pass (budget 0) over every site, each made due now (a run gives a new site a phase of its
    interval, which may be later)."""
    sql.execute(
        "INSERT INTO uptime_checks (site_id) SELECT id FROM customer_sites "
        "ON CONFLICT (site_id) DO UPDATE SET next_due = now() - interval '1 second'"
    )
    return monitor.run(budget_seconds=0)


def test_a_flipped_site_goes_down_once_mails_its_owner_and_comes_back_up(
    tenants: Tenants,
    sites: SiteService,
    provisioning: Provisioning,
    fakes: Fakes,
    agi_db: Database,
    settings: Settings,
    ses_sender: str,
    sql: psycopg.Connection[Any],
) -> None:
    portainer, _ = fakes
    owner = tenants.owner(plan="business", company="Acme Hosting")
    site = active_site(sites, owner, sql, DOMAIN)
    serve_on_fake_ingress(portainer, DOMAIN)
    monitor = monitor_for(agi_db, client_for(portainer.ingress_address, portainer.ca_file))

    def state() -> tuple[str, int, int]:
        row = sql.execute(
            "SELECT state, consecutive_failures, consecutive_successes FROM uptime_checks WHERE site_id = %s",
            (site["id"],),
        ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]

    try:
        assert run_due(monitor, sql)["checked"] == 1
        assert state() == ("up", 0, 1)
        flip(portainer, healthy=False)
        assert run_due(monitor, sql)["down"] == 0 and state() == ("up", 1, 0)
        assert run_due(monitor, sql)["down"] == 1 and state() == ("down", 2, 0)
        assert run_due(monitor, sql)["down"] == 0 and state() == ("down", 3, 0)

        [(incident_id, kind, title, resolved)] = sql.execute(
            "SELECT id, kind, title, resolved_at FROM incidents WHERE site_id = %s", (site["id"],)
        ).fetchall()
        assert (kind, resolved) == ("downtime", None) and "HTTP 503" in title
        page = container().status_pages.page(owner_slug(sql, owner))
        assert page["sites"][0]["state"] == "down" and page["incidents"][0]["kind"] == "downtime"

        flip(portainer, healthy=True)
        assert run_due(monitor, sql)["up"] == 0 and state() == ("down", 0, 1)
        assert run_due(monitor, sql)["up"] == 1 and state() == ("up", 0, 2)
    finally:
        flip(portainer, healthy=True)
    assert sql.execute("SELECT resolved_at IS NOT NULL FROM incidents WHERE id = %s", (incident_id,)).fetchone() == (
        True,
    )
    samples = sql.execute(
        "SELECT value FROM metric_samples WHERE site_id = %s AND metric = 'up' ORDER BY at", (site["id"],)
    ).fetchall()
    assert [value for (value,) in samples] == [1, 0, 0, 0, 1, 1]

    notes = sql.execute("SELECT payload, dedup_key FROM outbox WHERE topic = 'monitoring.alert' ORDER BY id").fetchall()
    assert [key for _, key in notes] == [f"downtime:{incident_id}:firing", f"downtime:{incident_id}:resolved"]
    # The alerts' mail step tells the owner, once per change even when redelivered.
    mailer = SesMailer(lambda: aws_client(settings, "sesv2"), ses_sender)
    messages = ProvisioningMessages(agi_db, Claims(agi_db), provisioning, mailer)
    for payload, dedup_key in notes:
        body = json.dumps({"topic": "monitoring.alert", "dedup_key": dedup_key, "payload": payload})
        for delivery in (1, 2):
            messages.handle(QueueMessage(body, f"{dedup_key}{delivery}", delivery, {}, {}))
    subjects = sorted(mail["subject"] for mail in sent_mails(settings, owner.email))
    assert [subject.split("]")[0] for subject in subjects] == ["[firing", "[resolved"]
    assert all(DOMAIN in subject and "is down" in subject for subject in subjects)


def owner_slug(sql: psycopg.Connection[Any], owner: Actor) -> str:
    row = sql.execute("SELECT status_slug FROM customers WHERE id = %s", (owner.customer_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_two_runs_at_once_check_each_site_once_and_open_one_incident_each(
    tenants: Tenants, sites: SiteService, fakes: Fakes, agi_db: Database, sql: psycopg.Connection[Any]
) -> None:
    portainer, _ = fakes
    owner = tenants.owner(plan="business")
    for number in range(5):  # not on the ingress: every check fails (503, no container)
        active_site(sites, owner, sql, f"shop{number}.example.com")
    monitor = monitor_for(agi_db, client_for(portainer.ingress_address, portainer.ca_file), failures_to_down=1)
    sql.execute("INSERT INTO uptime_checks (site_id, next_due) SELECT id, now() - interval '1 s' FROM customer_sites")
    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []

    def run() -> None:
        barrier.wait()
        results.append(monitor.run(budget_seconds=0.2))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result["checked"] for result in results) == 5
    assert sum(result["down"] for result in results) == 5
    assert sql.execute("SELECT count(*) FROM incidents WHERE kind = 'downtime'").fetchone() == (5,)
    assert sql.execute("SELECT count(*) FROM outbox WHERE dedup_key LIKE 'downtime:%'").fetchone() == (5,)
    assert sql.execute("SELECT count(*) FROM metric_samples WHERE metric = 'up'").fetchone() == (5,)


# --- a TLS site of the test's own, with a certificate that expires when the test says --------------


class TlsSite:
    """HTTPS on 127.0.0.1 for ``DOMAIN`` with a certificate from a throw-away CA; ``answer`` decides
    each response (status, body, headers)."""

    def __init__(self, expires_in: dt.timedelta) -> None:
        ca = ThrowAwayCa("uptime test CA", valid_for=dt.timedelta(days=365))
        self.expires_at = (dt.datetime.now(dt.UTC) + expires_in).replace(microsecond=0)
        self.ca_file = ca.ca_file
        context = ca.server_context(DOMAIN, expires_at=self.expires_at)
        self.answer: tuple[int, bytes, dict[str, str]] = (200, b"<h1>Welcome to Acme</h1>", {})
        self.requests = 0
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests += 1
                status, body, headers = site.answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.address = f"127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def tls_site() -> Iterator[TlsSite]:
    site = TlsSite(dt.timedelta(days=10))
    yield site
    site.stop()


def checker_for(site: TlsSite) -> SiteChecker:
    return SiteChecker(client_for(site.address, site.ca_file), timeout_seconds=2.0, max_redirects=3)


def test_the_certificate_expiry_comes_from_the_handshake_and_warns_once_per_threshold(
    tls_site: TlsSite, tenants: Tenants, sites: SiteService, agi_db: Database, sql: psycopg.Connection[Any]
) -> None:
    site = active_site(sites, tenants.owner(plan="business"), sql, DOMAIN)
    monitor = monitor_for(agi_db, client_for(tls_site.address, tls_site.ca_file))
    assert run_due(monitor, sql)["certificate_warnings"] == 1  # 10 days left: under 14
    assert run_due(monitor, sql)["certificate_warnings"] == 0
    expires = sql.execute("SELECT cert_expires_at FROM uptime_checks WHERE site_id = %s", (site["id"],)).fetchone()
    assert expires == (tls_site.expires_at,)

    seen = CheckResult(True, 200, 5.0, None, tls_site.expires_at)
    two_days_before = tls_site.expires_at - dt.timedelta(days=2)
    assert monitor.record(site["id"], seen, two_days_before) == ["certificate_warnings"]  # under 3 days
    assert monitor.record(site["id"], seen, two_days_before) == []
    renewed = CheckResult(True, 200, 5.0, None, tls_site.expires_at + dt.timedelta(days=90))
    assert monitor.record(site["id"], renewed, two_days_before) == []
    warnings = sql.execute(
        "SELECT title, resolved_at IS NOT NULL FROM incidents WHERE kind = 'certificate' ORDER BY opened_at"
    ).fetchall()
    assert [(title.split(" expires ")[1][:15], done) for title, done in warnings] == [
        ("in under 14 day", True),
        ("in under 3 days", True),
    ]
    states = sql.execute(
        "SELECT payload->>'state' FROM outbox WHERE dedup_key LIKE 'certificate:%' ORDER BY id"
    ).fetchall()
    assert [state for (state,) in states] == ["firing", "firing", "resolved", "resolved"]


def test_status_latency_and_keyword(tls_site: TlsSite) -> None:
    checker = checker_for(tls_site)
    good = checker.check(DOMAIN, "Welcome to Acme")
    assert good.ok and good.status == 200 and good.latency_ms > 0 and good.certificate_expires_at is not None
    missing = checker.check(DOMAIN, "Checkout")
    assert not missing.ok and missing.status == 200 and "keyword" in (missing.error or "")
    tls_site.answer = (500, b"oops", {})
    broken = checker.check(DOMAIN)
    assert (broken.ok, broken.status, broken.error) == (False, 500, "HTTP 500")


REFUSED_REDIRECTS = [
    "https://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7/",
    "https://[::ffff:127.0.0.1]/",
    "https://127.0.0.2/",  # loopback (127.0.0.1 itself is this test's allow-listed fake)
    "https://0x7f.1/",
    "https://user@acme.example.com/",
]


def test_a_redirect_to_a_private_address_is_refused_before_connecting(tls_site: TlsSite) -> None:
    checker = checker_for(tls_site)
    for location in REFUSED_REDIRECTS:
        tls_site.requests = 0
        tls_site.answer = (302, b"", {"Location": location})
        result = checker.check(DOMAIN)
        assert not result.ok and (result.error or "").startswith("refused"), location
        assert tls_site.requests == 1  # the first hop only
    tls_site.answer = (302, b"", {"Location": "/moved"})
    assert not checker.check(DOMAIN).ok  # redirected to itself again and again: bounded, a failure
    assert tls_site.requests == 1 + 1 + 3


def test_a_site_whose_name_resolves_to_a_private_address_is_never_connected_to(tls_site: TlsSite) -> None:
    private = GuardedHttpClient(schemes=("https",), resolver=lambda host, port: ["10.0.0.7"], ca_file=tls_site.ca_file)
    result = SiteChecker(private, timeout_seconds=1.0, max_redirects=0).check(DOMAIN)
    assert not result.ok and "non-public" in (result.error or "") and tls_site.requests == 0


def test_connect_to_must_be_an_allow_listed_host() -> None:
    with pytest.raises(ValueError):
        GuardedHttpClient(connect_to="127.0.0.1:8443")
    with pytest.raises(ValueError):
        GuardedHttpClient(allow_hosts={"127.0.0.1"}, connect_to="127.0.0.2:8443")


# --- the incident log's API ------------------------------------------------------------------------


def test_incidents_are_listed_per_tenant_and_acknowledged_by_staff_only(
    agi_api: Any, tenants: Tenants, sites: SiteService, staff: Actor, sql: psycopg.Connection[Any]
) -> None:
    owner_a, owner_b = tenants.owner(), tenants.owner()
    member_a = tenants.member(owner_a)
    site_a = active_site(sites, owner_a, sql, "a.example.com")
    site_b = active_site(sites, owner_b, sql, "b.example.com")
    ids = {}
    for name, site in (("a", site_a), ("b", site_b)):
        row = sql.execute(
            "INSERT INTO incidents (site_id, kind, title, opened_at) VALUES (%s, 'downtime', %s, now()) RETURNING id",
            (site["id"], f"{name} is down"),
        ).fetchone()
        assert row is not None
        ids[name] = str(row[0])

    def call(method: str, path: str, who: Actor | None) -> Any:
        return agi_api.request(method, path, identity=identity(who) if who else None)

    for who in (owner_a, member_a):
        listed = call("GET", "/incidents", who)
        assert listed.status == 200 and [item["id"] for item in listed.json["items"]] == [ids["a"]]
        assert call("GET", f"/incidents/{ids['a']}", who).json["incident"]["title"] == "a is down"
        assert call("GET", f"/incidents/{ids['b']}", who).status == 404
        assert call("GET", f"/incidents?site_id={site_b['id']}", who).status == 404
        assert call("POST", f"/incidents/{ids['a']}/acknowledge", who).status == 403
    assert {item["id"] for item in call("GET", "/incidents", staff).json["items"]} == set(ids.values())
    assert call("GET", f"/incidents?site_id={site_b['id']}&open=true", staff).json["items"][0]["id"] == ids["b"]
    assert call("GET", "/incidents?kind=alert", staff).json["items"] == []
    assert call("GET", "/incidents", None).status == 401
    assert call("GET", f"/sites/{site_a['id']}/uptime", owner_a).json["uptime"]["state"] == "unknown"
    assert call("GET", f"/sites/{site_a['id']}/uptime", owner_b).status == 404
    assert call("GET", f"/sites/{site_a['id']}/uptime", staff).status == 200
    assert call("POST", f"/incidents/{ids['a']}/acknowledge", None).status == 401

    first = call("POST", f"/incidents/{ids['a']}/acknowledge", staff)
    assert first.status == 200 and first.json["incident"]["acknowledged_by"] == staff.user_id
    again = call("POST", f"/incidents/{ids['a']}/acknowledge", staff)
    assert again.json["incident"]["acknowledged_at"] == first.json["incident"]["acknowledged_at"]
    assert call("GET", f"/incidents/{ids['a']}", owner_a).json["incident"]["acknowledged_at"] is not None
    assert call("POST", "/incidents/00000000-0000-0000-0000-000000000000/acknowledge", staff).status == 404
    assert call("POST", "/incidents/not-a-uuid/acknowledge", staff).status == 404
    assert call("GET", "/incidents?kind=bogus", staff).status in (400, 422)
