"""Onboarding under chaos: many sites onboarded at once against the fake Portainer and Cloudflare (real
adapters, real wire formats, real PostgreSQL and Redis) while the worker is killed mid-step and the
fakes fail at random; then the books are checked.

- Crashes: each step execution is, with ``--crash-probability``, a doomed one: at each boundary
  before or after one of its external calls (Portainer, Cloudflare, the HTTPS probe) it dies with
  even odds (a ``BaseException``, nothing of ours catches it), leaving its lease to lapse. A welcome
  mail delivery is doomed the same way and dies before it starts, after SES accepted the mail (before
  the claim records it) or after the record (before the queue forgets the message).
  ``--crash-before-ses`` also kills it between the claim's commit and the SES request: the one
  window in which the mail is lost (in doubt, not resent: at most once), shown by
  ``welcome_mails_in_doubt`` and a minimum of 0.
- The fakes answer late (after the client's timeout, the work done), 429 with Retry-After, 503, and
  "200 but not created"; 5 % of the domains are refused by the DNS zone (a permanent failure that
  must compensate).
- All runs start at the same instant (a burst of sign-ups): the Cloudflare budget spreads them.
- Time is simulated (backoffs, leases, the budget's window and the fake's lockout all read one
  clock), so hours of retries take seconds.

A baseline in the same process runs the same number of sites without crashes; the ratio of step
executions per run (chaos / baseline) is the cost of the crashes. The last line is JSON.

``--burst N``: N sign-ups at once, no crashes, no faults, no refusals: the Cloudflare requests used
against the budget (1,200 per 5 minutes; the fake locks the token out for 5 minutes past it), the
peak in any 5-minute window, lockouts, and whether every run ended active.

    python -m benchmarks.onboarding_chaos            # 150 runs (quick)
    python -m benchmarks.onboarding_chaos --full     # 1,000 runs at crash probability 0.2
    python -m benchmarks.onboarding_chaos --burst 500
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks._common import environment
from devstack.fakes.cloudflare import LIMIT, WINDOW_SECONDS, FakeCloudflare
from devstack.fakes.portainer import FakePortainer
from devstack.fakes.server import Faults
from functions.agistaffers.adapters.cloudflare_dns import CloudflareDns
from functions.agistaffers.adapters.portainer import PortainerStacks
from functions.agistaffers.adapters.site_probe import HttpsSiteProbe
from functions.agistaffers.services.domain_events import WELCOME_TOPIC
from functions.agistaffers.services.provisioning import Provisioning
from functions.agistaffers.services.provisioning_messages import WELCOME_SCOPE, ProvisioningMessages
from functions.platform.adapters.postgres import Database
from functions.platform.budget import RequestBudget
from functions.platform.claims import Claims
from functions.platform.composition import redis_client
from functions.platform.queues import QueueMessage

API_KEY, TOKEN, ZONE = "ptr_bench", "cf-bench", "bench0zone"
# Our budget keeps a sixth of the token's limit for its other users (the dashboard, a person at a shell).
BUDGET_SHARE = 5 / 6


class Crash(BaseException):
    """The worker dies here (a Lambda killed, an out-of-memory): nothing of ours catches it."""


@dataclass
class Clock:
    at: datetime = field(default_factory=lambda: datetime(2030, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.at

    def seconds(self) -> float:
        return self.at.timestamp()

    def ms(self) -> float:
        return self.at.timestamp() * 1000

    def jump(self, seconds: float) -> None:
        self.at += timedelta(seconds=max(seconds, 0.001))


@dataclass
class Chaos:
    probability: float
    rng: random.Random
    armed: bool = False
    crashes: int = 0

    def arm(self) -> None:
        self.armed = self.rng.random() < self.probability

    def boundary(self) -> None:
        if self.armed and self.rng.random() < 0.5:
            self.armed = False
            self.crashes += 1
            raise Crash

    def wrap(self, target: Any, *, before: bool = True) -> Any:
        """``target`` whose calls may die before (unless not ``before``) and after doing their work."""
        chaos = self

        class Crashing:
            def __getattr__(self, name: str) -> Callable[..., Any]:
                method = getattr(target, name)

                def call(*args: Any, **kwargs: Any) -> Any:
                    if before:
                        chaos.boundary()
                    result = method(*args, **kwargs)
                    chaos.boundary()
                    return result

                return call

        return Crashing()


class CountingMailer:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        self.sent[subject.removesuffix(" is live")] += 1
        return f"m{sum(self.sent.values())}"


def run_once(
    url: str,
    redis_url_settings: Any,
    *,
    runs: int,
    crash_probability: float,
    seed: int,
    faulty: bool = True,
    cloudflare_limit: int = LIMIT,
    crash_before_ses: bool = False,
) -> dict[str, Any]:
    """``faulty``: the fakes fail at random and 5 % of the domains are refused; ``cloudflare_limit``:
    the fake's requests per 5 minutes (our budget takes ``BUDGET_SHARE`` of it)."""
    rng = random.Random(seed)
    clock = Clock()
    faults = (
        Faults(timeout=0.01, too_many=0.02, unavailable=0.03, phantom_create=0.02, timeout_seconds=0.25, rng=rng)
        if faulty
        else Faults(rng=rng)
    )
    portainer = FakePortainer(API_KEY, faults=faults)
    cloudflare = FakeCloudflare(TOKEN, ZONE, faults=faults, now=clock.seconds, limit=cloudflare_limit)
    db = Database(url, name="agistaffers", max_size=4)
    redis = redis_client(redis_url_settings)
    budget_name = f"bench:{seed}:{time.time_ns()}"
    budget_limit = int(cloudflare_limit * BUDGET_SHARE)
    budget = RequestBudget(redis, budget_name, limit=budget_limit, window_seconds=WINDOW_SECONDS, now_ms=clock.ms)
    chaos = Chaos(crash_probability, rng)
    provisioning = Provisioning(
        db,
        containers=chaos.wrap(PortainerStacks(url=portainer.url, api_key=API_KEY, endpoint_id=1, timeout_seconds=0.2)),
        dns=chaos.wrap(
            CloudflareDns(
                api_base=cloudflare.api_base, zone_id=ZONE, api_token=TOKEN, budget=budget, timeout_seconds=0.2
            )
        ),
        probe=chaos.wrap(
            HttpsSiteProbe(
                connect_to=portainer.ingress_address,
                ca_file=portainer.ca_file,
                allow_hosts=("127.0.0.1",),
                timeout_seconds=2.0,
            )
        ),
        dns_target="203.0.113.10",
        engine_options={"now": clock.now, "rng": rng},
    )
    mailer = CountingMailer()
    messages = ProvisioningMessages(
        db, Claims(db, now=clock.now), provisioning, chaos.wrap(mailer, before=crash_before_ses)
    )
    started = time.perf_counter()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE saga_steps, saga_runs, outbox, claims, users, customer_sites, customers CASCADE")
            domains = [f"s{seed}-{n}.example.com" for n in range(runs)]
            if faulty:
                cloudflare.refused_names.update(f"www.{d}" for d in domains if rng.random() < 0.05)
            for first in range(0, runs, 200):
                customer = conn.execute(
                    "INSERT INTO customers (email, company_name, plan, status) "
                    "VALUES (%s, 'Bench', 'enterprise', 'active') RETURNING id",
                    (f"c{first}@example.com",),
                ).fetchone()
                assert customer is not None
                for domain in domains[first : first + 200]:
                    conn.execute(
                        "INSERT INTO customer_sites (customer_id, domain) VALUES (%s, %s)", (customer[0], domain)
                    )
        with db.transaction() as conn:
            for row in conn.execute("SELECT id FROM customer_sites").fetchall():
                provisioning.start_onboarding(conn, str(row["id"]), f"onboard:{row['id']}")
        executions = 0
        for _ in range(200_000):
            due = provisioning.engine.due_runs()
            for run_id in due:
                chaos.arm()
                executions += 1
                with contextlib.suppress(Crash):
                    provisioning.engine.advance(run_id)
            delivered = deliver_mail(db, messages, chaos)
            if due or delivered:
                continue
            wake = next_wake(db)
            if wake is None and not pending_mail(db):
                break
            clock.jump((wake - clock.now()).total_seconds() if wake else 91.0)
        elapsed = time.perf_counter() - started
        result = books(db, portainer, cloudflare, mailer, runs, crash_probability, chaos, executions, elapsed, clock)
        result["cloudflare_budget"] = budget_limit
        result["cloudflare_limit_per_5_minutes"] = cloudflare_limit
        return result
    finally:
        db.close()
        portainer.stop()
        cloudflare.stop()
        for key in redis.scan_iter(f"platform:budget:{budget_name}*"):
            redis.delete(key)


def deliver_mail(db: Database, messages: ProvisioningMessages, chaos: Chaos) -> int:
    """What the relay and the queue do with the welcome rows: delivered (at least once) until done."""
    with db.transaction() as conn:
        rows = conn.execute(
            "SELECT o.payload, o.dedup_key FROM outbox o WHERE o.topic = %s AND o.published_at IS NULL",
            (WELCOME_TOPIC,),
        ).fetchall()
    delivered = 0
    for row in rows:
        body = json.dumps({"topic": WELCOME_TOPIC, "dedup_key": row["dedup_key"], "payload": row["payload"]})
        chaos.arm()
        try:
            chaos.boundary()  # dies before the delivery starts
            messages.handle(QueueMessage(body, row["dedup_key"], 1, {}, {}))
            chaos.boundary()  # dies after recording, before the queue forgets the message
        except Crash:
            continue
        except Exception:  # the claim of a delivery that died is held until its lease lapses
            continue
        with db.transaction() as conn:
            conn.execute("UPDATE outbox SET published_at = now() WHERE dedup_key = %s", (row["dedup_key"],))
        delivered += 1
    return delivered


def pending_mail(db: Database) -> bool:
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM outbox WHERE topic = %s AND published_at IS NULL", (WELCOME_TOPIC,)
        ).fetchone()
    return bool(row and row["n"])


def next_wake(db: Database) -> datetime | None:
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT min(GREATEST(next_attempt_at, COALESCE(locked_until, next_attempt_at))) AS at FROM saga_runs "
            "WHERE status IN ('running', 'compensating')"
        ).fetchone()
    return row["at"] if row else None


def books(
    db: Database,
    portainer: FakePortainer,
    cloudflare: FakeCloudflare,
    mailer: CountingMailer,
    runs: int,
    crash_probability: float,
    chaos: Chaos,
    executions: int,
    elapsed: float,
    clock: Clock,
) -> dict[str, Any]:
    with db.transaction() as conn:
        sites = conn.execute(
            "SELECT s.id, s.domain, s.status, r.status AS run, r.resumes FROM customer_sites s "
            "JOIN saga_runs r ON r.site_id = s.id"
        ).fetchall()
        unfinished = conn.execute(
            "SELECT r.status, st.name, st.state, st.attempts, st.last_error FROM saga_runs r "
            "JOIN saga_steps st ON st.run_id = r.id WHERE r.status NOT IN ('succeeded', 'compensated') "
            "AND st.state NOT IN ('succeeded', 'pending', 'compensated') LIMIT 5"
        ).fetchall()
        in_doubt = conn.execute(
            "SELECT count(*) AS n FROM claims WHERE scope = %s AND result->>'outcome' = 'in_doubt'", (WELCOME_SCOPE,)
        ).fetchone()
    for row in unfinished:
        print(f"unfinished: {dict(row)}")
    owners = portainer.stacks_by_owner()
    active = {f"agistack-site:{s['id']}" for s in sites if s["status"] == "active"}
    by_name = Counter((r["type"], r["name"]) for r in cloudflare.records.values())
    live_names = {s["domain"] for s in sites if s["status"] == "active"}
    orphan_stacks = sum(len(stacks) for owner, stacks in owners.items() if owner not in active)
    orphan_records = sum(1 for r in cloudflare.records.values() if r["name"].removeprefix("www.") not in live_names)
    mails = [mailer.sent[s["domain"]] for s in sites if s["status"] == "active"]
    ended = sum(1 for s in sites if (s["run"], s["status"]) in (("succeeded", "active"), ("compensated", "failed")))
    return {
        "runs": runs,
        "crash_probability": crash_probability,
        "duplicate_stacks": sum(len(stacks) - 1 for owner, stacks in owners.items() if owner and len(stacks) > 1),
        "duplicate_dns_records": sum(count - 1 for count in by_name.values() if count > 1),
        "welcome_mails_per_site_max": max(mails, default=0),
        "welcome_mails_per_site_min": min(mails, default=0),
        "welcome_mails_to_failed_sites": sum(mailer.sent[s["domain"]] for s in sites if s["status"] != "active"),
        "welcome_mails_in_doubt": in_doubt["n"] if in_doubt else 0,
        "ended_active_or_compensated_pct": round(100.0 * ended / max(1, runs), 2),
        "active": sum(1 for s in sites if s["status"] == "active"),
        "compensated": sum(1 for s in sites if s["run"] == "compensated"),
        "orphaned_external_resources": orphan_stacks + orphan_records,
        "max_resumes": max((s["resumes"] for s in sites), default=0),
        "crashes_injected": chaos.crashes,
        "cloudflare_lockouts": cloudflare.lockouts,
        "cloudflare_requests": cloudflare.requests,
        "cloudflare_peak_requests_per_5_minutes": cloudflare.peak_window_requests,
        "step_executions_per_run": round(executions / max(1, runs), 2),
        "simulated_minutes": round((clock.at - datetime(2030, 1, 1, tzinfo=UTC)).total_seconds() / 60, 1),
        "wall_seconds": round(elapsed, 1),
        "wall_seconds_per_run": round(elapsed / max(1, runs), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="1,000 runs (the issue's target)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--crash-probability", type=float, default=0.2)
    parser.add_argument("--crash-before-ses", action="store_true", help="also crash between claim and SES call")
    parser.add_argument("--burst", type=int, default=None, help="N sign-ups at once, no chaos: the budget's figures")
    parser.add_argument("--repeats", type=int, default=1, help="rounds, for the median and spread")
    args = parser.parse_args()
    with environment() as env:
        url = env.settings.database_url_for("agistaffers")
        if args.burst:
            # Baseline: a tenth of the burst, which fits in one budget window.
            def calm(runs: int, seed: int) -> dict[str, Any]:
                return run_once(url, env.settings, runs=runs, crash_probability=0.0, seed=seed, faulty=False)

            baseline = calm(max(10, args.burst // 10), 1)
            rounds = [calm(args.burst, 100 + n) for n in range(args.repeats)]
            figure = "wall_seconds_per_run"
        else:
            runs = args.runs or (1000 if args.full else 150)
            baseline = run_once(url, env.settings, runs=max(50, runs // 5), crash_probability=0.0, seed=1)
            rounds = [
                run_once(
                    url,
                    env.settings,
                    runs=runs,
                    crash_probability=args.crash_probability,
                    crash_before_ses=args.crash_before_ses,
                    seed=100 + n,
                )
                for n in range(args.repeats)
            ]
            figure = "step_executions_per_run"
    print(f"baseline ({baseline['runs']} runs, no crashes): {json.dumps(baseline)}")
    for n, result in enumerate(rounds, 1):
        print(f"round {n}: {json.dumps(result)}")
    values = [r[figure] for r in rounds]
    walls = [r["wall_seconds"] for r in rounds]
    print(f"{figure}: median {statistics.median(values)}, spread {min(values)}..{max(values)}")
    print(f"wall seconds: median {statistics.median(walls)}, spread {min(walls)}..{max(walls)}")
    final = dict(rounds[-1])
    final[f"{figure}_median"] = statistics.median(values)
    final[f"{figure}_spread"] = [min(values), max(values)]
    final["wall_seconds_median"] = statistics.median(walls)
    final["wall_seconds_spread"] = [min(walls), max(walls)]
    # Per run, against the baseline's: what crashes (or a burst's waiting for the budget) cost.
    final["ratio_vs_baseline"] = round(statistics.median(values) / baseline[figure], 2)
    if args.burst:
        final["all_ended_active"] = final["active"] == final["runs"]
    final["ratio_baseline"] = f"{baseline['runs']} runs without crashes" + (" (a small burst)" if args.burst else "")
    final["postgres"] = env.postgres
    print(json.dumps(final))


if __name__ == "__main__":
    main()
