"""Provisioning: what the saga engine (services/saga.py) runs for a site, and the use cases around it.

Sagas:
- ``onboard``: reserve (site still wanted, plan limits, the container's size) → stack (Portainer) →
  dns (Cloudflare) → https (the site answers with a valid certificate; bounded) → activate (site
  ``active``) → welcome (an outbox row, so the mail goes out once per site). Undo: dns, then stack.
- ``teardown`` (a deleted site) and ``remove`` (a cancelled customer's site: stopped at once, removed
  after a grace period): the same undo functions as forward steps.
- ``suspend`` / ``reinstate``: stop / start the stack and mark the site.

Ports, implemented by the adapters (``functions/agistaffers/adapters``): each external call is
idempotent by a natural key, because the APIs have none: the stack is named from the site id and found
before it is created, and a stack or a DNS record is only adopted or removed when its owner mark (a
compose label, a record comment) names this site.
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

from psycopg import Connection

from functions.agistaffers.services import parse_uuid
from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.customers import require_staff
from functions.agistaffers.services.domain_events import WELCOME_TOPIC, outbox
from functions.agistaffers.services.saga import (
    Context,
    Permanent,
    Saga,
    SagaEngine,
    Step,
    Transient,
    Wait,
    step_rows,
)
from functions.platform.ports import Row, TransactionalDatabase
from shared.errors import Conflict, NotFound


class ContainerHost(Protocol):
    def ensure_stack(self, name: str, compose: str, owner: str) -> str:
        """The stack called ``name`` exists and runs ``compose``; returns its id. Adopts an existing
        stack of that name only if its owner label is ``owner``."""
        ...

    def remove_stack(self, name: str, owner: str) -> None:
        """No stack called ``name`` owned by ``owner`` remains (none is fine)."""
        ...

    def set_running(self, name: str, owner: str, running: bool) -> None:
        """Start or stop the stack; a missing one is fine (nothing to run)."""
        ...


class DnsProvider(Protocol):
    def ensure_record(self, record_type: str, name: str, content: str, owner: str) -> str:
        """The record (type, name) exists with ``content``; returns its id."""
        ...

    def remove_record(self, record_type: str, name: str, owner: str) -> None:
        """No record (type, name) owned by ``owner`` remains."""
        ...


class SiteProbe(Protocol):
    def check(self, domain: str) -> None:
        """Returns when https://domain/ answers with a valid certificate; ``Transient`` otherwise."""
        ...


def stack_name(site_id: str) -> str:
    return f"site-{site_id}"


def owner_mark(site_id: str) -> str:
    """What marks a stack (a compose label's value) or a DNS record (its comment) as this site's."""
    return f"agistack-site:{site_id}"


COMPOSE_TEMPLATE = """services:
  web:
    image: {image}
    restart: unless-stopped
    labels:
      io.agistack.owner: "{owner}"
      io.agistack.domain: "{domain}"
    environment:
      SITE_DOMAIN: "{domain}"
    deploy:
      resources:
        limits:
          cpus: "{cpus}"
          memory: {memory_mb}M
"""
SITE_IMAGE = "nginx:1.27-alpine"


def render_compose(site: Row) -> str:
    return COMPOSE_TEMPLATE.format(
        image=SITE_IMAGE,
        owner=owner_mark(str(site["id"])),
        domain=site["domain"],
        cpus=f"{float(site['site_cpus']):g}",
        memory_mb=int(site["site_memory_mb"]),
    )


def dns_records(domain: str, target: str) -> list[tuple[str, str, str]]:
    """(type, name, content): the apex points at ``target`` (an address, or a name: CNAME, which
    Cloudflare flattens at the apex), ``www`` at the apex."""
    try:
        address = ipaddress.ip_address(target)
        apex_type = "A" if address.version == 4 else "AAAA"
    except ValueError:
        apex_type = "CNAME"
    return [(apex_type, domain, target), ("CNAME", f"www.{domain}", domain)]


def welcome_mail(site: Row) -> tuple[str, str, str]:
    """(subject, text, html) of the mail a customer gets when a site is live."""
    domain, company = site["domain"], site["company_name"] or "there"
    subject = f"{domain} is live"
    text = (
        f"Hello {company},\n\nyour site https://{domain}/ is set up and answering over HTTPS.\n"
        "You can follow it in your AGI Staffers dashboard.\n\nAGI Staffers\n"
    )
    body = (
        f"<p>Hello {html.escape(company)},</p><p>your site "
        f'<a href="https://{html.escape(domain)}/">{html.escape(domain)}</a> is set up and answering over '
        "HTTPS.</p><p>You can follow it in your AGI Staffers dashboard.</p><p>AGI Staffers</p>"
    )
    return subject, text, body


def alert_mail(site: Row, alert: Mapping[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) of the mail a customer gets when an alert on one of its sites fires or
    resolves (``alert``: the ``monitoring.alert`` payload)."""
    domain, state = site["domain"], str(alert.get("state", ""))
    title = str(alert.get("title") or alert.get("metric") or "an alert")
    headline = "resolved" if state == "resolved" else "firing"
    subject = f"[{headline}] {domain}: {title}"
    value = alert.get("value")
    reading = f" (last value {value})" if value is not None else ""
    text = (
        f"{title} on {domain} is {headline}{reading} since {alert.get('at', '')}.\n\n"
        "See the incident in your AGI Staffers dashboard.\n\nAGI Staffers\n"
    )
    body = (
        f"<p>{html.escape(title)} on <strong>{html.escape(domain)}</strong> is {headline}"
        f"{html.escape(reading)} since {html.escape(str(alert.get('at', '')))}.</p>"
        "<p>See the incident in your AGI Staffers dashboard.</p><p>AGI Staffers</p>"
    )
    return subject, text, body


SITE_FOR_SAGA = (
    "SELECT s.id, s.customer_id, s.domain, s.status, s.container_id, c.status AS customer_status, c.email, "
    "c.company_name, c.plan, p.max_sites, p.site_cpus, p.site_memory_mb "
    "FROM customer_sites s JOIN customers c ON c.id = s.customer_id JOIN plans p ON p.name = c.plan WHERE s.id = %s"
)


def load_site(conn: Connection[Row], site_id: str) -> Row | None:
    return conn.execute(SITE_FOR_SAGA, (site_id,)).fetchone()


class Provisioning:
    """The sagas over the ports, and the use cases that start, retry, cancel and show them."""

    def __init__(
        self,
        db: TransactionalDatabase,
        *,
        containers: ContainerHost,
        dns: DnsProvider,
        probe: SiteProbe,
        dns_target: str | None,
        cancel_grace: timedelta = timedelta(days=7),
        https_attempts: int = 20,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._db = db
        self._containers = containers
        self._dns = dns
        self._probe = probe
        self._dns_target = dns_target
        self._grace = cancel_grace
        self.engine = SagaEngine(db, self._sagas(https_attempts), outbox, load_site, **dict(engine_options or {}))

    # --- the steps ------------------------------------------------------------------------------------

    def _reserve(self, conn: Connection[Row], ctx: Context) -> dict[str, Any]:
        site = conn.execute("SELECT status FROM customer_sites WHERE id = %s FOR UPDATE", (ctx.site["id"],)).fetchone()
        if site is None or site["status"] not in ("provisioning", "failed"):
            raise Permanent("the site was deleted before it was set up")
        if ctx.site["customer_status"] != "active":
            raise Permanent(f"the account is {ctx.site['customer_status']}")
        used = conn.execute(
            "SELECT count(*) AS n FROM customer_sites WHERE customer_id = %s AND status <> 'deleted'",
            (ctx.site["customer_id"],),
        ).fetchone()
        assert used is not None
        if used["n"] > ctx.site["max_sites"]:
            raise Permanent(f"the {ctx.site['plan']} plan allows {ctx.site['max_sites']} sites")
        conn.execute(
            "UPDATE customer_sites SET status = 'provisioning', status_reason = NULL, updated_at = now() WHERE id = %s",
            (ctx.site["id"],),
        )
        return {
            "stack_name": stack_name(str(ctx.site["id"])),
            "cpus": float(ctx.site["site_cpus"]),
            "memory_mb": int(ctx.site["site_memory_mb"]),
        }

    def _stack(self, ctx: Context) -> dict[str, Any]:
        site_id = str(ctx.site["id"])
        stack_id = self._containers.ensure_stack(stack_name(site_id), render_compose(ctx.site), owner_mark(site_id))
        return {"stack_id": stack_id}

    def _unstack(self, ctx: Context) -> None:
        site_id = str(ctx.site["id"])
        self._containers.remove_stack(stack_name(site_id), owner_mark(site_id))

    def _records(self, ctx: Context) -> list[tuple[str, str, str]]:
        if not self._dns_target:
            raise Transient("DNS is not configured (CLOUDFLARE_ZONE_ID, CLOUDFLARE_DNS_TARGET)")
        return dns_records(ctx.site["domain"], self._dns_target)

    def _dns_step(self, ctx: Context) -> dict[str, Any]:
        owner = owner_mark(str(ctx.site["id"]))
        ids = {
            f"{kind} {name}": self._dns.ensure_record(kind, name, content, owner)
            for kind, name, content in self._records(ctx)
        }
        return {"dns_records": ids}

    def _undns(self, ctx: Context) -> None:
        owner = owner_mark(str(ctx.site["id"]))
        for kind, name, _content in reversed(self._records(ctx)):
            self._dns.remove_record(kind, name, owner)

    def _https(self, ctx: Context) -> None:
        self._probe.check(ctx.site["domain"])

    def _activate(self, conn: Connection[Row], ctx: Context) -> None:
        updated = conn.execute(
            "UPDATE customer_sites SET status = 'active', status_reason = NULL, container_id = %s, updated_at = now() "
            "WHERE id = %s AND status = 'provisioning'",
            (ctx.external.get("stack_id"), ctx.site["id"]),
        )
        if updated.rowcount != 1:
            raise Permanent("the site was deleted before it was set up")

    def _welcome(self, conn: Connection[Row], ctx: Context) -> None:
        site_id = str(ctx.site["id"])
        outbox.enqueue(conn, WELCOME_TOPIC, {"site_id": site_id}, dedup_key=f"welcome:{site_id}")

    def _grace_step(self, ctx: Context) -> None:
        remaining = (ctx.created_at + self._grace - self.engine.now()).total_seconds()
        if remaining > 0:
            raise Wait(remaining, "the cancelled account's grace period")

    def _mark(self, to: str, only_from: tuple[str, ...], reason: str | None) -> Any:
        def commit(conn: Connection[Row], ctx: Context) -> None:
            deleted = ", deleted_at = now()" if to == "deleted" else ""
            container = ", container_id = NULL" if to == "deleted" else ""
            conn.execute(
                f"UPDATE customer_sites SET status = %s, status_reason = %s, updated_at = now(){deleted}{container} "
                "WHERE id = %s AND status = ANY(%s)",
                (to, reason, ctx.site["id"], list(only_from)),
            )

        return commit

    def _running(self, running: bool) -> Any:
        def run(ctx: Context) -> None:
            site_id = str(ctx.site["id"])
            self._containers.set_running(stack_name(site_id), owner_mark(site_id), running)

        return run

    def _sagas(self, https_attempts: int) -> dict[str, Saga]:
        https_bound = "the site did not answer over HTTPS with a valid certificate in time"
        onboard = Saga(
            "onboard",
            (
                Step("reserve", commit=self._reserve),
                Step("stack", run=self._stack, undo=self._unstack),
                Step("dns", run=self._dns_step, undo=self._undns),
                Step(
                    "https",
                    run=self._https,
                    max_attempts=https_attempts,
                    exhausted=https_bound,
                    backoff_base_seconds=5.0,
                    backoff_cap_seconds=120.0,
                ),
                Step("activate", commit=self._activate),
                Step("welcome", commit=self._welcome),
            ),
            self._finish_onboard,
        )
        teardown = (Step("remove_dns", run=self._undns), Step("remove_stack", run=self._unstack))
        return {
            "onboard": onboard,
            "teardown": Saga("teardown", teardown, self._finish_quietly),
            "remove": Saga(
                "remove",
                (
                    # A cancelled account's sites stop serving at once; their data stays for the grace
                    # period (a mistaken cancellation can still be recovered by staff), then goes.
                    Step("stop", run=self._running(False)),
                    Step(
                        "mark_stopped",
                        commit=self._mark("suspended", ("active",), "the account is cancelled"),
                    ),
                    Step("grace", run=self._grace_step),
                    *teardown,
                    Step(
                        "mark_deleted",
                        commit=self._mark("deleted", ("provisioning", "active", "suspended", "failed"), None),
                    ),
                ),
                self._finish_quietly,
            ),
            "suspend": Saga(
                "suspend",
                (
                    Step("stop", run=self._running(False)),
                    Step("mark_suspended", commit=self._mark("suspended", ("active",), "the account is suspended")),
                ),
                self._finish_quietly,
            ),
            "reinstate": Saga(
                "reinstate",
                (
                    Step("start", run=self._running(True)),
                    Step("mark_active", commit=self._mark("active", ("suspended",), None)),
                ),
                self._finish_quietly,
            ),
        }

    @staticmethod
    def _finish_onboard(conn: Connection[Row], ctx: Context, status: str, reason: str | None) -> None:
        if status == "compensated":
            conn.execute(
                "UPDATE customer_sites SET status = 'failed', status_reason = %s, container_id = NULL, "
                "updated_at = now() WHERE id = %s AND status <> 'deleted'",
                ((reason or "setup was cancelled")[:1000], ctx.site["id"]),
            )

    @staticmethod
    def _finish_quietly(conn: Connection[Row], ctx: Context, status: str, reason: str | None) -> None:
        """Teardown, removal, suspension and reinstatement say what they did through the site's status
        (their last step); a compensated one changed nothing worth saying."""

    # --- use cases --------------------------------------------------------------------------------------

    def start_onboarding(self, conn: Connection[Row], site_id: str, trigger: str) -> str | None:
        return self.engine.start(conn, site_id, "onboard", trigger)

    def tear_down(self, conn: Connection[Row], site_id: str) -> None:
        """A deleted site: stop whatever run works on it (it compensates) and queue the teardown."""
        active = conn.execute(
            "SELECT id FROM saga_runs WHERE site_id = %s AND status IN ('queued', 'running', 'failed') "
            "AND kind = 'onboard'",
            (site_id,),
        ).fetchall()
        for row in active:
            self.engine.request_cancel(conn, str(row["id"]), "the site was deleted")
        self.engine.start(conn, site_id, "teardown", f"teardown:{site_id}")

    def customer_status_changed(self, customer_id: str, was: str, now: str, trigger: str) -> int:
        """Suspension stops the customer's containers, reinstatement starts them, activation onboards
        the sites added while pending, cancellation removes them after the grace period. Returns how
        many runs were started (a repeated ``trigger`` starts none)."""
        kind, statuses = {
            ("suspended",): ("suspend", ("active", "provisioning")),
            ("active", "suspended"): ("reinstate", ("suspended", "active", "provisioning")),
            ("active", "pending"): ("onboard", ("provisioning",)),
            ("cancelled",): ("remove", ("active", "provisioning", "suspended", "failed")),
        }.get((now,) if now in ("suspended", "cancelled") else (now, was), (None, ()))
        if kind is None:
            return 0
        started = 0
        with self._db.transaction() as conn:
            sites = conn.execute(
                "SELECT id FROM customer_sites WHERE customer_id = %s AND status = ANY(%s) ORDER BY id FOR UPDATE",
                (customer_id, list(statuses)),
            ).fetchall()
            for site in sites:
                if self.engine.start(conn, str(site["id"]), kind, f"{trigger}:{site['id']}") is not None:
                    started += 1
        return started

    def _run_of(self, conn: Connection[Row], site_id: str) -> Row:
        run = conn.execute(
            "SELECT * FROM saga_runs WHERE site_id = %s AND kind = 'onboard' ORDER BY created_at DESC LIMIT 1",
            (site_id,),
        ).fetchone()
        if run is None:
            raise NotFound("this site has no onboarding run", code="onboarding_not_found")
        return run

    def progress(self, site_id: str) -> dict[str, Any]:
        """The site's latest onboarding run and its steps (the caller checked the site is visible)."""
        with self._db.transaction() as conn:
            run = self._run_of(conn, site_id)
            steps = step_rows(conn, run["id"])
        return {
            "id": run["id"],
            "status": run["status"],
            "reason": run["reason"],
            "created_at": run["created_at"],
            "updated_at": run["updated_at"],
            "finished_at": run["finished_at"],
            "next_attempt_at": run["next_attempt_at"] if run["status"] in ("running", "compensating") else None,
            "steps": [
                {
                    key: step[key]
                    for key in (
                        "name",
                        "state",
                        "attempts",
                        "next_attempt_at",
                        "last_error",
                        "started_at",
                        "finished_at",
                    )
                }
                for step in steps
            ],
        }

    def retry(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        """Staff resume a failed (or compensated) onboarding from the step that failed."""
        require_staff(actor)
        parsed = _site_id(site_id)
        with self._db.transaction() as conn:
            run = self._run_of(conn, parsed)
            site = conn.execute("SELECT status FROM customer_sites WHERE id = %s FOR UPDATE", (parsed,)).fetchone()
            if run["status"] not in ("failed", "compensated") or site is None or site["status"] == "deleted":
                raise Conflict(
                    f"a {run['status']} onboarding cannot be retried",
                    code="invalid_transition",
                    details={"status": run["status"]},
                )
            other = conn.execute(
                "SELECT 1 FROM saga_runs WHERE site_id = %s AND id <> %s "
                "AND status IN ('running', 'compensating', 'failed')",
                (parsed, run["id"]),
            ).fetchone()
            if other is not None:
                raise Conflict("another run is working on this site", code="run_in_progress")
            conn.execute(
                "UPDATE customer_sites SET status = 'provisioning', status_reason = NULL, updated_at = now() "
                "WHERE id = %s",
                (parsed,),
            )
            self.engine.retry(conn, str(run["id"]))
        self.engine.flush_outbox()
        return self.progress(parsed)

    def cancel(self, actor: Actor, site_id: Any) -> dict[str, Any]:
        """Staff stop an onboarding; what it created is removed and the site is marked failed."""
        require_staff(actor)
        parsed = _site_id(site_id)
        with self._db.transaction() as conn:
            run = self._run_of(conn, parsed)
            if run["status"] not in ("queued", "running", "failed"):
                raise Conflict(
                    f"a {run['status']} onboarding cannot be cancelled",
                    code="invalid_transition",
                    details={"status": run["status"]},
                )
            self.engine.request_cancel(conn, str(run["id"]), "setup was cancelled by our staff")
        self.engine.flush_outbox()
        return self.progress(parsed)


def _site_id(value: Any) -> str:
    parsed = parse_uuid(value)
    if parsed is None:
        raise NotFound("no such site", code="site_not_found")
    return str(parsed)
