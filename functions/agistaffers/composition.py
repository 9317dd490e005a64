"""AGI Staffers' composition root: configuration in, concrete adapters and services out.

Nothing below this module reads the environment or constructs a client. It works against the
``agistaffers`` database only: SteppersLife's data is another business's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from functions.agistaffers.adapters.cloudflare_dns import CloudflareDns
from functions.agistaffers.adapters.portainer import PortainerStacks
from functions.agistaffers.adapters.ses_mail import SesMailer
from functions.agistaffers.adapters.site_probe import HttpsSiteProbe
from functions.agistaffers.adapters.webhooks import WebhookPoster
from functions.agistaffers.services import domain_events, partitions
from functions.agistaffers.services.accounts import AccountService
from functions.agistaffers.services.alert_rules import AlertRules
from functions.agistaffers.services.alerts import AlertEvaluator
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.dashboards import Dashboards
from functions.agistaffers.services.incidents import Incidents
from functions.agistaffers.services.metrics import MetricsIngest
from functions.agistaffers.services.plans import PlanService
from functions.agistaffers.services.provisioning import Provisioning
from functions.agistaffers.services.provisioning_messages import ProvisioningMessages
from functions.agistaffers.services.rollups import Rollups
from functions.agistaffers.services.sites import SiteService
from functions.agistaffers.services.staff_push import StaffPush
from functions.agistaffers.services.status import StatusPages
from functions.agistaffers.services.uptime import SiteChecker, UptimeMonitor, UptimePolicy
from functions.agistaffers.services.webhooks import Webhooks
from functions.platform import topology
from functions.platform.adapters.messaging import SqsPublisher
from functions.platform.budget import RequestBudget
from functions.platform.composition import Installed, ProductContainer, aws_client
from functions.platform.login_throttle import LoginThrottle
from functions.platform.outbound import GuardedHttpClient
from functions.platform.outbox_relay import OutboxRelay
from functions.platform.push import PushDelivery
from shared.envelope import AGISTAFFERS, Identity
from shared.net import WEB_PORTS

if TYPE_CHECKING:
    from functions.platform.outbound import GuardedHttpClient


@dataclass
class Container(ProductContainer):
    database_name = "agistaffers"

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.db, throttle=LoginThrottle(self.redis, AGISTAFFERS))

    def current_identity(self, identity: Identity) -> Identity:
        return self.accounts.current_identity(identity)

    @cached_property
    def plans(self) -> PlanService:
        return PlanService(self.db)

    @cached_property
    def customers(self) -> CustomerService:
        return CustomerService(self.db, self.outbox_relay)

    @cached_property
    def sites(self) -> SiteService:
        return SiteService(self.db, self.provisioning, self.outbox_relay)

    @cached_property
    def outbox_relay(self) -> OutboxRelay:
        # Every AGI Staffers event goes to its provisioning queue (none is another product's business).
        publisher = SqsPublisher(lambda: aws_client(self.settings, "sqs"), topology.AGI_PROVISIONING.name)
        return OutboxRelay(self.db, publisher)

    @cached_property
    def cloudflare_budget(self) -> RequestBudget:
        cloudflare = self.settings.cloudflare
        return RequestBudget(
            self.redis,
            RequestBudget.token_name("cloudflare", cloudflare.api_token or "unset"),
            limit=cloudflare.requests_per_5_minutes,
            window_seconds=300,
        )

    @cached_property
    def provisioning(self) -> Provisioning:
        settings = self.settings
        portainer, cloudflare, probe = settings.portainer, settings.cloudflare, settings.site_probe
        return Provisioning(
            self.db,
            containers=PortainerStacks(
                url=portainer.url,
                api_key=portainer.api_key,
                endpoint_id=portainer.endpoint_id,
                timeout_seconds=portainer.timeout_seconds,
            ),
            dns=CloudflareDns(
                api_base=cloudflare.api_base,
                zone_id=cloudflare.dns_zone_id,
                api_token=cloudflare.api_token,
                budget=self.cloudflare_budget,
            ),
            probe=HttpsSiteProbe(
                connect_to=probe.connect_to,
                ca_file=probe.ca_file,
                allow_hosts=probe.allow_hosts,
                timeout_seconds=probe.timeout_seconds,
            ),
            dns_target=cloudflare.dns_target,
            engine_options={"flush": self.outbox_relay},
        )

    @cached_property
    def provisioning_messages(self) -> ProvisioningMessages:
        mailer = SesMailer(
            lambda: aws_client(self.settings, "sesv2", config=SesMailer.client_config()), self.settings.mail.sender
        )
        channels = [("push", self.staff_push.push_alert), ("webhooks", self.webhooks.deliver_alert)]
        return ProvisioningMessages(self.db, self.claims, self.provisioning, mailer, alert_channels=channels)

    @cached_property
    def outbound(self) -> GuardedHttpClient:
        """Requests on customers' behalf (webhooks, push endpoints): https on 443 to public addresses;
        ``PUSH_ALLOW_HOSTS`` is the guard's development allow-list (empty in production)."""
        from functions.platform.outbound import GuardedHttpClient  # urllib3: only where something is sent

        return GuardedHttpClient(allow_hosts=self.settings.push.allow_hosts)

    @cached_property
    def webhooks(self) -> Webhooks:
        return Webhooks(self.db, WebhookPoster(self.outbound))

    @cached_property
    def staff_push(self) -> StaffPush:
        push = self.settings.push
        sender = None
        if push.vapid_private_key and push.vapid_subject:
            from functions.platform.adapters.webpush import WebPushSender  # cryptography: only where push is on

            sender = WebPushSender(private_key=push.vapid_private_key, subject=push.vapid_subject, client=self.outbound)
        delivery = PushDelivery(sender, check_endpoint=self.outbound.check, concurrency=push.concurrency)
        return StaffPush(self.db, delivery, check_endpoint=self.outbound.check)

    @cached_property
    def alert_rules(self) -> AlertRules:
        return AlertRules(self.db, domain_events.outbox, self.dashboards.invalidate)

    @cached_property
    def metrics(self) -> MetricsIngest:
        return MetricsIngest(self.db)

    @cached_property
    def dashboards(self) -> Dashboards:
        return Dashboards(self.db, self.cache, self.sites)

    @cached_property
    def status_pages(self) -> StatusPages:
        return StatusPages(self.db, self.cache)

    @cached_property
    def rollups(self) -> Rollups:
        return Rollups(self.db, self.dashboards.invalidate)

    @cached_property
    def alerts(self) -> AlertEvaluator:
        return AlertEvaluator(self.db, domain_events.outbox, self.dashboards.invalidate)

    @cached_property
    def incidents(self) -> Incidents:
        return Incidents(self.db)

    @cached_property
    def uptime(self) -> UptimeMonitor:
        uptime, probe = self.settings.uptime, self.settings.site_probe
        policy = UptimePolicy(
            failures_to_down=uptime.failures_to_down,
            successes_to_up=uptime.successes_to_up,
            concurrency=uptime.concurrency,
            run_seconds=uptime.run_seconds,
            timeout_seconds=uptime.timeout_seconds,
            interval_cap_seconds=uptime.max_interval_seconds,
        )
        # The one outbound guard; in dev the sites are served by the fake ingress that provisioning's
        # probe reaches, through the same explicit allow-list (empty in production).
        client = GuardedHttpClient(
            schemes=("https", "http"),  # a check starts at https://; a redirect may go to plain http
            ports=WEB_PORTS,
            allow_hosts=probe.allow_hosts,
            connect_to=probe.connect_to,
            ca_file=probe.ca_file,
        )
        checker = SiteChecker(client, timeout_seconds=policy.timeout_seconds, max_redirects=policy.max_redirects)
        return UptimeMonitor(
            self.db,
            domain_events.outbox,
            checker,
            store_samples=self.metrics.store,
            invalidate=self.dashboards.invalidate,
            flush=self.outbox_relay.flush_after_commit,
            policy=policy,
        )

    # The schedules' use cases, named once for the Lambda handlers and the dev stack.

    def maintain_partitions(self) -> dict[str, int]:
        now = datetime.now(UTC)
        with self.db.transaction() as conn:
            counts = partitions.maintain(conn, now)
        with self.db.outside_transaction() as conn:
            counts["indexed"] = len(partitions.index_closed_days(conn, now))
        return counts

    def roll_up(self) -> dict[str, Any]:
        return {run.name: run.buckets for run in self.rollups.run()}

    def evaluate_alerts(self) -> dict[str, int]:
        return self.alerts.evaluate()

    def check_uptime(self) -> dict[str, int]:
        return self.uptime.run()


_installed = Installed(Container)
configure = _installed.configure
container = _installed.get
