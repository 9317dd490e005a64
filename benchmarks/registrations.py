"""200 concurrent registration attempts for an event with 10 seats, 10 runs.

Expect exactly 10 registered and 190 waitlisted with positions 1..190 in every run. The baseline in
the same run is the naive check-then-insert (count, then insert), which is what oversells.

Usage: .venv/bin/python -m benchmarks.registrations [--runs 10] [--attempts 200] [--seats 10]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import psycopg

from benchmarks._common import environment, spread
from functions.platform.adapters.postgres import Database
from functions.stepperslife.composition import Container
from functions.stepperslife.services.registrations import RegistrationService
from shared.envelope import Identity

POOL_SIZE = 20


def make_event(url: str, attempts: int, seats: int) -> tuple[str, list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        organizer = conn.execute(
            "INSERT INTO users (email, name, password_hash) "
            "VALUES (gen_random_uuid() || '@o.example', 'O', 'scrypt$x') RETURNING id"
        ).fetchone()
        assert organizer is not None
        event = conn.execute(
            "INSERT INTO events (user_id, title, slug, event_date, capacity, status, published_at) "
            "VALUES (%s, 'Bench', 'bench-' || gen_random_uuid(), now() + interval '7 days', %s, 'published', now()) "
            "RETURNING id",
            (organizer[0], seats),
        ).fetchone()
        assert event is not None
        users = conn.execute(
            "INSERT INTO users (email, name, password_hash) "
            "SELECT gen_random_uuid() || '@a.example', 'A', 'scrypt$x' FROM generate_series(1, %s) RETURNING id",
            (attempts,),
        ).fetchall()
    return str(event[0]), [str(row[0]) for row in users]


def burst(attempts: list[str], register: Any) -> float:
    """Fire every attempt at once from its own thread; returns the wall time in seconds."""
    gate = threading.Barrier(len(attempts) + 1)

    def attempt(user_id: str) -> None:
        gate.wait()
        register(user_id)

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        futures = [pool.submit(attempt, user_id) for user_id in attempts]
        gate.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        return time.perf_counter() - started


def outcome(url: str, event_id: str) -> tuple[int, list[int]]:
    with psycopg.connect(url) as conn:
        registered = conn.execute(
            "SELECT count(*) FROM event_registrations WHERE event_id = %s AND status = 'registered'", (event_id,)
        ).fetchone()
        positions = conn.execute(
            "SELECT rank() OVER (ORDER BY waitlist_seq) FROM event_registrations "
            "WHERE event_id = %s AND status = 'waitlisted' ORDER BY waitlist_seq",
            (event_id,),
        ).fetchall()
    assert registered is not None
    return int(registered[0]), [int(row[0]) for row in positions]


def register_one(service: RegistrationService, event_id: str, user_id: str) -> None:
    service.register(event_id, Identity(user_id, "user"))


def naive_register(pool: Database, event_id: str, user_id: str) -> None:
    """The check-then-insert every overselling bug report describes."""
    with pool.transaction() as conn:
        taken = conn.execute(
            "SELECT count(*) AS n FROM event_registrations WHERE event_id = %s AND status = 'registered'", (event_id,)
        ).fetchone()
        capacity = conn.execute("SELECT capacity FROM events WHERE id = %s", (event_id,)).fetchone()
        assert taken is not None and capacity is not None
        status = "registered" if taken["n"] < capacity["capacity"] else "waitlisted"
        conn.execute(
            "INSERT INTO event_registrations (user_id, event_id, status, waitlist_seq) VALUES (%s, %s, %s, %s)",
            (user_id, event_id, status, 1 if status == "waitlisted" else None),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--seats", type=int, default=10)
    args = parser.parse_args()

    with environment() as env:
        url = env.settings.database_url_for("stepperslife")
        pool = Database(url, max_size=POOL_SIZE)
        # Wired as in production: each registration also drops the attendee's cached recommendations.
        wiring = Container(env.settings)
        service = RegistrationService(pool, recommendations=wiring.recommendations, outbox=wiring.outbox_relay)
        registered_per_run: list[int] = []
        positions_ok: list[bool] = []
        rates: list[float] = []
        naive_registered: list[int] = []
        try:
            for run in range(args.runs):
                event_id, users = make_event(url, args.attempts, args.seats)
                seconds = burst(users, partial(register_one, service, event_id))
                registered, positions = outcome(url, event_id)
                registered_per_run.append(registered)
                positions_ok.append(positions == list(range(1, args.attempts - args.seats + 1)))
                rates.append(args.attempts / seconds)
                print(f"run {run + 1}: {registered} registered, {len(positions)} waitlisted, {rates[-1]:.0f}/s")
                naive_event, naive_users = make_event(url, args.attempts, args.seats)
                burst(naive_users, partial(naive_register, pool, naive_event))
                naive_registered.append(outcome(url, naive_event)[0])
        finally:
            pool.close()
            wiring.close()
    print(f"registrations/s: {spread(rates)}")
    print(f"naive check-then-insert, registered per run (should be {args.seats}): {naive_registered}")
    print(
        json.dumps(
            {
                "benchmark": "registrations",
                "postgres": env.postgres,
                "runs": args.runs,
                "attempts": args.attempts,
                "seats": args.seats,
                "registered_per_run": registered_per_run,
                "waitlist_positions_ok": all(positions_ok),
                "registrations_per_s": round(sorted(rates)[len(rates) // 2], 1),
                "registrations_per_s_min": round(min(rates), 1),
                "registrations_per_s_max": round(max(rates), 1),
                "pool_size": POOL_SIZE,
                "naive_registered_per_run": naive_registered,
                "naive_oversold_runs": sum(1 for n in naive_registered if n > args.seats),
            }
        )
    )


if __name__ == "__main__":
    main()
