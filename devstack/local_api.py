"""Chalice's local API Gateway, taught API Gateway's greedy path variables (``/{proxy+}``).

Both APIs answer unknown paths with a catch-all ``/{proxy+}`` route (``functions.platform.http.install``).
API Gateway matches it for any path no other resource has; ``chalice.local`` matches a ``{name}`` one
segment at a time and answers deeper unknown paths with its own 403 ``Missing Authentication Token``
(aws/chalice#2072). The dev stack's server and the tests' client use this gateway so that locally, as
deployed, an unknown path is the app's 404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LambdaEventConverter,
    LocalDevServer,
    MatchResult,
    RouteMatcher,
)
from chalice.local import LocalGateway as ChaliceLocalGateway
from chalice.test import Client


class GreedyRouteMatcher(RouteMatcher):
    """``RouteMatcher``, and when no route matches, the route whose last segment is ``{name+}`` and
    whose parent is a prefix of the path (API Gateway's rule: the most specific resource wins)."""

    def match_route(self, url: str) -> MatchResult:
        try:
            return super().match_route(url)
        except ValueError:
            parsed = urlparse(url)
            path = parsed.path
            greedy = sorted(
                (route for route in self.route_urls if route.rsplit("/", 1)[-1].endswith("+}")),
                key=len,
                reverse=True,
            )
            for route in greedy:
                parent, _, variable = route.rpartition("/")
                if path.startswith(parent + "/") and len(path) > len(parent) + 1:
                    captured = {variable[1:-2]: path[len(parent) + 1 :]}
                    return MatchResult(route, captured, parse_qs(parsed.query, keep_blank_values=True))
            raise


class LocalGateway(ChaliceLocalGateway):
    def __init__(self, app_object: Chalice, config: Config) -> None:
        super().__init__(app_object, config)
        self.event_converter = LambdaEventConverter(
            GreedyRouteMatcher(list(app_object.routes)), app_object.api.binary_types
        )


class RequestHandler(ChaliceRequestHandler):
    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Chalice, config: Config) -> None:
        # ChaliceRequestHandler.__init__ serves the request as it is constructed: set the gateway first.
        self.local_gateway = LocalGateway(app_object, config)
        super(ChaliceRequestHandler, self).__init__(request, client_address, server)


def local_server(app: Chalice, host: str, port: int) -> LocalDevServer:
    """``chalice local``'s threaded server for ``app``, with the greedy-aware gateway."""
    return LocalDevServer(app, Config.create(chalice_app=app, stage="dev"), host, port, handler_cls=RequestHandler)


def api_client(app: Chalice) -> Client:
    """``chalice.test.Client`` for ``app``, its HTTP client on the greedy-aware gateway (Chalice
    offers no hook for the gateway: the attribute is private, and pinned by the tests that use it)."""
    client = Client(app)
    client.http._local_gateway = LocalGateway(app, client.http._config)
    return client
