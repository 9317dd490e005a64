"""Monitoring on the real database, Redis and Chalice app: ingest through the API with a site's
token, validation per sample, partitions, incremental rollups with late samples and concurrent runs,
cached dashboards that new rollups invalidate, alert states with exactly one notification per change,
and the public status page."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from functions.agistaffers.composition import container
from functions.agistaffers.services import partitions, rollups
from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.metrics import MAX_BATCH_SAMPLES
from functions.agistaffers.services.sites import SiteService
from shared.envelope import AGISTAFFERS, Identity
from tests.agistaffers.conftest import Tenants
from tests.conftest import ApiResponse, EdgeSignedClient


def this_minute() -> datetime:
    """The current minute, read when a test runs (the status page and rollups read the clock too)."""
    return rollups.floor_to(datetime.now(UTC), rollups.MINUTE)


def identity(actor: Actor) -> Identity:
    return Identity(user_id=actor.user_id, role=actor.role, email=actor.email, product=AGISTAFFERS)


def post_metrics(api: EdgeSignedClient, token: str, body: Any, *, ndjson: bool = False) -> ApiResponse:
    if ndjson:
        payload = b"\n".join(json.dumps(item).encode() for item in body)
        headers = {"content-type": "application/x-ndjson", "x-ingest-token": token}
        return api.request("POST", "/metrics", body=payload, headers=headers)
    return api.request("POST", "/metrics", json_body=body, headers={"authorization": f"Bearer {token}"})


def sample(metric: str, value: Any, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "value": value, "at": at.timestamp(), **extra}


@pytest.fixture(autouse=True)
def _container(configured_agi_app: Any) -> None:
    """These tests drive the installed container's services directly (``container()``)."""


def test_ingest_with_the_site_token_counts_what_it_accepts_and_why_it_refuses(
    agi_api: EdgeSignedClient, site: dict[str, Any], sql: psycopg.Connection[Any]
) -> None:
    now = datetime.now(UTC)
    batch = [
        sample("cpu_percent", 42.5, now, labels={"region": "eu-west"}),
        sample("custom.queue_depth", 7, now - timedelta(hours=1)),
        {"metric": "memory_percent", "value": 50, "at": now.isoformat()},
        sample("made_up", 1, now),
        sample("cpu_percent", "12", now),
        {"metric": "cpu_percent", "value": 1, "at": "yesterday"},
        sample("cpu_percent", 1, now + timedelta(minutes=10)),
        sample("cpu_percent", 1, now - timedelta(days=31)),  # business keeps 30 days
        sample("cpu_percent", 1, now, labels={"customer": "x"}),
        {"metric": "cpu_percent", "value": 1},
    ]
    response = post_metrics(agi_api, site["ingest_token"], {"samples": batch})
    assert response.status == 200, response.body
    answer = response.json
    assert answer["accepted"] == 3
    assert answer["refused"] == 7
    assert answer["reasons"] == {
        "unknown_metric": 1,
        "invalid_value": 1,
        "invalid_timestamp": 1,
        "timestamp_in_future": 1,
        "timestamp_beyond_retention": 1,
        "unknown_label": 1,
        "invalid_sample": 1,
    }
    assert [item["index"] for item in answer["refusals"]] == [3, 4, 5, 6, 7, 8, 9]
    rows = sql.execute("SELECT metric, value, labels FROM metric_samples ORDER BY metric").fetchall()
    assert rows == [
        ("cpu_percent", 42.5, {"region": "eu-west"}),
        ("custom.queue_depth", 7.0, None),
        ("memory_percent", 50.0, None),
    ]

    # A value JSON cannot hold as a finite float: 1e999 parses as infinity.
    infinite = b'[{"metric": "cpu_percent", "value": 1e999, "at": %d}]' % int(now.timestamp())
    response = agi_api.request("POST", "/metrics", body=infinite, headers={"x-ingest-token": site["ingest_token"]})
    assert response.json["reasons"] == {"invalid_value": 1}


def test_ndjson_batch_size_and_bad_bodies(agi_api: EdgeSignedClient, site: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    token = site["ingest_token"]
    response = post_metrics(agi_api, token, [sample("up", 1, now), sample("up", 0, now)], ndjson=True)
    assert response.json["accepted"] == 2
    too_many = [sample("up", 1, now)] * (MAX_BATCH_SAMPLES + 1)
    response = post_metrics(agi_api, token, too_many)
    assert response.status == 413
    assert response.json["error"]["details"]["max_samples"] == MAX_BATCH_SAMPLES
    response = agi_api.request("POST", "/metrics", body=b"{not json", headers={"x-ingest-token": token})
    assert response.status == 400
    assert post_metrics(agi_api, token, {"samples": "x"}).status == 422


def test_tokens_are_stored_hashed_rotatable_and_die_with_the_site(
    agi_api: EdgeSignedClient, sites: SiteService, owner: Actor, site: dict[str, Any], sql: psycopg.Connection[Any]
) -> None:
    old = site["ingest_token"]
    stored = sql.execute("SELECT ingest_token_hash FROM customer_sites WHERE id = %s", (site["id"],)).fetchone()
    assert stored is not None and old not in stored[0]
    batch = [sample("up", 1, datetime.now(UTC))]
    assert post_metrics(agi_api, "agi_ingest_guessed", batch).status == 401
    assert agi_api.request("POST", "/metrics", json_body=batch).json["error"]["code"] == "invalid_ingest_token"

    rotated = agi_api.request("POST", f"/sites/{site['id']}/ingest-token", identity=identity(owner))
    assert rotated.status == 200, rotated.body
    new = rotated.json["ingest_token"]
    assert post_metrics(agi_api, old, batch).status == 401
    assert post_metrics(agi_api, new, batch).json["accepted"] == 1

    sites.delete(owner, site["id"])
    assert post_metrics(agi_api, new, batch).status == 401


def test_another_customer_cannot_rotate_or_read(
    agi_api: EdgeSignedClient, tenants: Tenants, site: dict[str, Any]
) -> None:
    other = identity(tenants.owner())
    assert agi_api.request("POST", f"/sites/{site['id']}/ingest-token", identity=other).status == 404
    assert agi_api.request("GET", f"/sites/{site['id']}/metrics", identity=other).status == 404
    assert agi_api.request("GET", "/monitoring/overview", identity=other).status == 403


def test_partitions_are_made_ahead_and_dropped_whole(sql: psycopg.Connection[Any]) -> None:
    now = this_minute()
    old_day = (now - timedelta(days=400)).date()
    old = partitions.partition_name("metric_samples", old_day)
    start = datetime.combine(old_day, datetime.min.time(), UTC)
    sql.execute(
        f"CREATE TABLE {old} PARTITION OF metric_samples "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
    )
    with container().db.transaction() as conn:
        result = partitions.maintain(conn, now)
    assert result["dropped"] >= 1
    names = {row[0] for row in sql.execute("SELECT relname FROM pg_class WHERE relname LIKE 'metric_samples_p%'")}
    assert old not in names
    ahead = (now + timedelta(days=partitions.DAYS_AHEAD)).date()
    assert partitions.partition_name("metric_samples", ahead) in names


def _btrees(sql: psycopg.Connection[Any], partition: str) -> dict[str, bool]:
    """The partition's B-tree indexes by name, each with whether it is valid."""
    rows = sql.execute(
        "SELECT i.relname, x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_am a ON a.oid = i.relam WHERE a.amname = 'btree' AND x.indrelid = %s::regclass",
        (partition,),
    ).fetchall()
    return dict(rows)


def test_closed_days_get_the_site_btree_newest_first_and_today_stays_brin_only(sql: psycopg.Connection[Any]) -> None:
    now = this_minute()
    today = now.date()
    with container().db.transaction() as conn:
        partitions.maintain(conn, now)
    name = partitions.partition_name
    yesterday = name("metric_samples", today - timedelta(days=1))
    day_before = name("metric_samples", today - timedelta(days=2))
    for partition in (yesterday, day_before):  # whatever earlier runs built, from scratch here
        sql.execute(f"DROP INDEX IF EXISTS {partitions.btree_name(partition)}")
    with container().db.outside_transaction() as conn:
        built = partitions.index_closed_days(conn, now, limit=2)
    assert built == [yesterday, day_before]
    assert _btrees(sql, yesterday) == {partitions.btree_name(yesterday): True}
    assert _btrees(sql, day_before) == {partitions.btree_name(day_before): True}
    for ahead in range(partitions.DAYS_AHEAD + 1):  # today and the days ahead: BRIN only
        assert _btrees(sql, name("metric_samples", today + timedelta(days=ahead))) == {}
    # A build that died half-way leaves an invalid index: the next run builds it again.
    sql.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (partitions.btree_name(yesterday),)
    )
    with container().db.outside_transaction() as conn:
        assert partitions.index_closed_days(conn, now, limit=1) == [yesterday]
    assert _btrees(sql, yesterday) == {partitions.btree_name(yesterday): True}
    # The pooled connection went back in transaction mode.
    with container().db.transaction() as conn:
        assert conn.autocommit is False
    # A per-site read of a closed day can use it.
    site = "00000000-0000-0000-0000-000000000001"
    sql.execute("SET enable_seqscan = off")  # an empty partition: the planner would scan it whole
    plan = sql.execute(
        f"EXPLAIN SELECT value FROM {yesterday} WHERE site_id = %s AND metric = 'cpu_percent' ORDER BY at", (site,)
    ).fetchall()
    sql.execute("RESET enable_seqscan")
    assert partitions.btree_name(yesterday) in " ".join(row[0] for row in plan)


def test_minute_and_hour_rollups_are_incremental_and_fold_late_samples(
    site: dict[str, Any], sql: psycopg.Connection[Any]
) -> None:
    now = this_minute()
    ingest = container().metrics
    token = site["ingest_token"]
    base = now - timedelta(minutes=5)
    values = list(range(1, 21))
    ingest.ingest(token, [sample("response_time_ms", v, base + timedelta(seconds=v)) for v in values])
    runs = container().rollups.run(now=base + timedelta(minutes=1, seconds=5))
    assert runs[0].end == base + timedelta(minutes=1)
    row = sql.execute(
        "SELECT count, min, max, sum / count, p95 FROM metric_rollups_1m WHERE site_id = %s AND bucket = %s",
        (site["id"], base),
    ).fetchone()
    assert row == (20, 1.0, 20.0, 10.5, pytest.approx(19.05))

    # A late sample for that minute, inside the skew window: the next run folds it in.
    ingest.ingest(token, [sample("response_time_ms", 100, base + timedelta(seconds=30))])
    container().rollups.run(now=base + timedelta(minutes=2, seconds=5))
    row = sql.execute(
        "SELECT count, max FROM metric_rollups_1m WHERE site_id = %s AND bucket = %s", (site["id"], base)
    ).fetchone()
    assert row == (21, 100.0)
    marks = dict(sql.execute("SELECT name, done_until FROM rollup_watermarks").fetchall())
    assert marks["1m"] == base + timedelta(minutes=2)

    # The hour is built once its minutes are.
    hour = rollups.floor_to(base, rollups.HOUR)
    container().rollups.run(now=hour + timedelta(hours=1, minutes=1))
    row = sql.execute(
        "SELECT count, min, max FROM metric_rollups_1h WHERE site_id = %s AND bucket = %s", (site["id"], hour)
    ).fetchone()
    assert row == (21, 1.0, 100.0)


def test_a_second_rollup_run_at_once_does_nothing(agistaffers_url: str, site: dict[str, Any]) -> None:
    now = this_minute()
    container().rollups.run(now=now)
    with psycopg.connect(agistaffers_url) as holder:
        holder.execute("SELECT 1 FROM rollup_watermarks WHERE name = '1m' FOR UPDATE")
        runs = container().rollups.run(now=now + timedelta(minutes=1))
        assert runs[0].start is None


def test_dashboards_are_cached_and_new_rollups_invalidate_them(
    agi_api: EdgeSignedClient, owner: Actor, tenants: Tenants, site: dict[str, Any]
) -> None:
    now = this_minute()
    ingest = container().metrics
    base = now - timedelta(minutes=3)
    ingest.ingest(site["ingest_token"], [sample("cpu_percent", 30, base + timedelta(seconds=10))])
    container().rollups.run(now=base + timedelta(minutes=1))
    who = identity(owner)
    first = agi_api.request("GET", f"/sites/{site['id']}/metrics?range=1h", identity=who)
    assert first.status == 200, first.body
    assert first.json["cache"] == "miss"
    assert [point["avg"] for point in first.json["series"]["cpu_percent"]] == [30.0]
    second = agi_api.request("GET", f"/sites/{site['id']}/metrics?range=1h", identity=who)
    assert second.json["cache"] == "hit"
    assert second.json["series"] == first.json["series"]

    ingest.ingest(site["ingest_token"], [sample("cpu_percent", 50, base + timedelta(minutes=1, seconds=10))])
    container().rollups.run(now=base + timedelta(minutes=2))
    third = agi_api.request("GET", f"/sites/{site['id']}/metrics?range=1h", identity=who)
    assert third.json["cache"] == "miss"
    assert [point["avg"] for point in third.json["series"]["cpu_percent"]] == [30.0, 50.0]

    dashboard = agi_api.request("GET", "/dashboard", identity=who).json
    assert dashboard["sites"][0]["latest"]["cpu_percent"]["value"] == 50.0
    overview = agi_api.request("GET", "/monitoring/overview", identity=identity(tenants.staff))
    assert overview.status == 200
    assert overview.json["last_minute"]["samples"] == 1
    assert agi_api.request("GET", f"/sites/{site['id']}/metrics?range=2y", identity=who).status == 422


def add_rule(sql: psycopg.Connection[Any], site_id: Any, *, for_seconds: int, keep: int) -> None:
    sql.execute(
        "INSERT INTO alert_rules (site_id, metric, comparison, threshold, for_seconds, keep_firing_for_seconds) "
        "VALUES (%s, 'cpu_percent', '>', 80, %s, %s)",
        (site_id, for_seconds, keep),
    )


def minute_of_cpu(site: dict[str, Any], minute: datetime, value: float) -> None:
    container().metrics.ingest(site["ingest_token"], [sample("cpu_percent", value, minute + timedelta(seconds=5))])
    container().rollups.run(now=minute + timedelta(minutes=1))


def test_alert_goes_pending_firing_resolved_with_one_notification_per_change(
    site: dict[str, Any], sql: psycopg.Connection[Any]
) -> None:
    now = this_minute()
    add_rule(sql, site["id"], for_seconds=120, keep=90)
    evaluator = container().alerts
    start = now - timedelta(minutes=20)

    def state() -> str:
        row = sql.execute(
            "SELECT a.state FROM alerts a JOIN alert_rules r ON r.id = a.rule_id "
            "WHERE a.site_id = %s AND r.site_id = %s",
            (site["id"], site["id"]),
        ).fetchone()
        assert row is not None
        return str(row[0])

    timeline = [(0, 95, "pending"), (1, 96, "pending"), (2, 99, "firing"), (3, 97, "firing"), (4, 10, "firing")]
    timeline += [(5, 10, "resolved"), (6, 10, "resolved")]
    for offset, value, expected in timeline:
        minute = start + timedelta(minutes=offset)
        minute_of_cpu(site, minute, value)
        evaluator.evaluate(now=minute + timedelta(minutes=1))
        assert state() == expected, (offset, value)

    incident = sql.execute("SELECT opened_at, resolved_at, peak FROM incidents WHERE site_id = %s", (site["id"],))
    rows = incident.fetchall()
    assert len(rows) == 1
    assert rows[0][2] == 99.0
    assert rows[0][1] is not None
    notes = sql.execute(
        "SELECT topic, payload->>'state' FROM outbox WHERE topic = 'monitoring.alert' ORDER BY id"
    ).fetchall()
    assert notes == [("monitoring.alert", "firing"), ("monitoring.alert", "resolved")]


def test_two_evaluators_at_once_send_one_notification(site: dict[str, Any], sql: psycopg.Connection[Any]) -> None:
    now = this_minute()
    add_rule(sql, site["id"], for_seconds=0, keep=0)
    minute = now - timedelta(minutes=5)
    minute_of_cpu(site, minute, 99)
    barrier = threading.Barrier(4)
    results: list[dict[str, int]] = []

    def run() -> None:
        barrier.wait()
        results.append(container().alerts.evaluate(now=minute + timedelta(minutes=1)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result["firing"] for result in results) == 1
    assert sql.execute("SELECT count(*) FROM outbox WHERE payload->>'state' = 'firing'").fetchone() == (1,)
    assert sql.execute("SELECT count(*) FROM incidents").fetchone() == (1,)


def test_status_page_shows_uptime_incidents_and_escapes(
    agi_api: EdgeSignedClient, tenants: Tenants, sites: SiteService, sql: psycopg.Connection[Any]
) -> None:
    now = this_minute()
    owner = tenants.owner(company="<Bold> & Co")
    site = sites.add(owner, "bold.example.com", label="Shop <main>")
    start = now - timedelta(minutes=10)
    # 8 minutes up, 2 minutes down: 80% over every window.
    batch = [
        sample("up", 0 if minute >= 8 else 1, start + timedelta(minutes=minute, seconds=1)) for minute in range(10)
    ]
    container().metrics.ingest(site["ingest_token"], batch)
    container().rollups.run(now=now)
    slug = sql.execute("SELECT status_slug FROM customers WHERE id = %s", (owner.customer_id,)).fetchone()
    assert slug is not None and slug[0].startswith("bold-co-")
    response = agi_api.request("GET", f"/status/{slug[0]}")
    assert response.status == 200, response.body
    headers = {name.lower(): value for name, value in response.headers.items()}
    assert headers["content-type"].startswith("text/html")
    assert "s-maxage=30" in headers["cache-control"]
    html = response.body.decode()
    assert "&lt;Bold&gt; &amp; Co status" in html
    assert "Shop &lt;main&gt;" in html
    assert "<script" not in html
    assert html.count("80.00%") >= 4
    assert "Down" in html
    assert agi_api.request("GET", "/status/no-such-page").status == 404
