"""AGI Staffers fixtures: the services on the real (migrated) agistaffers database, emptied per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from psycopg.rows import dict_row

from devstack.fakes.cloudflare import FakeCloudflare
from devstack.fakes.portainer import FakePortainer
from functions.agistaffers.adapters.cloudflare_dns import CloudflareDns
from functions.agistaffers.adapters.portainer import PortainerStacks
from functions.agistaffers.adapters.site_probe import HttpsSiteProbe
from functions.agistaffers.services import partitions
from functions.agistaffers.services.accounts import AccountService, Actor
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.provisioning import Provisioning
from functions.agistaffers.services.sites import SiteService
from functions.platform.adapters.postgres import Database
from functions.platform.budget import RequestBudget
from functions.platform.composition import aws_client, redis_client
from functions.platform.config import Settings
from functions.platform.login_throttle import LoginThrottle
from shared.envelope import AGISTAFFERS

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def agistaffers_url(settings: Settings) -> str:
    return settings.database_url_for("agistaffers")


@pytest.fixture(scope="session")
def agi_db(agistaffers_url: str) -> Iterator[Database]:
    # Enough connections for the concurrency tests' threads to run at once.
    db = Database(agistaffers_url, name="agistaffers", max_size=16)
    yield db
    db.close()


@pytest.fixture(scope="session")
def metric_partitions(agistaffers_url: str) -> None:
    """Today's partitions and those around it, as the maintenance schedule keeps them (once: they
    survive the TRUNCATEs)."""
    with psycopg.connect(agistaffers_url, row_factory=dict_row) as conn:
        partitions.maintain(conn, datetime.now(UTC))


@pytest.fixture(scope="session")
def seeded_alert_rules(agistaffers_url: str) -> None:
    """The plans' default alert rules as the migrations seeded them, kept aside once per session."""
    with psycopg.connect(agistaffers_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_seeded_alert_rules AS SELECT * FROM alert_rules WHERE plan IS NOT NULL"
        )


@pytest.fixture(autouse=True)
def clean_agistaffers(agistaffers_url: str, redis_url: str, metric_partitions: None, seeded_alert_rules: None) -> None:
    # plans and the plans' default alert rules are seed data the migrations own: they stay (the
    # CASCADE empties alert_rules, whose site rules reference the sites, so the defaults are put back).
    with psycopg.connect(agistaffers_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE saga_steps, saga_runs, claims, invitations, users, customer_sites, customers, metric_samples, "
            "metric_rollups_1m, metric_rollups_1h, site_uptime_daily, rollup_watermarks, incidents, alerts, outbox, "
            "session_generations, alert_rules CASCADE"
        )
        conn.execute("INSERT INTO alert_rules SELECT * FROM test_seeded_alert_rules")
    client = redis.Redis.from_url(redis_url)
    for pattern in ("agistaffers:*", "monitoring:*"):
        for key in client.scan_iter(pattern):
            client.delete(key)


@pytest.fixture
def sql(agistaffers_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A direct connection, for arranging states the services do not offer (expired, disabled)."""
    with psycopg.connect(agistaffers_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def accounts(agi_db: Database, redis_url: str) -> AccountService:
    return AccountService(agi_db, throttle=LoginThrottle(redis.Redis.from_url(redis_url), AGISTAFFERS))


@pytest.fixture
def customers(agi_db: Database) -> CustomerService:
    return CustomerService(agi_db)


PORTAINER_KEY = "ptr_test_key"
CLOUDFLARE_TOKEN = "cf-test-token"
ZONE = "0123456789abcdef0123456789abcdef"
DNS_TARGET = "203.0.113.10"


@pytest.fixture(scope="session")
def fake_portainer() -> Iterator[FakePortainer]:
    fake = FakePortainer(PORTAINER_KEY)
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_cloudflare() -> Iterator[FakeCloudflare]:
    fake = FakeCloudflare(CLOUDFLARE_TOKEN, ZONE)
    yield fake
    fake.stop()


@pytest.fixture
def fakes(fake_portainer: FakePortainer, fake_cloudflare: FakeCloudflare) -> tuple[FakePortainer, FakeCloudflare]:
    """Both fakes, emptied and without failures."""
    for fake in (fake_portainer, fake_cloudflare):
        fake.faults.timeout = fake.faults.too_many = fake.faults.unavailable = fake.faults.phantom_create = 0.0
    fake_portainer.stacks.clear()
    fake_cloudflare.records.clear()
    return fake_portainer, fake_cloudflare


@pytest.fixture
def budget(settings: Settings) -> RequestBudget:
    client = redis_client(settings)
    for key in client.scan_iter("platform:budget:test*"):
        client.delete(key)
    return RequestBudget(client, "test-cloudflare", limit=1000, window_seconds=300)


@pytest.fixture
def provisioning(agi_db: Database, fakes: tuple[FakePortainer, FakeCloudflare], budget: RequestBudget) -> Provisioning:
    """The sagas on the real adapters against the fakes (the probe reaches the fake's ingress)."""
    portainer, cloudflare = fakes
    return Provisioning(
        agi_db,
        containers=PortainerStacks(url=portainer.url, api_key=PORTAINER_KEY, endpoint_id=1, timeout_seconds=0.5),
        dns=CloudflareDns(
            api_base=cloudflare.api_base, zone_id=ZONE, api_token=CLOUDFLARE_TOKEN, budget=budget, timeout_seconds=0.5
        ),
        probe=HttpsSiteProbe(
            connect_to=portainer.ingress_address,
            ca_file=portainer.ca_file,
            allow_hosts=("127.0.0.1",),
            timeout_seconds=2.0,
        ),
        dns_target=DNS_TARGET,
    )


@pytest.fixture
def sites(agi_db: Database, provisioning: Provisioning) -> SiteService:
    return SiteService(agi_db, provisioning)


@pytest.fixture
def staff(accounts: AccountService) -> Actor:
    user = accounts.ensure_staff("ops@agistaffers.example.com", "Ops", PASSWORD)
    return accounts.actor(user["id"])


class Tenants:
    """Signs up customers and makes actors for them."""

    def __init__(self, accounts: AccountService, customers: CustomerService, staff: Actor) -> None:
        self.accounts = accounts
        self.customers = customers
        self.staff = staff

    def owner(self, *, plan: str = "starter", status: str = "active", company: str | None = None) -> Actor:
        """The owner of a new customer in ``status`` (reached through the real transitions)."""
        email = f"owner-{secrets.token_hex(4)}@example.com"
        signed = self.accounts.sign_up(company or f"Company {email}", email, PASSWORD, plan)
        customer_id = signed["customer"]["id"]
        path = {"pending": [], "active": ["activate"], "suspended": ["activate", "suspend"]}
        path["cancelled"] = ["cancel"]
        for step in path[status]:
            if step in ("suspend", "cancel"):
                getattr(self.customers, step)(self.staff, customer_id, "test")
            else:
                getattr(self.customers, step)(self.staff, customer_id)
        if status == "cancelled":
            # A cancelled customer's users have no session; tests of it build the Actor by hand.
            return Actor(str(signed["user"]["id"]), "owner", str(customer_id), "cancelled", email)
        return self.accounts.actor(signed["user"]["id"])

    def member(self, owner: Actor, *, role: str = "member") -> Actor:
        email = f"{role}-{secrets.token_hex(4)}@example.com"
        token = self.accounts.invite(owner, email, role)["token"]
        user = self.accounts.accept_invitation(token, role.title(), PASSWORD)
        return self.accounts.actor(user["id"])

    def refresh(self, actor: Actor) -> Actor:
        return self.accounts.actor(actor.user_id)


@pytest.fixture
def tenants(accounts: AccountService, customers: CustomerService, staff: Actor) -> Tenants:
    return Tenants(accounts, customers, staff)


@pytest.fixture
def owner(tenants: Tenants) -> Actor:
    """A business-plan customer's owner (the monitoring and alerting tests' tenant)."""
    return tenants.owner(plan="business", company="Acme Hosting")


@pytest.fixture
def site(sites: SiteService, owner: Actor) -> dict[str, Any]:
    return sites.add(owner, "acme.example.com")


@pytest.fixture
def ses_sender(settings: Settings) -> str:
    """A sender address verified in moto's SES."""
    sender = "hello@agistaffers.example.com"
    aws_client(settings, "sesv2").create_email_identity(EmailIdentity=sender)
    return sender
