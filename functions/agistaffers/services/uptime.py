"""Uptime checks: every active site is fetched over HTTPS at its plan's interval (status, latency,
certificate expiry, optional keyword); N consecutive failures make it down (a downtime incident and
an alert notification), M consecutive successes make it up again (the incident resolves, notified
too). Every check is also an ``up`` sample (0/1) and a ``response_time_ms`` sample through the
ingest's COPY path, so the rollups give the status page its uptime %.

Outbound safety: the check goes through the platform's one outbound guard (``GuardedHttpClient``):
the name is resolved once, every address must be public, the connection goes to the checked address,
and each redirect hop (at most ``max_redirects``) is checked anew. A site whose name resolves to a
private address is simply a failing check.

Scheduling, for 10,000 sites at a 1-minute interval: a run claims the due rows of ``uptime_checks``
(``FOR UPDATE SKIP LOCKED``, moving ``next_due`` on in the same statement), checks them on a bounded
thread pool, and keeps claiming what falls due until its time budget is spent, so the checks spread
over the minute as the sites' phases do (a site's first ``next_due`` is offset by a hash of its id).

Failure model, and why:
- Two runs at once (an overlapping schedule, a retry): a row is claimed by one of them, and its
  ``next_due`` moves past the claim, so a site is never checked twice for one slot.
- A result is recorded under the row's lock in one transaction with its incident and outbox rows;
  one open downtime per site is also a unique index, and the outbox's ``dedup_key``
  (``downtime:{incident}:{state}``) makes each notification happen once per state change.
- A run that dies mid-way loses only its in-flight checks: their sites are checked at their next slot.
- Certificate warnings (under 14 and under 3 days) happen once each per certificate: the tightest
  warning raised is kept with the certificate's expiry; a renewed certificate resets it and resolves
  the warnings' incidents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from psycopg import Connection
from psycopg.types.json import Jsonb

from functions.agistaffers.services.domain_events import ALERT_TOPIC
from functions.agistaffers.services.metrics import SampleRow
from functions.platform import jsonable
from functions.platform.outbound import OutboundUnavailable
from functions.platform.outbound import Response as HttpResponse
from functions.platform.outbox import Outbox
from functions.platform.ports import Row, TransactionalDatabase
from shared.net import UnsafeUrl

CERT_WARNING_DAYS = (14, 3)
USER_AGENT = "AGI-Staffers-Uptime/1.0"
# How often a run looks for sites that became active since it started.
ENSURE_EVERY_SECONDS = 5.0
_SAMPLE_LABELS = Jsonb({"instance": "uptime-check"})

# Every active site has a row; a new one falls due at a point of its interval fixed by its id.
_ENSURE_ROWS = """
INSERT INTO uptime_checks (site_id, next_due)
SELECT s.id, %(now)s + make_interval(secs => abs(hashtext(s.id::text)) %% least(p.min_check_interval_seconds, %(cap)s))
FROM customer_sites s JOIN customers c ON c.id = s.customer_id JOIN plans p ON p.name = c.plan
WHERE s.status = 'active'
ON CONFLICT (site_id) DO NOTHING
"""

# Claim the due rows and move each one's next slot on by its interval (keeping its phase, unless the
# schedule fell a whole interval behind).
_CLAIM = """
WITH due AS (
    SELECT u.site_id FROM uptime_checks u JOIN customer_sites s ON s.id = u.site_id AND s.status = 'active'
    WHERE u.next_due <= %(due_by)s ORDER BY u.next_due LIMIT %(limit)s FOR UPDATE OF u SKIP LOCKED
), plan AS (
    SELECT due.site_id, s.domain, make_interval(secs => least(p.min_check_interval_seconds, %(cap)s)) AS every
    FROM due JOIN customer_sites s ON s.id = due.site_id JOIN customers c ON c.id = s.customer_id
    JOIN plans p ON p.name = c.plan
)
UPDATE uptime_checks u
SET next_due = CASE WHEN u.next_due + plan.every > %(now)s THEN u.next_due + plan.every ELSE %(now)s + plan.every END
FROM plan WHERE u.site_id = plan.site_id
RETURNING u.site_id, plan.domain, u.keyword
"""

_LOCK_STATE = """
SELECT u.*, s.domain FROM uptime_checks u JOIN customer_sites s ON s.id = u.site_id
WHERE u.site_id = %s FOR UPDATE OF u
"""


@dataclass(frozen=True)
class UptimePolicy:
    failures_to_down: int = 3
    successes_to_up: int = 2
    concurrency: int = 64  # checks in flight at once per run (benchmarks/uptime_checks.py)
    run_seconds: float = 60.0  # a run's budget: it claims no new check after this (the next run starts)
    timeout_seconds: float = 10.0  # one check, redirects included per hop
    max_redirects: int = 3
    # The longest interval between two checks of a site (its plan's interval when shorter); the dev
    # stack lowers it so that a flip shows within seconds.
    interval_cap_seconds: int = 86400


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    status: int | None
    latency_ms: float
    error: str | None
    certificate_expires_at: datetime | None


class Outcome(NamedTuple):
    result: CheckResult
    changes: list[str]  # "down", "up", "certificate_warnings"
    samples: list[SampleRow]


class HttpClient(Protocol):
    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
        max_redirects: int = 0,
    ) -> HttpResponse: ...


class SiteChecker:
    """One check of one site: ``GET https://{domain}/`` through the outbound guard."""

    def __init__(self, client: HttpClient, *, timeout_seconds: float, max_redirects: int) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._max_redirects = max_redirects

    def check(self, domain: str, keyword: str | None = None) -> CheckResult:
        started = time.perf_counter()

        def failed(error: str, status: int | None = None, expires: datetime | None = None) -> CheckResult:
            return CheckResult(False, status, (time.perf_counter() - started) * 1000, error[:300], expires)

        try:
            response = self._client.request(
                "GET",
                f"https://{domain}/",
                headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*"},
                timeout=self._timeout,
                max_redirects=self._max_redirects,
            )
        except UnsafeUrl as exc:
            return failed(f"refused: {exc}")
        except OutboundUnavailable as exc:
            return failed(f"unreachable: {exc}")
        expires = response.certificate_expires_at
        if not 200 <= response.status < 300:
            return failed(f"HTTP {response.status}", response.status, expires)
        if keyword and keyword not in response.text:
            return failed(f"keyword {keyword!r} not found", response.status, expires)
        return CheckResult(True, response.status, (time.perf_counter() - started) * 1000, None, expires)


class UptimeMonitor:
    def __init__(
        self,
        db: TransactionalDatabase,
        outbox: Outbox,
        checker: SiteChecker,
        *,
        store_samples: Callable[[list[SampleRow]], None],
        invalidate: Callable[[], None],
        flush: Callable[[], None],
        policy: UptimePolicy,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._checker = checker
        self._store_samples = store_samples
        self._invalidate = invalidate  # told when a site went down or up (status pages show it)
        self._flush = flush  # sends the committed notifications now rather than at the relay's next tick
        self.policy = policy

    def run(self, *, budget_seconds: float | None = None) -> dict[str, int]:
        """Check what is due, then what falls due until the budget is spent (0: one pass); returns counts."""
        budget = self.policy.run_seconds if budget_seconds is None else budget_seconds
        counts = {"checked": 0, "failed": 0, "down": 0, "up": 0, "certificate_warnings": 0}
        self._ensure_rows()
        started = datetime.now(UTC)
        deadline = time.monotonic() + budget
        next_ensure = time.monotonic() + ENSURE_EVERY_SECONDS
        in_flight: set[Future[Outcome]] = set()
        first_pass = True
        with ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="uptime") as pool:
            while True:
                if time.monotonic() >= next_ensure:  # a site that went live mid-run waits seconds, not a run
                    self._ensure_rows()
                    next_ensure = time.monotonic() + ENSURE_EVERY_SECONDS
                free = self.policy.concurrency - len(in_flight)
                # Claim in batches (a quarter of the pool at least), not one query per finished check.
                worth_claiming = free >= max(1, self.policy.concurrency // 4) or not in_flight
                if worth_claiming and (first_pass or time.monotonic() < deadline):
                    # The first pass takes everything due when the run started, a pool-full at a time
                    # (whatever the budget; a claimed site's next slot is later, so it ends); then
                    # what falls due, until the budget is spent.
                    claimed = self._claim(free, started if first_pass else datetime.now(UTC))
                    first_pass = first_pass and len(claimed) == free
                    for site in claimed:
                        in_flight.add(pool.submit(self._check_and_record, site))
                if not in_flight and not first_pass and time.monotonic() >= deadline:
                    break
                done, in_flight = wait(in_flight, timeout=0.25, return_when=FIRST_COMPLETED)
                if not done and not in_flight:
                    time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
                samples: list[SampleRow] = []
                changed = False
                for future in done:
                    outcome = future.result()
                    changed = changed or bool(outcome.changes)
                    counts["checked"] += 1
                    counts["failed"] += not outcome.result.ok
                    for change in outcome.changes:
                        counts[change] += 1
                    samples.extend(outcome.samples)
                if samples:  # one COPY for the checks that finished together
                    self._store_samples(samples)
                if changed:
                    self._invalidate()
                    self._flush()
        return counts

    def state(self, site_id: Any) -> dict[str, Any]:
        """A site's check state as its users see it (the caller has checked they may see the site)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT state, consecutive_failures, consecutive_successes, next_due, last_checked_at, last_status, "
                "last_latency_ms, last_error, cert_expires_at, keyword, incident_id "
                "FROM uptime_checks WHERE site_id = %s",
                (site_id,),
            ).fetchone()
        result: dict[str, Any] = jsonable.json_ready(row or {"state": "unknown", "last_checked_at": None})
        return result

    def _ensure_rows(self) -> None:
        with self._db.transaction() as conn:
            conn.execute(_ENSURE_ROWS, {"now": datetime.now(UTC), "cap": self.policy.interval_cap_seconds})

    def _claim(self, limit: int, due_by: datetime) -> list[Row]:
        with self._db.transaction() as conn:
            return conn.execute(
                _CLAIM,
                {"due_by": due_by, "now": datetime.now(UTC), "limit": limit, "cap": self.policy.interval_cap_seconds},
            ).fetchall()

    def _check_and_record(self, site: Row) -> Outcome:
        result = self._checker.check(site["domain"], site["keyword"])
        now = datetime.now(UTC)
        return Outcome(result, self.record(site["site_id"], result, now), _samples(site["site_id"], result, now))

    def record(self, site_id: Any, result: CheckResult, now: datetime | None = None) -> list[str]:
        """Fold one result into the site's (claimed) state; returns the changes it made ("down", "up", ...)."""
        moment = now or datetime.now(UTC)
        changes: list[str] = []
        with self._db.transaction() as conn:
            state = conn.execute(_LOCK_STATE, (site_id,)).fetchone()
            if state is None:  # the site was deleted (its row with it) while it was being checked
                return changes
            failures = 0 if result.ok else state["consecutive_failures"] + 1
            successes = state["consecutive_successes"] + 1 if result.ok else 0
            new_state, incident_id = state["state"], state["incident_id"]
            if (
                result.ok
                and state["state"] != "up"
                and (state["state"] == "unknown" or successes >= self.policy.successes_to_up)
            ):
                new_state = "up"
                if state["state"] == "down":
                    self._site_up(conn, state, moment)
                    incident_id = None
                    changes.append("up")
            elif not result.ok and state["state"] != "down" and failures >= self.policy.failures_to_down:
                new_state = "down"
                incident_id = self._site_down(conn, state, result, moment)
                changes.append("down")
            warned = self._certificate(conn, state, result, moment, changes)
            conn.execute(
                "UPDATE uptime_checks SET state = %s, consecutive_failures = %s, consecutive_successes = %s, "
                "last_checked_at = %s, last_status = %s, last_latency_ms = %s, last_error = %s, "
                "cert_expires_at = coalesce(%s, cert_expires_at), cert_warned_days = %s, incident_id = %s "
                "WHERE site_id = %s",
                (
                    new_state,
                    failures,
                    successes,
                    moment,
                    result.status,
                    result.latency_ms,
                    result.error,
                    result.certificate_expires_at,
                    warned,
                    incident_id,
                    site_id,
                ),
            )
        return changes

    def _site_down(self, conn: Connection[Row], state: Row, result: CheckResult, now: datetime) -> Any:
        title = f"{state['domain']} is down ({result.error})"[:200]
        incident = conn.execute(
            "INSERT INTO incidents (site_id, kind, title, opened_at) VALUES (%s, 'downtime', %s, %s) "
            "ON CONFLICT (site_id) WHERE kind = 'downtime' AND resolved_at IS NULL DO NOTHING RETURNING id",
            (state["site_id"], title, now),
        ).fetchone()
        if incident is None:  # already open (state lost, e.g. the row was recreated): keep that one
            incident = conn.execute(
                "SELECT id FROM incidents WHERE site_id = %s AND kind = 'downtime' AND resolved_at IS NULL",
                (state["site_id"],),
            ).fetchone()
            assert incident is not None
            return incident["id"]
        self._notify(
            conn, state, incident["id"], kind="downtime", change="firing", title=title, now=now, status=result.status
        )
        return incident["id"]

    def _site_up(self, conn: Connection[Row], state: Row, now: datetime) -> None:
        self._resolve_open(conn, state, "downtime", now)

    def _resolve_open(self, conn: Connection[Row], state: Row, kind: str, now: datetime) -> None:
        """Resolve the site's open incidents of ``kind`` and announce each resolution."""
        for incident in conn.execute(
            "UPDATE incidents SET resolved_at = %s WHERE site_id = %s AND kind = %s AND resolved_at IS NULL "
            "RETURNING id, title",
            (now, state["site_id"], kind),
        ).fetchall():
            self._notify(
                conn,
                state,
                incident["id"],
                kind=kind,
                change="resolved",
                title=incident["title"],
                now=now,
                status=None,
            )

    def _certificate(
        self, conn: Connection[Row], state: Row, result: CheckResult, now: datetime, changes: list[str]
    ) -> int | None:
        """Warn once per threshold per certificate; returns the tightest warning raised for it."""
        expires = result.certificate_expires_at
        warned: int | None = state["cert_warned_days"]
        if expires is None:
            return warned
        if state["cert_expires_at"] is not None and expires != state["cert_expires_at"]:
            warned = None  # a new certificate: its warnings start afresh, the old one's are over
            self._resolve_open(conn, state, "certificate", now)
        # Only the tightest threshold crossed is raised: a certificate first seen 2 days before it
        # expires is one warning, not two.
        crossed = [days for days in CERT_WARNING_DAYS if expires - now < timedelta(days=days)]
        if not crossed or (warned is not None and warned <= min(crossed)):
            return warned
        days = min(crossed)
        title = f"the certificate of {state['domain']} expires in under {days} days ({expires:%Y-%m-%d})"
        incident = conn.execute(
            "INSERT INTO incidents (site_id, kind, title, opened_at) VALUES (%s, 'certificate', %s, %s) RETURNING id",
            (state["site_id"], title, now),
        ).fetchone()
        assert incident is not None
        self._notify(
            conn, state, incident["id"], kind="certificate", change="firing", title=title, now=now, status=None
        )
        changes.append("certificate_warnings")
        return days

    def _notify(
        self,
        conn: Connection[Row],
        state: Row,
        incident_id: Any,
        *,
        kind: str,
        change: str,
        title: str,
        now: datetime,
        status: int | None,
    ) -> None:
        # The alert topic and payload shape, so the customer's mail is the alerts' mail step.
        payload = {
            "incident_id": incident_id,
            "site_id": state["site_id"],
            "domain": state["domain"],
            "metric": "up" if kind == "downtime" else "certificate_expiry",
            "kind": kind,
            "state": change,
            "value": status,
            "title": title,
            "at": now.isoformat(),
        }
        self._outbox.enqueue(conn, ALERT_TOPIC, payload, dedup_key=f"{kind}:{incident_id}:{change}")


def _samples(site_id: Any, result: CheckResult, at: datetime) -> list[SampleRow]:
    rows: list[SampleRow] = [(site_id, "up", at, 1.0 if result.ok else 0.0, None)]
    if result.status is not None:
        rows.append((site_id, "response_time_ms", at, round(result.latency_ms, 3), _SAMPLE_LABELS))
    return rows
