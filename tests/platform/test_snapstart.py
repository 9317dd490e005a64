"""The SnapStart hook drops every real connection a container holds, and the container reconnects."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest

from functions.platform import snapstart
from functions.platform.adapters.postgres import DatabaseUnavailable
from functions.platform.composition import Installed, ProductContainer
from functions.platform.config import DatabaseSettings, EdgeSettings, RedisSettings, Settings


class ProbeContainer(ProductContainer):
    # The database every server has: this test looks at connections, not at a product's tables.
    database_name: ClassVar[str] = "postgres"


def backend_pid(container: ProductContainer) -> int:
    with container.db.transaction() as conn:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def live_backends(container: ProductContainer) -> set[int]:
    with container.db.transaction() as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity").fetchall()
    return {int(row["pid"]) for row in rows}


def test_after_restore_hook_closes_pool_and_redis_and_the_container_reconnects(
    pg_server_url: str, redis_url: str
) -> None:
    installed = Installed(ProbeContainer)
    settings = Settings(
        database=DatabaseSettings(pg_server_url), edge=EdgeSettings("s" * 32), redis=RedisSettings(redis_url)
    )
    before = installed.configure(settings)
    old_pid = backend_pid(before)
    old_redis_id = int(before.redis.client_id())

    snapstart.reopen_connections()

    after = installed.get()
    assert after is not before, "the hook must drop the container, not keep its pool"
    new_pid = backend_pid(after)
    assert new_pid != old_pid
    # The old backend goes away once the server sees the socket closed (asynchronously, but fast).
    deadline = time.monotonic() + 5
    while old_pid in live_backends(after) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old_pid not in live_backends(after), "the pre-snapshot PostgreSQL connection is still open"
    redis_ids = {int(client["id"]) for client in after.redis.client_list()}
    assert old_redis_id not in redis_ids, "the pre-snapshot Redis connection is still open"
    assert int(after.redis.client_id()) in redis_ids
    with pytest.raises(DatabaseUnavailable):
        before.db.ping()  # the old pool is closed for good: whoever kept it gets a 503, not a dead socket
    installed.reopen()


def test_register_hooks_is_a_no_op_outside_lambda() -> None:
    # snapshot_restore_py exists only in Lambda's runtime; importing the apps must still work here.
    assert snapstart.register_hooks() is False
