"""The local adapters keep Workers semantics: KV (SQLite) with its TTL minimum, expiry and sorted prefix
lists; the Rate Limiting binding and rate-limit Durable Object stand-ins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_workers.core.ports import KV_BINDINGS, KvError
from edge_workers.core.routes import Quota
from edge_workers.local import LocalLimiterObjects, LocalRateLimitBinding, SqliteKv, open_local_kv
from tests.edge.edge_helpers import FakeClock, run


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kv(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteKv]:
    store = SqliteKv(tmp_path / "kv" / "TEST_KV.sqlite3", clock=clock)
    yield store
    store.close()


def test_get_put_delete_round_trip(kv: SqliteKv) -> None:
    assert run(kv.get("missing")) is None
    run(kv.put("greeting", "hello ✓"))
    assert run(kv.get("greeting")) == "hello ✓"
    run(kv.put("greeting", "replaced"))
    assert run(kv.get("greeting")) == "replaced"
    run(kv.delete("greeting"))
    assert run(kv.get("greeting")) is None
    run(kv.delete("greeting"))  # deleting a missing key is not an error, as in Workers KV


@pytest.mark.parametrize("ttl", [0, 1, 59, -5, 60.5, True])
def test_expiration_ttl_below_the_workers_minimum_is_refused(kv: SqliteKv, ttl: Any) -> None:
    with pytest.raises(KvError, match="at least 60 seconds"):
        run(kv.put("k", "v", expiration_ttl=ttl))
    assert run(kv.get("k")) is None


@pytest.mark.parametrize("key", ["", ".", "..", "x" * 513])
def test_invalid_keys_are_refused(kv: SqliteKv, key: str) -> None:
    with pytest.raises(KvError):
        run(kv.put(key, "v"))


def test_expired_keys_are_invisible(kv: SqliteKv, clock: FakeClock) -> None:
    run(kv.put("session:a", "1", expiration_ttl=60))
    run(kv.put("session:b", "2", expiration_ttl=3600))
    run(kv.put("session:c", "3"))
    clock.current += 59
    assert run(kv.get("session:a")) == "1"
    clock.current += 1
    assert run(kv.get("session:a")) is None
    assert [key.name for key in run(kv.list(prefix="session:")).keys] == ["session:b", "session:c"]
    clock.current += 3600
    assert run(kv.get("session:b")) is None
    assert run(kv.get("session:c")) == "3"
    # Re-putting an expired key makes it live again.
    run(kv.put("session:a", "again", expiration_ttl=60))
    assert run(kv.get("session:a")) == "again"


def test_bulk_reads_answer_every_key_in_order_and_hide_expired_ones(kv: SqliteKv, clock: FakeClock) -> None:
    run(kv.put("a", "1"))
    run(kv.put("b", "2", expiration_ttl=60))
    assert run(kv.get_many(["b", "missing", "a"])) == {"b": "2", "missing": None, "a": "1"}
    clock.current += 60
    assert run(kv.get_many(["a", "b"])) == {"a": "1", "b": None}
    with pytest.raises(KvError):
        run(kv.get_many([]))
    with pytest.raises(KvError):
        run(kv.get_many([f"k{n}" for n in range(101)]))  # Workers KV reads at most 100 keys at once
    with pytest.raises(KvError):
        run(kv.get_many(["a", ""]))


def test_list_reports_expiration_as_epoch_seconds(kv: SqliteKv, clock: FakeClock) -> None:
    run(kv.put("a", "1", expiration_ttl=120))
    run(kv.put("b", "2"))
    keys = run(kv.list()).keys
    assert [(key.name, key.expiration) for key in keys] == [("a", int(clock.current) + 120), ("b", None)]


def test_list_by_prefix_is_sorted_and_paginated_with_a_cursor(kv: SqliteKv) -> None:
    names = [f"push:{i:03d}" for i in range(25)]
    for name in reversed(names):
        run(kv.put(name, "x"))
    run(kv.put("prefs:1", "x"))
    run(kv.put("push", "not under the prefix"))

    first = run(kv.list(prefix="push:", limit=10))
    assert [key.name for key in first.keys] == names[:10]
    assert not first.list_complete and first.cursor
    second = run(kv.list(prefix="push:", limit=10, cursor=first.cursor))
    assert [key.name for key in second.keys] == names[10:20]
    third = run(kv.list(prefix="push:", limit=10, cursor=second.cursor))
    assert [key.name for key in third.keys] == names[20:]
    assert third.list_complete and third.cursor is None

    everything = run(kv.list())
    assert [key.name for key in everything.keys] == sorted(["prefs:1", "push", *names])


def test_list_prefix_is_literal_not_a_pattern(kv: SqliteKv) -> None:
    run(kv.put("a%b", "1"))
    run(kv.put("axb", "2"))
    run(kv.put("a_c", "3"))
    assert [key.name for key in run(kv.list(prefix="a%")).keys] == ["a%b"]
    assert [key.name for key in run(kv.list(prefix="a_")).keys] == ["a_c"]


def test_list_sorts_by_utf8_bytes(kv: SqliteKv) -> None:
    for name in ["é", "z", "Z", "a"]:
        run(kv.put(name, "x"))
    assert [key.name for key in run(kv.list()).keys] == sorted(["é", "z", "Z", "a"], key=lambda k: k.encode())


def test_list_limit_must_be_within_workers_bounds(kv: SqliteKv) -> None:
    for limit in (0, 1001):
        with pytest.raises(KvError):
            run(kv.list(limit=limit))


def test_data_persists_across_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "kv" / "SESSION_KV.sqlite3"
    first = SqliteKv(path, clock=clock)
    run(first.put("session:x", "kept", expiration_ttl=600))
    run(first.put("prefs:1", "forever"))
    first.close()

    reopened = SqliteKv(path, clock=clock)
    try:
        assert run(reopened.get("session:x")) == "kept"
        assert run(reopened.get("prefs:1")) == "forever"
        clock.current += 601
        assert run(reopened.get("session:x")) is None  # the expiry survived the restart too
    finally:
        reopened.close()


def test_each_binding_has_its_own_file(tmp_path: Path, clock: FakeClock) -> None:
    stores = open_local_kv(tmp_path / "kv", clock=clock)
    try:
        assert sorted(stores) == sorted(KV_BINDINGS)
        run(stores["SESSION_KV"].put("k", "session"))
        assert run(stores["API_CACHE_KV"].get("k")) is None
        assert sorted(path.name for path in (tmp_path / "kv").glob("*.sqlite3")) == sorted(
            f"{name}.sqlite3" for name in KV_BINDINGS
        )
    finally:
        for store in stores.values():
            store.close()


def test_concurrent_use_from_many_tasks(kv: SqliteKv) -> None:
    async def scenario() -> list[str | None]:
        await asyncio.gather(*(kv.put(f"k{i:02d}", str(i)) for i in range(50)))
        return list(await asyncio.gather(*(kv.get(f"k{i:02d}") for i in range(50))))

    assert run(scenario()) == [str(i) for i in range(50)]


def test_local_rate_limit_binding_counts_a_window_from_the_first_hit(clock: FakeClock) -> None:
    binding = LocalRateLimitBinding(Quota(2, 10), clock)
    assert [run(binding.limit("a")) for _ in range(3)] == [True, True, False]
    assert run(binding.limit("b")) is True  # keys are independent
    clock.current += 9.9
    assert run(binding.limit("a")) is False
    clock.current += 0.1
    assert run(binding.limit("a")) is True


def test_local_limiter_objects_keep_one_window_per_name(clock: FakeClock) -> None:
    objects = LocalLimiterObjects(clock)
    answers = [json.loads(run(objects.hit("api:ip:1", 1, 60_000)))["allowed"] for _ in range(2)]
    assert answers == [True, False]
    assert json.loads(run(objects.hit("api:ip:2", 1, 60_000)))["allowed"] is True
