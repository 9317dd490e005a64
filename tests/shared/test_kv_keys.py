"""The KV keys the functions write for the edge to read: both sides name them through ``shared.kv_keys``."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from edge_workers.core.cache import NO_VERSION, ResponseCache
from edge_workers.core.http import EdgeResponse, Headers
from edge_workers.core.ports import SystemClock, SystemRandom
from edge_workers.local import SqliteKv
from functions.platform.adapters.cloudflare_kv import CloudflareEdgeCache, CloudflareKvNamespace, CloudflareKvPruner
from shared.kv_keys import endpoint_hash, family, push_subscription_key, version_key


def test_the_layouts() -> None:
    endpoint = "https://fcm.googleapis.com/fcm/send/abc"
    assert endpoint_hash(endpoint) == hashlib.sha256(endpoint.encode()).hexdigest()
    assert push_subscription_key(endpoint_hash(endpoint)) == "push:" + hashlib.sha256(endpoint.encode()).hexdigest()
    assert version_key("events") == "ver:events"
    assert [family(path) for path in ("/events", "/events/1/registrations", "/", "")] == [
        "events",
        "events",
        "root",
        "root",
    ]


class _KvApi:
    """Cloudflare's KV REST API as far as the functions use it (PUT and DELETE of one value), writing
    into the KV namespace the edge reads: the local adapter's SQLite store."""

    def __init__(self, store: SqliteKv) -> None:
        self.store = store
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/client/v4"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        store = self.store

        class Handler(BaseHTTPRequestHandler):
            def _key(self) -> str:
                return unquote(self.path.rsplit("/values/", 1)[1])

            def do_PUT(self) -> None:
                value = self.rfile.read(int(self.headers["Content-Length"])).decode()
                asyncio.run(store.put(self._key(), value))
                self._reply(200)

            def do_DELETE(self) -> None:
                asyncio.run(store.delete(self._key()))
                self._reply(200)

            def _reply(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def namespace(self) -> CloudflareKvNamespace:
        return CloudflareKvNamespace(api_base=self.url, account_id="acct", namespace_id="ns", api_token="t")


@pytest.fixture
def kv_api(tmp_path: Path) -> Iterator[_KvApi]:
    store = SqliteKv(tmp_path / "API_CACHE_KV.sqlite3")
    api = _KvApi(store)
    thread = threading.Thread(target=api._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api._server.shutdown()
        api._server.server_close()
        store.close()


def test_an_origin_invalidation_makes_the_edges_cached_read_miss(kv_api: _KvApi) -> None:
    edge = ResponseCache(kv_api.store, SystemClock(), SystemRandom())
    key = ResponseCache.key(family("/events"), "GET", "/events", "")

    async def cached_at(version: str) -> EdgeResponse | None:
        await edge.store(key, version, EdgeResponse(200, Headers({"content-type": "text/plain"}), b"x"), 300)
        return (await edge.lookup(family("/events"), key)).response

    assert asyncio.run(cached_at(NO_VERSION)) is not None
    CloudflareEdgeCache(kv_api.namespace()).invalidate(family("/events/42"))
    lookup = asyncio.run(edge.lookup("events", key))
    assert lookup.response is None and lookup.version != NO_VERSION
    assert asyncio.run(kv_api.store.get(version_key("events"))) == lookup.version


def test_the_origin_prunes_the_key_the_edge_stored(kv_api: _KvApi) -> None:
    endpoint = "https://fcm.googleapis.com/fcm/send/gone"
    # The push router's key for the subscription (edge_workers/core/push.py stores under it).
    key = push_subscription_key(endpoint_hash(endpoint))
    asyncio.run(kv_api.store.put(key, "{}"))
    CloudflareKvPruner(kv_api.namespace()).delete(endpoint_hash(endpoint))
    assert asyncio.run(kv_api.store.get(key)) is None
