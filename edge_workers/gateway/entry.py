"""The gateway worker: Cloudflare's runtime calls ``Default.fetch`` for every request.

Deployed as ``entry.py`` at the root of the bundle that ``bundle.py`` stages (see wrangler.toml), so
``shared`` and ``edge_workers`` import as top-level packages here exactly as they do in CPython.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workers import Response, WorkerEntrypoint

from edge_workers.workers_adapters import build_deps, to_edge_request, to_js_response
from shared.edge.gateway import GatewayDeps, handle
from shared.edge.http import EdgeResponse


class Default(WorkerEntrypoint):  # type: ignore[misc]  # the SDK is untyped outside Pyodide
    # Built from ``env`` on the isolate's first request (env is not available at import) and reused.
    deps: ClassVar[GatewayDeps | None] = None

    async def fetch(self, request: Any) -> Response:
        deps = Default.deps
        if deps is None:
            deps = Default.deps = build_deps(self.env)
        converted = to_edge_request(request, deps)
        response = converted if isinstance(converted, EdgeResponse) else await handle(converted, deps)
        return Response(to_js_response(response))
