"""The gateway worker: Cloudflare's runtime calls ``Default.fetch`` for every request.

Deployed as ``entry.py`` at the root of the bundle that ``edge_workers/bundle.py`` stages (see
wrangler.toml), so ``shared`` and ``edge_workers`` import as top-level packages here exactly as they
do in CPython. ``RateLimiterObject`` is the sliding-window rate-limit Durable Object; the push router
binds to it in this worker (``script_name``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from workers import DurableObject, WorkerEntrypoint

from edge_workers.core.context import GatewayDeps
from edge_workers.core.ports import SystemClock
from edge_workers.core.ratelimit import SlidingWindowObject
from edge_workers.workers_adapters import WorkersObjectStorage, respond


class Default(WorkerEntrypoint):  # type: ignore[misc]  # the SDK is untyped outside Pyodide
    # Built by ``respond`` on the isolate's first request and reused.
    deps: ClassVar[GatewayDeps | None] = None

    async def fetch(self, request: Any) -> Any:
        # A JS Response: the runtime hands it back as it is (a workers.Response would be unwrapped).
        return await respond(self, request, "gateway")


class RateLimiterObject(DurableObject):  # type: ignore[misc]
    """One key's sliding window; called over RPC as ``stub.hit(limit, window_ms)``."""

    window: SlidingWindowObject | None = None

    async def hit(self, limit: int, window_ms: int) -> str:
        if self.window is None:
            self.window = SlidingWindowObject(WorkersObjectStorage(self.ctx.storage), SystemClock())
        return await self.window.hit(int(limit), int(window_ms))
