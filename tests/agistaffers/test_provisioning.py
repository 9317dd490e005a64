"""The provisioning sagas against the fake Portainer and Cloudflare (real wire formats, real adapters),
the real database and Redis: a site goes live through every step; crashes and lost answers resume from
the records without duplicates; permanent failures compensate; staff retry and cancel; deleting a site
and a customer's suspension run through the same machinery; the welcome mail goes out once (moto)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from devstack.fakes.cloudflare import FakeCloudflare
from devstack.fakes.portainer import FakePortainer
from functions.agistaffers.adapters.ses_mail import SesMailer
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.provisioning import Provisioning, owner_mark, stack_name
from functions.agistaffers.services.provisioning_messages import ProvisioningMessages
from functions.agistaffers.services.sites import SiteService
from functions.platform.adapters.postgres import Database
from functions.platform.budget import RequestBudget
from functions.platform.claims import Claims
from functions.platform.composition import aws_client
from functions.platform.config import Settings
from functions.platform.queues import QueueMessage
from tests.agistaffers.conftest import Tenants

Fakes = tuple[FakePortainer, FakeCloudflare]


def drive(provisioning: Provisioning, *, rounds: int = 50) -> None:
    """What the queue and the schedule do, in one thread: advance every due run until none is due."""
    for _ in range(rounds):
        due = provisioning.engine.due_runs()
        if not due:
            return
        for run_id in due:
            provisioning.engine.advance(run_id)


def later(provisioning: Provisioning, seconds: float) -> None:
    """Let ``seconds`` pass for the engine (backoffs, leases), without sleeping."""
    base = provisioning.engine.now

    provisioning.engine.now = lambda: base() + timedelta(seconds=seconds)


def site_row(sql: psycopg.Connection[Any], site_id: str) -> dict[str, Any]:
    row = sql.execute(
        "SELECT status, status_reason, container_id FROM customer_sites WHERE id = %s", (site_id,)
    ).fetchone()
    assert row is not None
    return {"status": row[0], "reason": row[1], "container_id": row[2]}


def outbox_topics(sql: psycopg.Connection[Any], topic: str) -> list[dict[str, Any]]:
    return [row[0] for row in sql.execute("SELECT payload FROM outbox WHERE topic = %s", (topic,)).fetchall()]


def test_a_site_goes_live_through_every_step(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    site = sites.add(tenants.owner(), "shop.example.com")
    assert site["status"] == "provisioning"
    assert [s["state"] for s in provisioning.progress(str(site["id"]))["steps"]] == ["pending"] * 6
    drive(provisioning)
    progress = provisioning.progress(str(site["id"]))
    assert progress["status"] == "succeeded"
    assert [(s["name"], s["state"]) for s in progress["steps"]] == [
        (name, "succeeded") for name in ("reserve", "stack", "dns", "https", "activate", "welcome")
    ]
    row = site_row(sql, str(site["id"]))
    assert row["status"] == "active" and row["container_id"]
    assert [s["Name"] for s in portainer.stacks_by_owner()[owner_mark(str(site["id"]))]] == [
        stack_name(str(site["id"]))
    ]
    assert sorted((r["type"], r["name"]) for r in cloudflare.records.values()) == [
        ("A", "shop.example.com"),
        ("CNAME", "www.shop.example.com"),
    ]
    assert outbox_topics(sql, "site.welcome") == [{"site_id": str(site["id"])}]


def test_a_pending_customers_site_waits_for_activation(
    tenants: Tenants,
    sites: SiteService,
    provisioning: Provisioning,
    agi_db: Database,
    fakes: Fakes,
    sql: psycopg.Connection[Any],
) -> None:
    owner = tenants.owner(status="pending")
    site = sites.add(owner, "later.example.com")
    assert sql.execute("SELECT count(*) FROM saga_runs").fetchone() == (0,)
    CustomerService(agi_db).activate(tenants.staff, owner.customer_id)
    [event] = sql.execute(
        "SELECT topic, payload, dedup_key FROM outbox WHERE topic = 'customer.status_changed'"
    ).fetchall()
    assert provisioning.customer_status_changed(event[1]["customer_id"], "pending", "active", event[2]) == 1
    # The same event again (a redelivery) starts nothing.
    assert provisioning.customer_status_changed(event[1]["customer_id"], "pending", "active", event[2]) == 0
    drive(provisioning)
    assert site_row(sql, str(site["id"]))["status"] == "active"


def test_a_crashed_worker_is_resumed_after_its_lease(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    site = sites.add(tenants.owner(), "crash.example.com")
    [run_id] = provisioning.engine.due_runs()
    assert provisioning.engine._take(run_id) is not None  # a worker takes the run and dies
    assert provisioning.engine.advance(run_id) == "not due"  # its lease still holds
    later(provisioning, 61)
    drive(provisioning)
    assert site_row(sql, str(site["id"]))["status"] == "active"
    assert sql.execute("SELECT resumes FROM saga_runs WHERE id = %s", (run_id,)).fetchone() == (1,)


def test_lost_answers_and_phantom_creates_leave_one_stack_and_one_record_each(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    site = sites.add(tenants.owner(), "flaky.example.com")
    # Every create is done but answered too late: the retries must find and adopt what exists.
    portainer.faults.timeout = cloudflare.faults.timeout = 1.0
    portainer.faults.timeout_seconds = cloudflare.faults.timeout_seconds = 0.7
    for _ in range(3):
        drive(provisioning)
        later(provisioning, 600)
    portainer.faults.timeout = cloudflare.faults.timeout = 0.0
    drive(provisioning)
    steps = {s["name"]: s for s in provisioning.progress(str(site["id"]))["steps"]}
    assert steps["stack"]["attempts"] > 1
    assert len(portainer.stacks_by_owner()[owner_mark(str(site["id"]))]) == 1
    assert len(cloudflare.records) == 2
    assert site_row(sql, str(site["id"]))["status"] == "active"


def test_a_phantom_create_is_noticed_and_retried(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, _ = fakes
    portainer.faults.phantom_create = 1.0
    site = sites.add(tenants.owner(), "phantom.example.com")
    drive(provisioning)
    stack = {s["name"]: s for s in provisioning.progress(str(site["id"]))["steps"]}["stack"]
    assert stack["state"] == "pending" and "does not exist" in stack["last_error"]
    portainer.faults.phantom_create = 0.0
    later(provisioning, 600)
    drive(provisioning)
    assert site_row(sql, str(site["id"]))["status"] == "active"


def test_a_stack_of_that_name_that_is_not_ours_is_never_adopted(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    owner = tenants.owner()
    site = sites.add(owner, "clash.example.com")
    foreign = portainer.stacks.setdefault(
        99,
        {
            "Id": 99,
            "Name": stack_name(str(site["id"])),
            "Type": 2,
            "EndpointId": 1,
            "Status": 1,
            "Env": [],
            "StackFileContent": 'services: {x: {labels: {io.agistack.owner: "someone-else"}}}',
        },
    )
    drive(provisioning)
    progress = provisioning.progress(str(site["id"]))
    assert progress["status"] == "compensated"
    assert site_row(sql, str(site["id"])) == {"status": "failed", "reason": progress["reason"], "container_id": None}
    assert "not this site's" in progress["reason"]
    assert portainer.stacks[99] is foreign  # compensation does not remove what is not ours
    assert cloudflare.records == {}


def test_a_refused_domain_compensates_in_reverse_and_staff_can_retry(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    cloudflare.refused_names.add("www.refused.example.com")
    site = sites.add(tenants.owner(), "refused.example.com")
    drive(provisioning)
    progress = provisioning.progress(str(site["id"]))
    states = {s["name"]: s["state"] for s in progress["steps"]}
    assert progress["status"] == "compensated" and "DNS provider refused" in progress["reason"]
    assert states["stack"] == "compensated" and states["dns"] == "compensated" and states["https"] == "pending"
    assert portainer.stacks_by_owner() == {} and cloudflare.records == {}  # the apex record made first: gone
    assert site_row(sql, str(site["id"]))["status"] == "failed"

    cloudflare.refused_names.clear()
    assert provisioning.retry(tenants.staff, site["id"])["status"] == "running"
    assert site_row(sql, str(site["id"]))["status"] == "provisioning"
    drive(provisioning)
    assert site_row(sql, str(site["id"]))["status"] == "active"


def test_staff_cancel_removes_what_was_made(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    site = sites.add(tenants.owner(), "cancel.example.com")
    for _ in range(3):  # reserve, stack, dns
        provisioning.engine.advance(provisioning.engine.due_runs()[0])
    assert len(cloudflare.records) == 2
    assert provisioning.cancel(tenants.staff, site["id"])["status"] == "running"
    drive(provisioning)
    progress = provisioning.progress(str(site["id"]))
    assert (progress["status"], progress["reason"]) == ("compensated", "setup was cancelled by our staff")
    assert portainer.stacks_by_owner() == {} and cloudflare.records == {}
    assert site_row(sql, str(site["id"]))["status"] == "failed"


def test_deleting_a_site_tears_it_down_as_its_own_saga(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    owner = tenants.owner()
    site = sites.add(owner, "gone.example.com")
    drive(provisioning)
    sites.delete(owner, site["id"])
    drive(provisioning)
    kinds = sql.execute("SELECT kind, status FROM saga_runs ORDER BY created_at").fetchall()
    assert kinds == [("onboard", "succeeded"), ("teardown", "succeeded")]
    assert portainer.stacks_by_owner() == {} and cloudflare.records == {}


def test_deleting_mid_onboarding_cancels_it_then_tears_down(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, sql: psycopg.Connection[Any]
) -> None:
    portainer, cloudflare = fakes
    owner = tenants.owner()
    site = sites.add(owner, "midway.example.com")
    for _ in range(2):  # reserve, stack
        provisioning.engine.advance(provisioning.engine.due_runs()[0])
    sites.delete(owner, site["id"])
    drive(provisioning)
    assert sql.execute("SELECT kind, status FROM saga_runs ORDER BY created_at").fetchall() == [
        ("onboard", "compensated"),
        ("teardown", "succeeded"),
    ]
    assert site_row(sql, str(site["id"]))["status"] == "deleted"
    assert portainer.stacks_by_owner() == {} and cloudflare.records == {}


def test_suspending_and_reinstating_a_customer_stops_and_starts_its_containers(
    tenants: Tenants,
    sites: SiteService,
    provisioning: Provisioning,
    agi_db: Database,
    fakes: Fakes,
    sql: psycopg.Connection[Any],
) -> None:
    portainer, _ = fakes
    owner = tenants.owner()
    site = sites.add(owner, "pause.example.com")
    drive(provisioning)
    customers = CustomerService(agi_db)
    messages = ProvisioningMessages(agi_db, Claims(agi_db), provisioning, mailer=_NoMail())

    def deliver(topic: str) -> None:
        for payload, dedup_key in sql.execute(
            "SELECT payload, dedup_key FROM outbox WHERE topic = %s AND published_at IS NULL", (topic,)
        ).fetchall():
            body = json.dumps({"topic": topic, "dedup_key": dedup_key, "payload": payload})
            for _ in range(2):  # delivered twice: handled once
                messages.handle(QueueMessage(body, dedup_key, 1, {}, {}))
            sql.execute("UPDATE outbox SET published_at = now() WHERE dedup_key = %s", (dedup_key,))

    customers.suspend(tenants.staff, owner.customer_id, "unpaid")
    deliver("customer.status_changed")
    drive(provisioning)
    [stack] = portainer.stacks_by_owner()[owner_mark(str(site["id"]))]
    assert stack["Status"] == 2 and site_row(sql, str(site["id"]))["status"] == "suspended"
    customers.reinstate(tenants.staff, owner.customer_id)
    deliver("customer.status_changed")
    drive(provisioning)
    [stack] = portainer.stacks_by_owner()[owner_mark(str(site["id"]))]
    assert stack["Status"] == 1 and site_row(sql, str(site["id"]))["status"] == "active"
    assert sql.execute("SELECT kind FROM saga_runs ORDER BY created_at").fetchall() == [
        ("onboard",),
        ("suspend",),
        ("reinstate",),
    ]


def test_the_cloudflare_budget_defers_instead_of_tripping_the_lockout(
    tenants: Tenants,
    sites: SiteService,
    provisioning: Provisioning,
    fakes: Fakes,
    budget: RequestBudget,
    sql: psycopg.Connection[Any],
) -> None:
    _, cloudflare = fakes
    budget.limit = 2  # two calls per window for this test
    site = sites.add(tenants.owner(), "budget.example.com")
    drive(provisioning)
    dns = {s["name"]: s for s in provisioning.progress(str(site["id"]))["steps"]}["dns"]
    assert dns["state"] == "pending" and "budget" in dns["last_error"] and dns["attempts"] == 0
    budget.limit = 1000
    budget.block(0.001)
    later(provisioning, 1000)  # past the wait and its jitter
    drive(provisioning)
    assert site_row(sql, str(site["id"]))["status"] == "active"
    assert cloudflare.lockouts == 0


class _NoMail:
    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        raise AssertionError("no mail expected here")


def sent_mails(settings: Settings, to: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{settings.aws.endpoint_url}/moto-api/data.json") as response:
        data = json.load(response)
    return [m for m in data.get("ses", {}).get("Message", []) if to in json.dumps(m.get("destinations"))]


def test_the_welcome_mail_goes_out_once(
    tenants: Tenants,
    sites: SiteService,
    provisioning: Provisioning,
    agi_db: Database,
    fakes: Fakes,
    settings: Settings,
    ses_sender: str,
    sql: psycopg.Connection[Any],
) -> None:
    owner = tenants.owner()
    site = sites.add(owner, "mail.example.com")
    drive(provisioning)
    mailer = SesMailer(lambda: aws_client(settings, "sesv2"), ses_sender)
    messages = ProvisioningMessages(agi_db, Claims(agi_db), provisioning, mailer)
    [(payload, dedup_key)] = sql.execute(
        "SELECT payload, dedup_key FROM outbox WHERE topic = 'site.welcome'"
    ).fetchall()
    body = json.dumps({"topic": "site.welcome", "dedup_key": dedup_key, "payload": payload})
    for delivery in (1, 2, 3):
        messages.handle(QueueMessage(body, f"m{delivery}", delivery, {}, {}))
    [mail] = sent_mails(settings, owner.email)
    assert mail["subject"] == "mail.example.com is live" and mail["source"] == ses_sender
    assert site["id"]


def test_an_alert_that_fires_and_resolves_mails_the_customer_once_per_change(
    tenants: Tenants,
    sites: SiteService,
    provisioning: Provisioning,
    agi_db: Database,
    settings: Settings,
    ses_sender: str,
) -> None:
    owner = tenants.owner()
    site = sites.add(owner, "alerting.example.com")
    mailer = SesMailer(lambda: aws_client(settings, "sesv2"), ses_sender)
    messages = ProvisioningMessages(agi_db, Claims(agi_db), provisioning, mailer)
    incident = str(uuid.uuid4())
    for state in ("firing", "resolved"):
        payload = {"site_id": str(site["id"]), "incident_id": incident, "state": state, "title": "cpu_percent > 90",
                   "metric": "cpu_percent", "value": 97.5, "at": "2026-11-29T14:00:00+00:00"}  # fmt: skip
        body = json.dumps({"topic": "monitoring.alert", "dedup_key": f"alert:{incident}:{state}", "payload": payload})
        for delivery in (1, 2):  # a redelivery mails nobody twice
            messages.handle(QueueMessage(body, f"{state}{delivery}", delivery, {}, {}))
    subjects = sorted(mail["subject"] for mail in sent_mails(settings, owner.email))
    assert subjects == [
        "[firing] alerting.example.com: cpu_percent > 90",
        "[resolved] alerting.example.com: cpu_percent > 90",
    ]


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    import random

    from functions.agistaffers.services.saga import backoff

    rng = random.Random(1)
    delays = [backoff(n, base=2, cap=300, retry_after=None, rng=rng) for n in range(1, 10)]
    ceilings = [min(300, 2 * 2 ** (n - 1)) for n in range(1, 10)]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    assert backoff(1, base=2, cap=300, retry_after=30, rng=rng) >= 30


def test_onboarding_api_shows_progress_to_the_sites_users_and_lets_staff_steer(
    tenants: Tenants, sites: SiteService, provisioning: Provisioning, fakes: Fakes, agi_api: Any
) -> None:
    from tests.agistaffers.test_api import identity

    owner, other = tenants.owner(), tenants.owner()
    site = sites.add(owner, "api.example.com")
    path = f"/sites/{site['id']}/onboarding"
    shown = agi_api.request("GET", path, identity=identity(owner))
    assert shown.status == 200, shown.body
    onboarding = shown.json["onboarding"]
    assert onboarding["status"] == "running" and [s["name"] for s in onboarding["steps"]] == [
        "reserve",
        "stack",
        "dns",
        "https",
        "activate",
        "welcome",
    ]
    assert set(onboarding["steps"][0]) == {
        "name",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
        "started_at",
        "finished_at",
    }
    assert agi_api.request("GET", path, identity=identity(other)).status == 404
    assert agi_api.request("POST", f"{path}/cancel", identity=identity(owner)).status == 403
    retried = agi_api.request("POST", f"{path}/retry", identity=identity(tenants.staff))
    assert retried.status == 409 and retried.json["error"]["code"] == "invalid_transition"
    cancelled = agi_api.request("POST", f"{path}/cancel", identity=identity(tenants.staff))
    assert cancelled.status == 200 and cancelled.json["onboarding"]["status"] == "running"
    drive(provisioning)
    assert agi_api.request("GET", path, identity=identity(owner)).json["onboarding"]["status"] == "compensated"
    missing = agi_api.request("GET", "/sites/not-a-uuid/onboarding", identity=identity(owner))
    assert missing.status == 404 and missing.json["error"]["code"] == "site_not_found"


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.8", "169.254.169.254", "[::ffff:127.0.0.1]", "[64:ff9b::a00:1]"])
def test_the_https_check_never_reaches_a_non_public_address(host: str) -> None:
    from functions.agistaffers.adapters.site_probe import HttpsSiteProbe
    from functions.agistaffers.services.saga import Transient

    probe = HttpsSiteProbe(connect_to=None, ca_file=None, allow_hosts=(), timeout_seconds=1.0)
    with pytest.raises(Transient, match=r"non-public|not allowed|address"):
        probe.check(host)
