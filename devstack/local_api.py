"""Chalice's local API Gateway, taught API Gateway's greedy path variables (``/{proxy+}``).

Both APIs answer unknown paths with a catch-all ``/{proxy+}`` route (``functions.platform.http.install``).
API Gateway matches it for any path no other resource has; ``chalice.local`` matches a ``{name}`` one
segment at a time and answers deeper unknown paths with its own 403 ``Missing Authentication Token``
(aws/chalice#2072). The dev stack's server and the tests' client use this gateway so that locally, as
deployed, an unknown path is the app's 404.

The dev stack serves each app with uvicorn (``edge_workers.local_server``) rather than ``chalice
local``'s ``http.server``, whose listen queue of 5 overflowed under a burst of connections and whose
keep-alive answers stalled on Nagle's algorithm: ``ChaliceAsgi`` turns an HTTP request into the
gateway's call, in a worker thread (the app is synchronous), as ``chalice local``'s handler does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import LambdaEventConverter, LocalGatewayException, MatchResult, RouteMatcher
from chalice.local import LocalGateway as ChaliceLocalGateway
from chalice.test import Client

from edge_workers.local_server import BackgroundServer, Receive, Scope, Send, read_body, send_response
from shared.errors import AppError

# API Gateway's payload limit (REST APIs): a larger request never reaches the function.
MAX_BODY_BYTES = 10 * 1024 * 1024


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


class _PerThreadRequest:
    """``Chalice.current_request``, one per thread. Chalice keeps the request it serves on the app
    object, which Lambda serves one request at a time; served from several threads at once, each
    view must still read its own request, not the one another thread set a moment later."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __get__(self, app: object, owner: type | None = None) -> Any:
        return getattr(self._local, "request", None)

    def __set__(self, app: object, request: Any) -> None:
        self._local.request = request


def serve_requests_per_thread(app: Chalice) -> None:
    """Make ``app.current_request`` per thread (idempotent)."""
    if not isinstance(type(app).__dict__.get("current_request"), _PerThreadRequest):
        app.__class__ = type(type(app).__name__, (type(app),), {"current_request": _PerThreadRequest()})


class ChaliceAsgi:
    """A Chalice app as an ASGI app, through the greedy-aware local gateway (one per worker thread)."""

    def __init__(self, app: Chalice) -> None:
        serve_requests_per_thread(app)
        self._app = app
        self._config = Config.create(chalice_app=app, stage="dev")
        self._gateways = threading.local()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            body = await read_body(receive, MAX_BODY_BYTES) or None  # None when empty, as chalice local passes it
        except AppError as error:
            refused = [(b"content-type", b"application/json"), (b"connection", b"close")]
            await send_response(send, error.status, refused, json.dumps(error.body()).encode())
            return
        query = scope["query_string"].decode("latin-1")
        path = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        status, response_headers, response_body = await asyncio.to_thread(
            self._handle, scope["method"], path, headers, body
        )
        await send_response(send, status, _asgi_headers(response_headers), response_body)

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str | list[str]], bytes]:
        gateway = getattr(self._gateways, "gateway", None)
        if gateway is None:
            gateway = self._gateways.gateway = LocalGateway(self._app, self._config)
        try:
            response = gateway.handle_request(method=method, path=path, headers=headers, body=body)
        except LocalGatewayException as error:
            return error.CODE, dict(error.headers), error.body or b""
        merged: dict[str, str | list[str]] = {**response["headers"], **response.get("multiValueHeaders", {})}
        raw = response["body"]
        if response.get("isBase64Encoded"):
            raw = base64.b64decode(raw)
        return int(response["statusCode"]), merged, raw.encode("utf-8") if isinstance(raw, str) else raw or b""


def _asgi_headers(headers: dict[str, str | list[str]]) -> list[tuple[bytes, bytes]]:
    pairs = []
    if not any(name.lower() == "content-type" for name in headers):
        pairs.append((b"content-type", b"application/json"))  # chalice local's default
    for name, values in headers.items():
        if name.lower() in ("content-length", "connection", "transfer-encoding"):
            continue  # the server frames the answer
        for value in values if isinstance(values, list) else [values]:
            pairs.append((name.encode("latin-1"), str(value).encode("latin-1")))
    return pairs


def local_server(app: Chalice, host: str, port: int) -> BackgroundServer:
    """``app`` served on ``host:port`` (not started)."""
    return BackgroundServer(ChaliceAsgi(app), host, port, name=f"api-{app.app_name}")


def api_client(app: Chalice) -> Client:
    """``chalice.test.Client`` for ``app``, its HTTP client on the greedy-aware gateway (Chalice
    offers no hook for the gateway: the attribute is private, and pinned by the tests that use it)."""
    client = Client(app)
    client.http._local_gateway = LocalGateway(app, client.http._config)
    return client
