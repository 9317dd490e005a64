"""100k events: list and search latency through the API, the plans PostgreSQL picks, and how much
the Redis cache buys on repeated public list requests.

The API is the real Chalice app served by Chalice's local HTTP server; every request is signed like the
gateway's. "Uncached" runs the same app with no Redis configured (every read goes to PostgreSQL);
"cached" runs it with Redis, repeating one request. Both in this process, one after the other.

Usage: .venv/bin/python -m benchmarks.events_api [--events 100000] [--requests 300]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import statistics
import threading
import time
import urllib.request
from typing import Any

import psycopg

from benchmarks._common import SIGNING_SECRET, environment, percentile, spread
from devstack.services import free_port
from functions.platform.config import RedisSettings, Settings
from functions.stepperslife.composition import configure
from shared import envelope

# A vocabulary of 16 real words and 144 made-up ones, so that a two-word query is about as selective
# as on a real catalogue (a 16-word vocabulary makes every query match a large share of the table).
_REAL = ["steppers", "salsa", "jazz", "ball", "social", "night", "lesson", "championship", "brunch", "gala",
         "workshop", "festival", "party", "contest", "meetup", "showcase"]  # fmt: skip
_SYLLABLES = ["ba", "ko", "ri", "su", "te", "mo", "la", "ni", "po", "de", "ga", "vu"]
WORDS = _REAL + [a + b + "ra" for a in _SYLLABLES for b in _SYLLABLES]
VOCABULARY = len(WORDS)
CITIES = ["Chicago", "Detroit", "Atlanta", "Houston", "Memphis", "Dallas", "Cleveland", "Baltimore", "Oakland", "Miami"]
CATEGORIES = ["steppin", "salsa", "line-dance", "music", "social", "workshop", "gala", "festival"]


def seed(url: str, count: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        organizer = conn.execute(
            "INSERT INTO users (email, name, password_hash) "
            "VALUES ('org@bench.example', 'Org', 'scrypt$x') RETURNING id"
        ).fetchone()
        assert organizer is not None
        conn.execute(
            """INSERT INTO events (user_id, title, slug, description, event_date, location, category, tags,
                                   capacity, status, published_at)
               SELECT %(organizer)s,
                      initcap((%(words)s::text[])[1 + (g * 7) %% %(n)s] || ' '
                              || (%(words)s::text[])[1 + (g * 13 / 5) %% %(n)s] || ' '
                              || (%(words)s::text[])[1 + (g / 37) %% %(n)s]),
                      'bench-' || g,
                      'An evening of ' || (%(words)s::text[])[1 + (g / 7) %% %(n)s] || ' in '
                              || (%(cities)s::text[])[1 + g %% 10] || '. Doors open at seven.',
                      now() + make_interval(mins => (g * 37) %% 1051200) - interval '1 year',
                      (%(cities)s::text[])[1 + (g / 3) %% 10] || ', USA',
                      (%(categories)s::text[])[1 + (g / 5) %% 8],
                      ARRAY[(%(words)s::text[])[1 + (g / 11) %% %(n)s]],
                      50 + g %% 450,
                      CASE WHEN g %% 10 = 0 THEN 'draft' ELSE 'published' END,
                      CASE WHEN g %% 10 = 0 THEN NULL ELSE now() END
               FROM generate_series(1, %(count)s) AS g""",
            {
                "organizer": organizer[0],
                "words": WORDS,
                "n": VOCABULARY,
                "cities": CITIES,
                "categories": CATEGORIES,
                "count": count,
            },
        )
        conn.execute("ANALYZE events")
    return time.perf_counter() - started


class SignedClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        headers = envelope.sign(SIGNING_SECRET, method="GET", path=target, now=int(time.time()), identity=None)
        request = urllib.request.Request(self.base_url + target, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()


def timed(client: SignedClient, targets: list[str]) -> list[float]:
    latencies = []
    for target in targets:
        started = time.perf_counter()
        status, _, _ = client.get(target)
        latencies.append((time.perf_counter() - started) * 1000)
        assert status == 200, target
    return latencies


def throughput(client: SignedClient, target: str, seconds: float) -> float:
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.get(target)
        done += 1
    return done / seconds


def explain(url: str, statement: str, params: dict[str, Any]) -> list[str]:
    with psycopg.connect(url) as conn:
        if has_trgm(conn):
            conn.execute("SET pg_trgm.word_similarity_threshold = 0.5")
        return [row[0] for row in conn.execute("EXPLAIN " + statement, params).fetchall()]


def has_trgm(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() is not None


def summary(name: str, values: list[float]) -> dict[str, float]:
    print(f"{name} ms: {spread(values)}, p99 {percentile(values, 0.99):.2f}")
    return {f"{name}_p50_ms": round(statistics.median(values), 2), f"{name}_p99_ms": round(percentile(values, 0.99), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    rng = random.Random(7)

    from chalice.config import Config
    from chalice.local import ChaliceRequestHandler, create_local_server

    from functions.stepperslife.app import app

    # One access-log line per request on stderr would measure the terminal, not the API.
    ChaliceRequestHandler.log_message = lambda *args: None
    logging.getLogger("agistack").setLevel(logging.WARNING)

    with environment() as env:
        url = env.settings.database_url_for("stepperslife")
        print(f"seeded {args.events} events in {seed(url, args.events):.1f} s ({env.postgres} PostgreSQL)")
        port = free_port()
        server = create_local_server(app, Config.create(chalice_app=app, stage="bench"), "127.0.0.1", port)
        threading.Thread(target=server.server.serve_forever, daemon=True).start()
        client = SignedClient(f"http://127.0.0.1:{port}")
        uncached: Settings = dataclasses.replace(env.settings, redis=RedisSettings())
        try:
            configure(uncached)
            cursors: list[str] = []
            page = json.loads(client.get("/events?limit=20")[2])
            for _ in range(50):
                cursors.append(page["next_cursor"])
                page = json.loads(client.get(f"/events?limit=20&cursor={page['next_cursor']}")[2])
            list_targets = [
                rng.choice(
                    [
                        "/events?limit=20",
                        f"/events?limit=20&cursor={rng.choice(cursors)}",
                        f"/events?limit=20&category={rng.choice(CATEGORIES)}",
                        f"/events?limit=20&location={rng.choice(CITIES)}",
                    ]
                )
                for _ in range(args.requests)
            ]
            search_targets = [
                f"/events/search?q={rng.choice(WORDS)}%20{rng.choice(WORDS)}" for _ in range(args.requests // 2)
            ] + [f"/events/search?q={rng.choice(WORDS)[:-1]}x" for _ in range(args.requests // 2)]
            figures: dict[str, Any] = {}
            figures |= summary("list", timed(client, list_targets))
            figures |= summary("search", timed(client, search_targets))
            uncached_rps = throughput(client, "/events?limit=20", args.seconds)
            configure(env.settings)
            client.get("/events?limit=20")  # fill the cache
            cached_rps = throughput(client, "/events?limit=20", args.seconds)
            print(f"list requests/s: uncached {uncached_rps:.0f}, cached {cached_rps:.0f}")
        finally:
            server.server.shutdown()
            server.server.server_close()
        list_plan = explain(
            url,
            "SELECT id FROM events WHERE status = 'published' AND category = %(c)s ORDER BY event_date DESC, id DESC "
            "LIMIT 21",
            {"c": "salsa"},
        )
        first_page_plan = explain(
            url, "SELECT id FROM events WHERE status = 'published' ORDER BY event_date DESC, id DESC LIMIT 21", {}
        )
        search_plan = explain(
            url,
            "SELECT id FROM events WHERE status = 'published' AND search_vector @@ websearch_to_tsquery('english', "
            "%(q)s) ORDER BY ts_rank_cd(search_vector, websearch_to_tsquery('english', %(q)s), 32) DESC LIMIT 20",
            {"q": f"{WORDS[20]} {WORDS[40]}"},
        )
        fuzzy_plan = explain(
            url,
            "SELECT id FROM events WHERE status = 'published' AND lower(title) %%> lower(%(q)s) LIMIT 20",
            {"q": WORDS[30][:-1] + "x"},
        )
    plans = (
        ("list (first page)", first_page_plan),
        ("list by category", list_plan),
        ("search", search_plan),
        ("typo fallback", fuzzy_plan),
    )
    for name, plan in plans:
        print(f"EXPLAIN {name}:\n  " + "\n  ".join(plan))
    print(
        json.dumps(
            {
                "benchmark": "events_api",
                "postgres": env.postgres,
                "events": args.events,
                "requests": args.requests,
                **figures,
                "uncached_list_rps": round(uncached_rps, 1),
                "cached_list_rps": round(cached_rps, 1),
                "cached_to_uncached_rps_ratio": round(cached_rps / uncached_rps, 2),
                "list_uses_index": any("Index" in line for line in first_page_plan + list_plan),
                "search_uses_index": any("Bitmap Index Scan" in line for line in search_plan),
                "typo_fallback_uses_index": any("Bitmap Index Scan" in line for line in fuzzy_plan),
            }
        )
    )


if __name__ == "__main__":
    main()
