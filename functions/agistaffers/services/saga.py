"""The saga engine: ordered steps over external systems, every step recorded in PostgreSQL
(``saga_runs``, ``saga_steps``: state, attempts, next attempt time, last error, external ids), executed
one step per call of ``advance`` (one queue message), resumed from the records after any crash.

Failure model, and why:
- No in-memory state survives between steps: ``advance`` reads the run and its steps, does the first
  step that is not done, records the outcome and enqueues the message for the next one (an outbox row
  committed with the record). A schedule re-sends messages for runs that are due (``kick_due``), so a
  lost message, a crashed worker or a backoff never leaves a run behind.
- A worker holds a run by a lease (``locked_until``, ``holder``) while its step runs outside any
  transaction. A crash (before or after an external call) leaves the lease to lapse; the next worker
  takes the run over (``resumes`` counts it) and repeats the step. Every external step is therefore
  idempotent by a natural key (the adapters look up before they create), and a recording by a worker
  whose lease was taken over is refused (the holder token does not match), so it cannot overwrite its
  successor's progress.
- Steps that only write our database (mark the site active, enqueue the welcome mail) run inside the
  transaction that records them: exactly once.
- ``Transient`` failures retry with exponential backoff and jitter, honouring a Retry-After; after a
  step's ``max_attempts`` the run stops as ``failed`` (resources kept, staff retry or cancel) or, for
  a step whose bound means "it will not happen" (the HTTPS check), compensates. ``Wait`` defers a step
  without counting an attempt (a request budget, a grace period). ``Permanent`` failures compensate:
  the undo of every step that ran, in reverse order, each retried until it succeeds (undoing never
  gives up, so nothing is left orphaned), then the saga's ``finish`` records the reason.
- One run works on a site at a time (a unique index); later runs wait ``queued`` and start when the
  active one ends.
Times come from ``now`` (injectable: the chaos benchmark runs on a simulated clock).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from functions.platform.outbox import Outbox
from functions.platform.ports import OutboxFlush, Row, TransactionalDatabase

log = logging.getLogger("agistack.saga")

DUE_TOPIC = "saga.due"
# Longer than one step can take (the adapters' timeouts are seconds; a Lambda's timeout is 30 s).
LEASE = timedelta(seconds=60)
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
# Undoing never gives up; it retries at most this far apart.
UNDO_BACKOFF_CAP_SECONDS = 3600.0
MAX_ERROR_LENGTH = 500
# Attempts before a failing step pauses its run for staff: with the backoff (2 s doubling, capped at
# 5 minutes) about 20 minutes of patience, so a provider's short outage is waited out, not escalated.
# A crashed attempt counts too: a step that keeps killing its worker must stop somewhere.
MAX_ATTEMPTS = 12


class Transient(Exception):
    """Try again later (a timeout, a 5xx, a 429); ``retry_after`` is the server's own wish, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoEffect(Transient):
    """A transient failure known to have had no effect (refused, or never reached): for a call that
    must not be repeated when it may have landed (a mail), repeating it after this is safe."""


class Permanent(Exception):
    """Will not change by retrying; ``reason`` is for the customer to read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Wait(Exception):
    """Not a failure: the step may run in ``seconds`` (a budget refills, a grace period ends)."""

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = max(0.0, seconds)


@dataclass(frozen=True)
class Context:
    """What a step sees: its run, the site (with its customer and plan), and what earlier steps made."""

    run_id: str
    kind: str
    site: Row
    external: Mapping[str, Any]
    attempt: int
    created_at: datetime


ExternalStep = Callable[[Context], "dict[str, Any] | None"]
DatabaseStep = Callable[[Connection[Row], Context], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Step:
    name: str
    # Exactly one of run (outside any transaction: external calls) and commit (inside the transaction
    # that records the step). Both return the external ids to record, if any.
    run: ExternalStep | None = None
    commit: DatabaseStep | None = None
    # Undoes the step by its natural key (so also what a crashed attempt made); safe to repeat.
    undo: Callable[[Context], None] | None = None
    max_attempts: int = MAX_ATTEMPTS
    # What running out of attempts means: "pause" (stop, keep resources, staff decide) or a
    # customer-readable reason to compensate with.
    exhausted: str = "pause"
    backoff_base_seconds: float = BACKOFF_BASE_SECONDS
    backoff_cap_seconds: float = BACKOFF_CAP_SECONDS


@dataclass(frozen=True)
class Saga:
    kind: str
    steps: tuple[Step, ...]
    # In the transaction that ends the run: "succeeded" or "compensated" with the reason.
    finish: Callable[[Connection[Row], Context, str, str | None], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def backoff(attempt: int, *, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with "equal jitter" (half fixed, half random,
    so retries spread out yet never come sooner than half the backoff); never before a Retry-After."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is not None:
        # Everyone told the same Retry-After would come back at once: spread them over a second or so.
        delay = max(delay, retry_after + rng.uniform(0, 1.0))
    return delay


@dataclass
class SagaEngine:
    db: TransactionalDatabase
    sagas: Mapping[str, Saga]
    outbox: Outbox
    load_site: Callable[[Connection[Row], str], Row | None]
    flush: OutboxFlush | None = None
    now: Callable[[], datetime] = _utc_now
    lease: timedelta = LEASE
    rng: random.Random = field(default_factory=random.Random)

    # --- starting runs -------------------------------------------------------------------------------

    def start(self, conn: Connection[Row], site_id: str, kind: str, trigger: str) -> str | None:
        """Start (or queue behind the site's active run) a ``kind`` run in the caller's transaction;
        the same ``trigger`` never starts two runs (returns None then). The caller locks the site row."""
        saga = self.sagas[kind]
        active = conn.execute(
            "SELECT 1 FROM saga_runs WHERE site_id = %s AND status IN ('running', 'compensating', 'failed')",
            (site_id,),
        ).fetchone()
        row = conn.execute(
            "INSERT INTO saga_runs (site_id, kind, status, trigger, next_attempt_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (trigger) DO NOTHING RETURNING id",
            (site_id, kind, "queued" if active else "running", trigger, self.now()),
        ).fetchone()
        if row is None:
            return None
        run_id = str(row["id"])
        for position, step in enumerate(saga.steps):
            conn.execute(
                "INSERT INTO saga_steps (run_id, position, name) VALUES (%s, %s, %s)", (run_id, position, step.name)
            )
        if not active:
            self._nudge(conn, run_id)
        return run_id

    def request_cancel(self, conn: Connection[Row], run_id: str, reason: str) -> None:
        """Ask the run to stop and compensate (at its next step; a step in flight finishes first)."""
        now = self.now()
        # A queued run never started: nothing to undo, it ends here.
        conn.execute(
            "UPDATE saga_runs SET status = 'compensated', reason = %s, finished_at = %s, updated_at = %s "
            "WHERE id = %s AND status = 'queued'",
            (reason, now, now, run_id),
        )
        conn.execute(
            "UPDATE saga_runs SET cancel_requested = true, reason = %s, updated_at = %s, "
            "status = 'running', next_attempt_at = %s WHERE id = %s AND status IN ('running', 'failed')",
            (reason, now, now, run_id),
        )
        self._nudge(conn, run_id)

    def retry(self, conn: Connection[Row], run_id: str) -> None:
        """Resume a failed (paused) or compensated run from its first step that is not done: steps whose
        effect was undone run again (each is idempotent), attempts start from zero."""
        now = self.now()
        conn.execute(
            "UPDATE saga_steps SET state = 'pending', attempts = 0, next_attempt_at = NULL, last_error = NULL, "
            "finished_at = NULL WHERE run_id = %s AND state <> 'succeeded'",
            (run_id,),
        )
        conn.execute(
            "UPDATE saga_runs SET status = 'running', cancel_requested = false, reason = NULL, finished_at = NULL, "
            "next_attempt_at = %s, locked_until = NULL, holder = NULL, updated_at = %s WHERE id = %s",
            (now, now, run_id),
        )
        self._nudge(conn, run_id)

    # --- the schedule -----------------------------------------------------------------------------------

    def kick_due(self, limit: int = 500) -> int:
        """Send a message for every run that is due and not held (a lost message, a backoff that ran
        out, a crashed worker whose lease lapsed); returns how many."""
        now = self.now()
        with self.db.transaction() as conn:
            rows = conn.execute(
                "UPDATE saga_runs SET kicks = kicks + 1 WHERE id IN (SELECT id FROM saga_runs "
                "WHERE status IN ('running', 'compensating') AND next_attempt_at <= %s "
                "AND (locked_until IS NULL OR locked_until <= %s) ORDER BY next_attempt_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING id",
                (now, now, limit),
            ).fetchall()
            for row in rows:
                self._nudge(conn, str(row["id"]))
        if rows and self.flush is not None:
            self.flush.flush_after_commit()
        return len(rows)

    def due_runs(self, limit: int = 1000) -> list[str]:
        now = self.now()
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id FROM saga_runs WHERE status IN ('running', 'compensating') AND next_attempt_at <= %s "
                "AND (locked_until IS NULL OR locked_until <= %s) ORDER BY next_attempt_at LIMIT %s",
                (now, now, limit),
            ).fetchall()
        return [str(row["id"]) for row in rows]

    # --- one step ----------------------------------------------------------------------------------------

    def advance(self, run_id: str) -> str:
        """Do the run's next step if it is due and nobody holds it; returns what happened (for logs)."""
        held = self._take(run_id)
        if held is None:
            return "not due"
        run, holder = held
        saga = self.sagas[run["kind"]]
        with self.db.transaction() as conn:
            steps = {
                row["name"]: row
                for row in conn.execute(
                    "SELECT * FROM saga_steps WHERE run_id = %s ORDER BY position", (run_id,)
                ).fetchall()
            }
            site = self.load_site(conn, str(run["site_id"]))
        assert site is not None  # sites are never removed while they have runs (FK RESTRICT)
        external: dict[str, Any] = {}
        for row in steps.values():
            external.update(row["external_ids"])
        try:
            if run["status"] == "running" and run["cancel_requested"]:
                self._begin_compensation(run, holder, saga, steps, run["reason"] or "cancelled")
                return "cancelling"
            if run["status"] == "running":
                outcome = self._forward(run, holder, saga=saga, steps=steps, site=site, external=external)
            else:
                outcome = self._backward(run, holder, saga=saga, steps=steps, site=site, external=external)
        except _Superseded:
            return "superseded"
        self.flush_outbox()
        return outcome

    def _take(self, run_id: str) -> tuple[Row, str] | None:
        now, holder = self.now(), secrets.token_hex(16)
        with self.db.transaction() as conn:
            run = conn.execute(
                "UPDATE saga_runs SET resumes = resumes + (locked_until IS NOT NULL)::int, locked_until = %s, "
                "holder = %s WHERE id = %s AND status IN ('running', 'compensating') AND next_attempt_at <= %s "
                "AND (locked_until IS NULL OR locked_until <= %s) RETURNING *",
                (now + self.lease, holder, run_id, now, now),
            ).fetchone()
        return (run, holder) if run is not None else None

    def _context(self, run: Row, site: Row, external: Mapping[str, Any], attempt: int) -> Context:
        return Context(str(run["id"]), run["kind"], site, external, attempt, run["created_at"])

    def _forward(
        self, run: Row, holder: str, *, saga: Saga, steps: Mapping[str, Row], site: Row, external: dict[str, Any]
    ) -> str:
        pending = [step for step in saga.steps if steps[step.name]["state"] != "succeeded"]
        if not pending:
            with self._recording(run, holder) as conn:
                self._end(conn, run, saga, self._context(run, site, external, 0), status="succeeded", reason=None)
            return "succeeded"
        step = pending[0]
        record = steps[step.name]
        attempt = record["attempts"] + 1
        context = self._context(run, site, external, attempt)
        if step.commit is not None:
            try:
                with self._recording(run, holder) as conn:
                    made = step.commit(conn, context)
                    self._succeed(conn, run, step.name, made)
            except Permanent as exc:
                self._fail_permanently(run, holder, step.name, exc.reason)
                return f"{step.name}: permanent"
            return f"{step.name}: done"
        assert step.run is not None
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET attempts = attempts + 1, started_at = COALESCE(started_at, %s) "
                "WHERE run_id = %s AND name = %s",
                (self.now(), run["id"], step.name),
            )
        try:
            made = step.run(context)
        except Wait as exc:
            self._defer(run, holder, step.name, self._spread(exc.seconds), str(exc), counted=False)
            return f"{step.name}: waiting"
        except Permanent as exc:
            self._fail_permanently(run, holder, step.name, exc.reason)
            return f"{step.name}: permanent"
        except Exception as exc:
            retry_after = exc.retry_after if isinstance(exc, Transient) else None
            if not isinstance(exc, Transient):
                log.exception("run %s step %s: unexpected error, retried as transient", run["id"], step.name)
            error = _describe(exc)
            if attempt >= step.max_attempts:
                if step.exhausted == "pause":
                    self._pause(run, holder, step.name, error)
                    return f"{step.name}: paused"
                self._fail_permanently(run, holder, step.name, step.exhausted, error=error)
                return f"{step.name}: gave up"
            delay = backoff(
                attempt,
                base=step.backoff_base_seconds,
                cap=step.backoff_cap_seconds,
                retry_after=retry_after,
                rng=self.rng,
            )
            self._defer(run, holder, step.name, delay, error, counted=True)
            return f"{step.name}: retry in {delay:.1f}s"
        with self._recording(run, holder) as conn:
            self._succeed(conn, run, step.name, made)
        return f"{step.name}: done"

    def _backward(
        self, run: Row, holder: str, *, saga: Saga, steps: Mapping[str, Row], site: Row, external: dict[str, Any]
    ) -> str:
        undoing = [step for step in reversed(saga.steps) if steps[step.name]["state"] == "compensating" and step.undo]
        if not undoing:
            with self._recording(run, holder) as conn:
                self._end(
                    conn, run, saga, self._context(run, site, external, 0), status="compensated", reason=run["reason"]
                )
            return "compensated"
        step = undoing[0]
        attempt = steps[step.name]["attempts"] + 1
        assert step.undo is not None
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET attempts = attempts + 1 WHERE run_id = %s AND name = %s", (run["id"], step.name)
            )
        try:
            step.undo(self._context(run, site, external, attempt))
        except Wait as exc:
            self._defer(run, holder, step.name, self._spread(exc.seconds), str(exc), counted=False)
            return f"undo {step.name}: waiting"
        except Exception as exc:
            if not isinstance(exc, Transient):
                log.warning("run %s: undoing %s failed (%s); retried", run["id"], step.name, _describe(exc))
            retry_after = exc.retry_after if isinstance(exc, Transient) else None
            delay = backoff(
                attempt,
                base=step.backoff_base_seconds,
                cap=UNDO_BACKOFF_CAP_SECONDS,
                retry_after=retry_after,
                rng=self.rng,
            )
            self._defer(run, holder, step.name, delay, _describe(exc), counted=True)
            return f"undo {step.name}: retry in {delay:.1f}s"
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET state = 'compensated', finished_at = %s, last_error = NULL "
                "WHERE run_id = %s AND name = %s",
                (self.now(), run["id"], step.name),
            )
            self._release(conn, run["id"], self.now())
            self._nudge(conn, str(run["id"]))
        return f"undo {step.name}: done"

    def _spread(self, seconds: float) -> float:
        """A wait's end, jittered: runs that waited for the same budget slot must not all wake at the
        instant it frees (only a few would get it; the rest would wait again, and again)."""
        return seconds + self.rng.uniform(0, max(1.0, seconds))

    # --- recording --------------------------------------------------------------------------------------

    def _recording(self, run: Row, holder: str) -> Any:
        return _Recording(self.db, str(run["id"]), holder)

    def _succeed(self, conn: Connection[Row], run: Row, name: str, made: Mapping[str, Any] | None) -> None:
        now = self.now()
        conn.execute(
            "UPDATE saga_steps SET state = 'succeeded', finished_at = %s, last_error = NULL, next_attempt_at = NULL, "
            "started_at = COALESCE(started_at, %s), attempts = GREATEST(attempts, 1), "
            "external_ids = external_ids || %s::jsonb WHERE run_id = %s AND name = %s",
            (now, now, json.dumps(dict(made or {})), run["id"], name),
        )
        self._release(conn, run["id"], now)
        self._nudge(conn, str(run["id"]))

    def _defer(self, run: Row, holder: str, name: str, seconds: float, error: str, *, counted: bool) -> None:
        when = self.now() + timedelta(seconds=seconds)
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET next_attempt_at = %s, last_error = %s, "
                "attempts = attempts - %s WHERE run_id = %s AND name = %s",
                (when, error[:MAX_ERROR_LENGTH], 0 if counted else 1, run["id"], name),
            )
            self._release(conn, run["id"], when)

    def _pause(self, run: Row, holder: str, name: str, error: str) -> None:
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET state = 'failed', last_error = %s, finished_at = %s "
                "WHERE run_id = %s AND name = %s",
                (error[:MAX_ERROR_LENGTH], self.now(), run["id"], name),
            )
            reason = "setup stopped after repeated errors; our team has been alerted and will retry it"
            conn.execute(
                "UPDATE saga_runs SET status = 'failed', reason = %s, locked_until = NULL, holder = NULL, "
                "updated_at = %s WHERE id = %s",
                (reason, self.now(), run["id"]),
            )
            conn.execute(
                "UPDATE customer_sites SET status = 'failed', status_reason = %s, updated_at = now() "
                "WHERE id = %s AND status = 'provisioning'",
                (reason, run["site_id"]),
            )
        log.error("run %s (%s) paused at %s: %s", run["id"], run["kind"], name, error)

    def _fail_permanently(self, run: Row, holder: str, name: str, reason: str, *, error: str | None = None) -> None:
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET state = 'failed', last_error = %s, finished_at = %s "
                "WHERE run_id = %s AND name = %s",
                ((error or reason)[:MAX_ERROR_LENGTH], self.now(), run["id"], name),
            )
            conn.execute("UPDATE saga_runs SET reason = %s WHERE id = %s", (reason[:1000], run["id"]))
        run = {**run, "reason": reason}
        saga = self.sagas[run["kind"]]
        with self.db.transaction() as conn:
            steps = {
                row["name"]: row
                for row in conn.execute("SELECT * FROM saga_steps WHERE run_id = %s", (run["id"],)).fetchall()
            }
        self._begin_compensation(run, holder, saga, steps, reason)

    def _begin_compensation(self, run: Row, holder: str, saga: Saga, steps: Mapping[str, Row], reason: str) -> None:
        """Every step that ran (or may have: it was attempted) and has an undo gets undone."""
        started = [s.name for s in saga.steps if s.undo is not None and steps[s.name]["attempts"] > 0]
        now = self.now()
        with self._recording(run, holder) as conn:
            conn.execute(
                "UPDATE saga_steps SET state = 'compensating', attempts = 0, next_attempt_at = NULL "
                "WHERE run_id = %s AND name = ANY(%s)",
                (run["id"], started),
            )
            conn.execute(
                "UPDATE saga_runs SET status = 'compensating', reason = COALESCE(reason, %s), updated_at = %s "
                "WHERE id = %s",
                (reason[:1000], now, run["id"]),
            )
            self._release(conn, run["id"], now)
            self._nudge(conn, str(run["id"]))

    def _end(
        self, conn: Connection[Row], run: Row, saga: Saga, context: Context, *, status: str, reason: str | None
    ) -> None:
        now = self.now()
        saga.finish(conn, context, status, reason)
        conn.execute(
            "UPDATE saga_runs SET status = %s, finished_at = %s, updated_at = %s, locked_until = NULL, holder = NULL "
            "WHERE id = %s",
            (status, now, now, run["id"]),
        )
        # The next queued run of the site, if any, starts now.
        following = conn.execute(
            "UPDATE saga_runs SET status = 'running', next_attempt_at = %s, updated_at = %s WHERE id = ("
            "SELECT id FROM saga_runs WHERE site_id = %s AND status = 'queued' ORDER BY created_at, id LIMIT 1) "
            "RETURNING id",
            (now, now, run["site_id"]),
        ).fetchone()
        if following is not None:
            self._nudge(conn, str(following["id"]))

    def _release(self, conn: Connection[Row], run_id: Any, next_attempt_at: datetime) -> None:
        conn.execute(
            "UPDATE saga_runs SET locked_until = NULL, holder = NULL, next_attempt_at = %s, updated_at = %s "
            "WHERE id = %s",
            (next_attempt_at, self.now(), run_id),
        )

    def _nudge(self, conn: Connection[Row], run_id: str) -> None:
        # Each nudge is its own fact (a random dedup key): the consumer is idempotent by the lease.
        self.outbox.enqueue(conn, DUE_TOPIC, {"run_id": run_id}, dedup_key=f"saga:{run_id}:{secrets.token_hex(8)}")

    def flush_outbox(self) -> None:
        """Send the messages just committed now (best effort: the relay's schedule sends them otherwise)."""
        if self.flush is not None:
            self.flush.flush_after_commit()


class _Superseded(Exception):
    """This worker's lease was taken over: its recording is refused (the successor's progress stands)."""


class _Recording:
    """A transaction that records a step for the run's holder, refused when the holder lost the run."""

    def __init__(self, db: TransactionalDatabase, run_id: str, holder: str) -> None:
        self._db = db
        self._run_id = run_id
        self._holder = holder
        self._cm: Any = None

    def __enter__(self) -> Connection[Row]:
        self._cm = self._db.transaction()
        conn: Connection[Row] = self._cm.__enter__()
        held = conn.execute(
            "SELECT 1 FROM saga_runs WHERE id = %s AND holder = %s FOR UPDATE", (self._run_id, self._holder)
        ).fetchone()
        if held is None:
            self._cm.__exit__(_Superseded, _Superseded(), None)
            raise _Superseded(f"run {self._run_id} was taken over")
        return conn

    def __exit__(self, *exc_info: Any) -> bool | None:
        result: bool | None = self._cm.__exit__(*exc_info)
        return result


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, Transient | Permanent) else f"{type(exc).__name__}: {text}"


def step_rows(conn: Connection[Row], run_id: Any) -> Sequence[Row]:
    return conn.execute(
        "SELECT name, state, attempts, next_attempt_at, last_error, external_ids, started_at, finished_at "
        "FROM saga_steps WHERE run_id = %s ORDER BY position",
        (run_id,),
    ).fetchall()
