"""The push router worker: browser push subscriptions at the edge (``/push/*`` on the gateway's host).

Deployed as ``entry.py`` at the root of the bundle that ``edge_workers/bundle.py`` stages, like the
gateway. It runs the same pipeline with the push route table; sending notifications is the
functions' job (pywebpush), not the edge's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workers import WorkerEntrypoint

from edge_workers.core.context import GatewayDeps
from edge_workers.workers_adapters import respond


class Default(WorkerEntrypoint):  # type: ignore[misc]  # the SDK is untyped outside Pyodide
    # Built by ``respond`` on the isolate's first request and reused.
    deps: ClassVar[GatewayDeps | None] = None

    async def fetch(self, request: Any) -> Any:
        # A JS Response: the runtime hands it back as it is (a workers.Response would be unwrapped).
        return await respond(self, request, "push")
