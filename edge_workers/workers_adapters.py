"""Workers adapters: the edge core's ports over the Pyodide FFI (JS Request/Response, KV, fetch, env).

With the workers' ``entry.py`` files, this is the only code that touches ``js``/``pyodide``. It runs
only inside Cloudflare Workers (or the Node + Pyodide harness); nothing here imports in CPython.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import js
from pyodide.ffi import JsException, to_js

from shared.edge.config import ENV_VARIABLES, ConfigurationError, GatewayConfig
from shared.edge.gateway import GatewayDeps, reject
from shared.edge.http import EdgeRequest, EdgeResponse, Headers, OutboundRequest
from shared.edge.ports import (
    KV_BINDINGS,
    KV_MAX_LIST_LIMIT,
    KvKey,
    KvListResult,
    KvNamespaces,
    OriginTimeout,
    OriginUnavailable,
    check_kv_key,
    check_kv_list_limit,
    check_kv_put,
)
from shared.errors import BadRequest, PayloadTooLarge

try:
    from pyodide.ffi import jsnull
except ImportError:  # older Pyodide turns JS null into None
    jsnull = None

# Statuses whose responses must not have a body: the JS Response constructor throws otherwise.
_NULL_BODY_STATUSES = (101, 103, 204, 205, 304)


def _is_null(value: Any) -> bool:
    return value is None or value is jsnull


def _js_object(values: dict[str, Any]) -> Any:
    return to_js(values, dict_converter=js.Object.fromEntries)


def _field(obj: Any, name: str) -> Any:
    """A property of a KV result, whether the SDK converted it to a dict or left it a JS proxy."""
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return None if _is_null(value) else value


def _headers(js_headers: Any) -> Headers:
    return Headers([(str(name), str(value)) for name, value in js_headers])


def _js_headers(headers: Headers) -> Any:
    result = js.Headers.new()
    for name, value in headers.items():
        result.append(name, value)
    return result


class WorkersKv:
    """A KV namespace binding (raw or wrapped by the SDK) behind the ``KeyValueStore`` port."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def get(self, key: str) -> str | None:
        check_kv_key(key)
        value = await self._binding.get(key)
        return None if _is_null(value) else str(value)

    async def put(self, key: str, value: str, *, expiration_ttl: int | None = None) -> None:
        check_kv_put(key, value, expiration_ttl)
        options = {} if expiration_ttl is None else {"expirationTtl": expiration_ttl}
        await self._binding.put(key, value, _js_object(options))

    async def delete(self, key: str) -> None:
        check_kv_key(key)
        await self._binding.delete(key)

    async def list(
        self, *, prefix: str = "", limit: int = KV_MAX_LIST_LIMIT, cursor: str | None = None
    ) -> KvListResult:
        check_kv_list_limit(limit)
        options: dict[str, Any] = {"prefix": prefix, "limit": limit}
        if cursor:
            options["cursor"] = cursor
        result = await self._binding.list(_js_object(options))
        keys = []
        for entry in _field(result, "keys") or []:
            expiration = _field(entry, "expiration")
            keys.append(KvKey(str(_field(entry, "name")), None if expiration is None else int(expiration)))
        complete = bool(_field(result, "list_complete"))
        next_cursor = _field(result, "cursor")
        return KvListResult(
            keys=keys, list_complete=complete, cursor=None if complete or next_cursor is None else str(next_cursor)
        )


class WorkersOriginClient:
    """Outbound fetch: redirects are not followed, and the timeout aborts the request."""

    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        init: dict[str, Any] = {
            "method": request.method,
            "headers": _js_headers(request.headers),
            "redirect": "manual",
            "signal": js.AbortSignal.timeout(max(1, int(request.timeout * 1000))),
        }
        if request.body:
            init["body"] = to_js(request.body)
        try:
            response = await js.fetch(request.url, _js_object(init))
            body = (await response.arrayBuffer()).to_bytes()
        except JsException as exc:
            if getattr(exc, "name", "") == "TimeoutError":
                raise OriginTimeout("the origin did not answer in time") from exc
            raise OriginUnavailable(str(exc)) from exc
        return EdgeResponse(status=int(response.status), headers=_headers(response.headers), body=body)


class WorkersBody:
    """The request's body stream, read chunk by chunk and abandoned as soon as it passes the limit."""

    def __init__(self, js_request: Any) -> None:
        self._js_request = js_request

    async def read(self, limit: int) -> bytes:
        stream = self._js_request.body
        if _is_null(stream):
            return b""
        reader = stream.getReader()
        data = bytearray()
        while True:
            chunk = await reader.read()
            if chunk.done:
                return bytes(data)
            data += chunk.value.to_bytes()
            if len(data) > limit:
                await reader.cancel()
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")


def env_values(env: Any, names: Iterable[str] = ENV_VARIABLES) -> dict[str, str]:
    """The named variables and secrets of the worker's ``env`` as plain strings."""
    values = {}
    for name in names:
        value = getattr(env, name, None)
        if not _is_null(value):
            values[name] = str(value)
    return values


def build_deps(env: Any) -> GatewayDeps:
    """The gateway's composition root on Workers: configuration and bindings from ``env``."""
    missing = [name for name in KV_BINDINGS if _is_null(getattr(env, name, None))]
    if missing:
        raise ConfigurationError(f"missing KV bindings: {', '.join(missing)}")
    return GatewayDeps(
        config=GatewayConfig.from_mapping(env_values(env)),
        kv=KvNamespaces.from_mapping({name: WorkersKv(getattr(env, name)) for name in KV_BINDINGS}),
        origin=WorkersOriginClient(),
    )


def to_edge_request(request: Any, deps: GatewayDeps) -> EdgeRequest | EdgeResponse:
    """The core's view of a JS Request, or the error response when its header fields are unusable."""
    js_request = getattr(request, "js_object", request)
    url = urlsplit(str(js_request.url))
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    method = str(js_request.method)
    try:
        headers = _headers(js_request.headers)
    except ValueError:
        return reject(BadRequest("malformed header field"), deps, method=method, raw_path=url.path)
    return EdgeRequest(
        method=method,
        target=target,
        headers=headers,
        body=WorkersBody(js_request),
        client_ip=headers.get("cf-connecting-ip") or "",
    )


def to_js_response(response: EdgeResponse) -> Any:
    body = None if response.status in _NULL_BODY_STATUSES or not response.body else to_js(response.body)
    return js.Response.new(body, _js_object({"status": response.status, "headers": _js_headers(response.headers)}))
