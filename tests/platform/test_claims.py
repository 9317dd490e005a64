"""Claims, the one "do this once" mechanism: one runner among many, replay, lease takeover, release,
fingerprints and pruning, on real PostgreSQL (in both databases: the table is the platform's)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.platform.adapters.postgres import Database
from functions.platform.claims import ClaimBusy, ClaimMismatch, Claims, Done, Held, Ran
from functions.platform.config import Settings

LEASE = timedelta(seconds=60)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["stepperslife", "agistaffers"])
def db(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url_for(request.param), max_size=12)
    yield database
    database.close()


@pytest.fixture
def scope() -> str:
    """A scope of its own per test: no test sees another's claims."""
    return f"test:{uuid.uuid4()}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_of_many_callers_at_once_exactly_one_runs_the_work(db: Database, scope: str) -> None:
    callers = 8
    claims = Claims(db)
    start = threading.Barrier(callers)
    turned_away = threading.Semaphore(0)
    ran: list[str] = []
    busy: list[str] = []
    outcomes: list[Any] = []

    def work() -> dict[str, int]:
        ran.append(threading.current_thread().name)
        # Hold the claim until every other caller has been turned away.
        for _ in range(callers - 1):
            assert turned_away.acquire(timeout=60)
        return {"answer": 42}

    def call() -> None:
        start.wait()
        try:
            outcomes.append(claims.run_once(scope, "k", work, lease=LEASE))
        except ClaimBusy:
            busy.append(threading.current_thread().name)
            turned_away.release()

    threads = [threading.Thread(target=call, name=f"caller-{n}") for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ran) == 1 and len(busy) == callers - 1
    assert outcomes == [Ran({"answer": 42})]
    assert claims.run_once(scope, "k", work, lease=LEASE) == Done({"answer": 42})
    assert len(ran) == 1


def test_a_done_claim_replays_its_stored_result(db: Database, scope: str) -> None:
    claims = Claims(db)
    calls: list[int] = []

    def work() -> dict[str, Any]:
        calls.append(1)
        return {"at": datetime(2030, 1, 1, tzinfo=UTC), "id": uuid.UUID(int=1)}

    first = claims.run_once(scope, "k", work, lease=LEASE, record=lambda value: {"id": value["id"]})
    assert isinstance(first, Ran) and first.value["at"].year == 2030
    # What is stored is what ``record`` kept, as JSON.
    assert claims.run_once(scope, "k", work, lease=LEASE) == Done({"id": str(uuid.UUID(int=1))})
    assert calls == [1]
    # Another key (or another scope) is another claim.
    assert isinstance(claims.run_once(scope, "other", work, lease=LEASE), Ran)
    assert isinstance(claims.run_once(scope + ":b", "k", work, lease=LEASE), Ran)


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_finish(
    db: Database, scope: str, clock: Clock
) -> None:
    claims = Claims(db, now=clock)
    first = claims.claim(scope, "k", lease=LEASE)
    assert isinstance(first, Held) and not first.taken_over
    clock.now += LEASE - timedelta(seconds=1)
    with pytest.raises(ClaimBusy):
        claims.claim(scope, "k", lease=LEASE)

    clock.now += timedelta(seconds=1)  # the first holder died: its lease ran out
    second = claims.claim(scope, "k", lease=LEASE)
    assert isinstance(second, Held) and second.holder != first.holder and second.taken_over
    with pytest.raises(ClaimBusy):
        claims.claim(scope, "k", lease=LEASE)

    # The first holder wakes up late: it can neither finish nor drop the new holder's claim.
    assert claims.complete(first, "late") is False
    assert claims.release(first) is False
    assert claims.complete(second, "on time") is True
    assert claims.claim(scope, "k", lease=LEASE) == Done("on time")
    assert claims.release(second) is False  # a done claim stays done


def test_a_failed_run_releases_the_claim_so_a_retry_runs_again(db: Database, scope: str) -> None:
    claims = Claims(db)

    def broken() -> str:
        raise ConnectionError("the queue is down")

    with pytest.raises(ConnectionError):
        claims.run_once(scope, "k", broken, lease=LEASE)
    assert claims.run_once(scope, "k", lambda: "sent", lease=LEASE) == Ran("sent")
    assert claims.run_once(scope, "k", broken, lease=LEASE) == Done("sent")


def test_the_same_key_with_another_fingerprint_is_refused(db: Database, scope: str, clock: Clock) -> None:
    claims = Claims(db, now=clock)
    held = claims.claim(scope, "running", lease=LEASE, fingerprint="a")
    assert isinstance(held, Held)
    with pytest.raises(ClaimMismatch):
        claims.claim(scope, "running", lease=LEASE, fingerprint="b")
    clock.now += LEASE * 2  # an expired claim is not taken over by another request either
    with pytest.raises(ClaimMismatch):
        claims.claim(scope, "running", lease=LEASE, fingerprint="b")
    assert isinstance(claims.claim(scope, "running", lease=LEASE, fingerprint="a"), Held)

    assert claims.run_once(scope, "done", lambda: 1, lease=LEASE, fingerprint="a") == Ran(1)
    with pytest.raises(ClaimMismatch):
        claims.run_once(scope, "done", lambda: 2, lease=LEASE, fingerprint="b")
    with pytest.raises(ClaimMismatch):
        claims.run_once(scope, "done", lambda: 2, lease=LEASE)  # no fingerprint is another request too
    assert claims.run_once(scope, "done", lambda: 2, lease=LEASE, fingerprint="a") == Done(1)


def test_prune_forgets_old_claims_of_one_family(db: Database, clock: Clock) -> None:
    family = f"prune{uuid.uuid4().hex}"
    claims = Claims(db, now=clock)
    for scope in (family, f"{family}:user", f"{family}x"):
        claims.run_once(scope, "old", lambda: None, lease=LEASE)
    clock.now += timedelta(days=2)
    claims.run_once(family, "new", lambda: None, lease=LEASE)
    clock.now += timedelta(hours=1)

    assert claims.prune(timedelta(days=1), family=family) == 2  # not "<family>x": another family
    assert claims.run_once(family, "old", lambda: "again", lease=LEASE) == Ran("again")
    assert claims.run_once(f"{family}:user", "old", lambda: "again", lease=LEASE) == Ran("again")
    assert claims.run_once(f"{family}x", "old", lambda: "again", lease=LEASE) == Done(None)
    assert claims.run_once(family, "new", lambda: "again", lease=LEASE) == Done(None)
