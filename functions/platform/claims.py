"""Claims: the one "do this once" mechanism of the platform, over the ``claims`` table.

A claim is a row keyed by a natural key the caller chooses: ``(scope, key)``, say
``("http:<user>:POST /events", <Idempotency-Key>)``, ``("step:event.published", "<dedup_key>:notify")``
or ``("digest", "2030-05-01:<user>")``. ``run_once`` holds the whole flow (the model is
aws-powertools' idempotency handler): record the claim ``in_progress`` → run the work → store its
result as ``done``; or, when the work raises, delete the claim so that a retry runs it again.
Callers are thin fronts over it (the HTTP ``Idempotency-Key``, the step engine, the daily digest).
A scope's first part (before any ``:``) names its family, which ``prune`` works on.

Failure model, and why:
- Two callers claiming at once: the primary key decides; the loser sees ``in_progress`` and gets
  ``ClaimBusy`` rather than running the work a second time.
- A holder that dies (a Lambda killed, a crash) leaves ``in_progress`` behind. Its claim has a lease
  (``locked_until``); once the lease ran out, the next caller takes the claim over and runs the work.
  A lease must therefore outlast the longest run of the work (a live holder is never taken over) and
  stay short enough for a retry to find it lapsed (a queue's visibility timeout, a client's patience).
- A holder whose lease lapsed and was taken over cannot complete or release the new holder's claim:
  each claim carries a random ``holder`` token and both operations require it.
- The same key with another request (another ``fingerprint``) is a caller's mistake, never a replay:
  ``ClaimMismatch``.
- ``done`` claims are kept until ``prune`` removes them; a front prunes what no retry can still need.

Times come from ``now`` (the process clock, injectable for tests), like powertools' expiry stamps;
leases are tens of seconds, far above any clock skew between functions.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

from functions.platform import jsonable
from functions.platform.ports import TransactionalDatabase

T = TypeVar("T")


class ClaimBusy(Exception):
    """Another holder is running this claim and its lease has not run out: try again later."""


class ClaimMismatch(Exception):
    """The key was claimed for another request (another fingerprint)."""


class Held(NamedTuple):
    """A claim this caller holds: complete or release it. ``taken_over``: an earlier holder claimed it
    and neither completed nor released it (it died mid-work, or outlived its lease)."""

    scope: str
    key: str
    holder: str
    taken_over: bool = False


class Done(NamedTuple):
    """A claim completed earlier: its stored result."""

    result: Any


class Ran(NamedTuple, Generic[T]):
    """``run_once`` ran the work now: its return value."""

    value: T


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Claims:
    def __init__(self, db: TransactionalDatabase, *, now: Callable[[], datetime] = _utc_now) -> None:
        self._db = db
        self._now = now

    def run_once(
        self,
        scope: str,
        key: str,
        work: Callable[[], T],
        *,
        lease: timedelta,
        fingerprint: str | None = None,
        record: Callable[[T], Any] = lambda value: value,
    ) -> Ran[T] | Done:
        """Run ``work`` unless ``(scope, key)`` was done already (then its stored result comes back).

        ``record`` turns the work's value into what is stored (JSON) for later callers; raises
        ``ClaimBusy`` or ``ClaimMismatch`` as ``claim`` does. When ``work`` raises, the claim is
        released and the exception propagates: a failure is never replayed."""
        claimed = self.claim(scope, key, lease=lease, fingerprint=fingerprint)
        if isinstance(claimed, Done):
            return claimed
        try:
            value = work()
        except BaseException:
            self.release(claimed)
            raise
        self.complete(claimed, record(value))
        return Ran(value)

    # --- the persistence operations ------------------------------------------------------------------

    def claim(self, scope: str, key: str, *, lease: timedelta, fingerprint: str | None = None) -> Held | Done:
        """Claim ``(scope, key)`` for ``lease``; an expired ``in_progress`` claim is taken over.

        Returns ``Held`` when the caller should do the work, ``Done`` with the stored result when it
        was done; raises ``ClaimBusy`` while another holder's lease runs and ``ClaimMismatch`` when
        the claim was made with another fingerprint."""
        now = self._now()
        holder = secrets.token_hex(16)
        with self._db.transaction() as conn:
            # A concurrent insert of the same key waits for the first one's commit, then evaluates the
            # WHERE against it: one caller wins, the other falls through to the SELECT below.
            claimed = conn.execute(
                "INSERT INTO claims (scope, key, fingerprint, status, holder, claimed_at, locked_until) "
                "VALUES (%s, %s, %s, 'in_progress', %s, %s, %s) "
                "ON CONFLICT (scope, key) DO UPDATE SET holder = EXCLUDED.holder, "
                "claimed_at = EXCLUDED.claimed_at, locked_until = EXCLUDED.locked_until "
                "WHERE claims.status = 'in_progress' AND claims.locked_until <= EXCLUDED.claimed_at "
                "AND claims.fingerprint IS NOT DISTINCT FROM EXCLUDED.fingerprint "
                # xmax is 0 on a freshly inserted row, set on one the ON CONFLICT branch updated.
                "RETURNING holder, xmax <> 0 AS taken_over",
                (scope, key, fingerprint, holder, now, now + lease),
            ).fetchone()
            if claimed is not None:
                return Held(scope, key, holder, bool(claimed["taken_over"]))
            existing = conn.execute(
                "SELECT fingerprint, status, result FROM claims WHERE scope = %s AND key = %s", (scope, key)
            ).fetchone()
        if existing is None:  # pruned between the two statements: as good as never claimed
            return self.claim(scope, key, lease=lease, fingerprint=fingerprint)
        if existing["fingerprint"] != fingerprint:
            raise ClaimMismatch(f"{scope} {key} was claimed for another request")
        if existing["status"] != "done":
            raise ClaimBusy(f"{scope} {key} is in progress")
        return Done(existing["result"])

    def complete(self, held: Held, result: Any) -> bool:
        """Store ``result`` (JSON) as the claim's outcome; False when the claim was taken over meanwhile."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE claims SET status = 'done', result = %s::jsonb, completed_at = %s "
                "WHERE scope = %s AND key = %s AND holder = %s AND status = 'in_progress'",
                (json.dumps(jsonable.json_ready(result)), self._now(), held.scope, held.key, held.holder),
            )
            return cursor.rowcount == 1

    def release(self, held: Held) -> bool:
        """Forget a claim whose work failed unexpectedly, so that a retry runs it again."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM claims WHERE scope = %s AND key = %s AND holder = %s AND status = 'in_progress'",
                (held.scope, held.key, held.holder),
            )
            return cursor.rowcount == 1

    def prune(self, older_than: timedelta, *, family: str | None = None) -> int:
        """Delete the claims made more than ``older_than`` ago; returns how many. ``family`` limits it
        to one kind of claim: the scope ``family`` itself and every scope ``family:...``."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM claims WHERE claimed_at < %s "
                "AND (%s::text IS NULL OR scope = %s OR starts_with(scope, %s || ':'))",
                (self._now() - older_than, family, family, family),
            )
            return cursor.rowcount
