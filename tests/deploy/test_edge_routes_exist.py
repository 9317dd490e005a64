"""Every edge route that forwards to an origin reaches a route that exists there.

The edge's route tables (``edge_workers/core/routes.py``) and the origins' Chalice apps are written
separately; this walks the tables and looks each upstream path and method up in the app the origin
runs (``app.routes``: path pattern -> {method: entry}). An exact route must match one Chalice pattern
(``{param}`` matches one segment) that has each of its methods; a prefix route must have, for each of
its methods, at least one route under it. HEAD is answered by the GET route. A handler that calls the
origin at a path of its own (preferences, push subscriptions) must call the route's upstream path.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from edge_workers.core import preferences, push
from edge_workers.core.routes import GATEWAY_ROUTES, MEDIA, PUSH_ROUTES, Handler, Route
from shared.envelope import AGISTAFFERS, STEPPERSLIFE

# The Chalice app module each origin runs.
ORIGIN_APPS = {
    STEPPERSLIFE: "functions.stepperslife.app",
    AGISTAFFERS: "functions.agistaffers.app",
}
# Origins that are not Chalice apps, and why nothing is looked up for them.
NOT_CHALICE = {MEDIA: "the public media prefix of the bucket, served as stored objects"}
# Handlers that call the origin at a fixed path rather than the request's own.
HANDLER_TARGETS = {Handler.PREFERENCES: preferences.ORIGIN_PATH, Handler.PUSH_SUBSCRIPTION: push.ORIGIN_PATH}


def _routes_with_origins() -> Iterator[Route]:
    for route in (*GATEWAY_ROUTES, *PUSH_ROUTES):
        if route.origin is not None:
            yield route


def _app_routes(origin: str) -> Mapping[str, Mapping[str, Any]]:
    module_name = ORIGIN_APPS[origin]
    package = module_name.rpartition(".")[0]
    # The package is checked first: find_spec of a module whose package is missing raises.
    if importlib.util.find_spec(package) is None or importlib.util.find_spec(module_name) is None:
        pytest.skip(f"the {origin} origin's app module {module_name} does not exist yet")
    routes: Mapping[str, Mapping[str, Any]] = importlib.import_module(module_name).app.routes
    return routes


def _pattern(chalice_path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", chalice_path)
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts))


def _origin_method(method: str) -> str:
    return "GET" if method == "HEAD" else method


def test_every_origin_is_an_app_or_named_as_not_one() -> None:
    origins = {route.origin for route in _routes_with_origins()}
    assert origins <= set(ORIGIN_APPS) | set(NOT_CHALICE)


@pytest.mark.parametrize(
    "route",
    [route for route in _routes_with_origins() if route.origin in ORIGIN_APPS],
    ids=lambda route: f"{route.origin}:{route.path}",
)
def test_the_upstream_route_exists_at_its_origin(route: Route) -> None:
    assert route.origin is not None
    app_routes = _app_routes(route.origin)
    upstream = route.upstream_path(route.path)
    if route.handler in HANDLER_TARGETS:
        assert HANDLER_TARGETS[route.handler] == upstream, f"{route.handler} calls another path than its route's"
    missing = []
    for method in sorted(route.methods):
        wanted = _origin_method(method)
        if route.exact:
            found = any(
                _pattern(path).fullmatch(upstream) and wanted in methods for path, methods in app_routes.items()
            )
        else:
            found = any(path.startswith(upstream) and wanted in methods for path, methods in app_routes.items())
        if not found:
            missing.append(f"{method} {upstream}")
    assert not missing, f"{route.path} forwards to what {route.origin} does not serve: {missing}"
