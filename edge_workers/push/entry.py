"""The push router worker: browser push subscriptions at the edge (``/push/*`` on the gateway's host).

Deployed as ``entry.py`` at the root of the bundle that ``edge_workers/bundle.py`` stages, like the
gateway. It runs the same pipeline with the push route table; sending notifications is the
functions' job (pywebpush), not the edge's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workers import Response, WorkerEntrypoint

from edge_workers.workers_adapters import WorkersBackground, build_deps, to_edge_request, to_js_response
from shared.edge.context import GatewayDeps
from shared.edge.gateway import handle
from shared.edge.http import EdgeResponse


class Default(WorkerEntrypoint):  # type: ignore[misc]  # the SDK is untyped outside Pyodide
    # Built from ``env`` on the isolate's first request (env is not available at import) and reused.
    deps: ClassVar[GatewayDeps | None] = None

    async def fetch(self, request: Any) -> Response:
        deps = Default.deps
        if deps is None:
            deps = Default.deps = build_deps(self.env, "push")
        converted = to_edge_request(request, deps)
        if isinstance(converted, EdgeResponse):
            return Response(to_js_response(converted))
        response = await handle(converted, deps, WorkersBackground(self.ctx))
        return Response(to_js_response(response))
