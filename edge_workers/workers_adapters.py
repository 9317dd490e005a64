"""Workers adapters: the edge core's ports over the Pyodide FFI (JS Request/Response, KV, fetch, env,
the Rate Limiting binding, the rate-limit Durable Object, ``ctx.waitUntil``).

With the workers' ``entry.py`` files, this is the only code that touches ``js``/``pyodide``. It runs
only inside Cloudflare Workers (or the Node + Pyodide harness); nothing here imports in CPython.
Bindings arrive either raw or wrapped by the ``workers`` SDK's env wrapper; both are handled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import js
from pyodide.ffi import JsException, create_once_callable, to_js

from edge_workers.core.composition import (
    LIMITER_OBJECTS_BINDING,
    WORKERS,
    build,
    required_rate_limit_bindings,
    route_table,
)
from edge_workers.core.config import ENV_VARIABLES, GatewayConfig
from edge_workers.core.context import GatewayDeps
from edge_workers.core.gateway import handle, reject
from edge_workers.core.http import EdgeRequest, EdgeResponse, Headers, OutboundRequest
from edge_workers.core.ports import (
    KV_BINDINGS,
    KV_MAX_LIST_LIMIT,
    KvKey,
    KvListResult,
    OriginTimeout,
    OriginUnavailable,
    check_kv_key,
    check_kv_keys,
    check_kv_list_limit,
    check_kv_put,
)
from edge_workers.core.turnstile import HttpSiteverify
from shared.errors import BadRequest, PayloadTooLarge

try:
    from pyodide.ffi import jsnull
except ImportError:  # older Pyodide turns JS null into None
    jsnull = None

# JS globals looked up once per isolate: each ``js.Name.attr`` lookup crosses the FFI twice, which costs
# tens of microseconds under Pyodide. ``fetch`` stays a per-call lookup, so that a replaced
# ``globalThis.fetch`` (as test harnesses install) is honoured.
_json_parse = js.JSON.parse
_array_from = getattr(js.Array, "from")  # "from" is a Python keyword
_new_promise = js.Promise.new
_abort_after = js.AbortSignal.timeout
_new_response = js.Response.new

# Statuses whose responses must not have a body: the JS Response constructor throws otherwise.
_NULL_BODY_STATUSES = (101, 103, 204, 205, 304)


def _is_null(value: Any) -> bool:
    return value is None or value is jsnull


def _js_object(values: dict[str, Any]) -> Any:
    """A plain JS object of JSON values. One string crosses the FFI: ``to_js`` would cross it once per
    value, which costs about twice as much for a response's init."""
    return _json_parse(json.dumps(values))


def _field(obj: Any, name: str) -> Any:
    """A property of a binding's result, whether the SDK converted it to a dict or left it a JS proxy."""
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return None if _is_null(value) else value


def _headers(js_headers: Any) -> Headers:
    # One conversion for all fields: crossing the FFI once per field costs more than the fields.
    return Headers([(str(name), str(value)) for name, value in _array_from(js_headers).to_py()])


def _header_list(headers: Headers) -> list[list[str]]:
    """Header fields as ``[[name, value], ...]``: a JS HeadersInit once in a JS object."""
    return [[name, value] for name, value in headers.items()]


class WorkersKv:
    """A KV namespace binding behind the ``KeyValueStore`` port."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def get(self, key: str) -> str | None:
        check_kv_key(key)
        value = await self._binding.get(key)
        return None if _is_null(value) else str(value)

    async def get_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        check_kv_keys(keys)
        # An array of keys makes ``get`` a bulk read, answered with a Map (a missing key maps to null).
        found = await self._binding.get(to_js(list(keys)))
        return {key: None if _is_null(value := found.get(key)) else str(value) for key in keys}

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


class WorkersRateLimitBinding:
    """A ``[[ratelimits]]`` binding: ``limit({key})`` resolves to ``{success}``."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def limit(self, key: str) -> bool:
        outcome = await self._binding.limit(_js_object({"key": key}))
        return _field(outcome, "success") is True


class WorkersLimiterObjects:
    """The ``RateLimiterObject`` namespace: one object per key name, called over Workers RPC."""

    def __init__(self, namespace: Any) -> None:
        self._namespace = namespace

    async def hit(self, name: str, limit: int, window_ms: int) -> str:
        stub = self._namespace.getByName(name)
        return str(await stub.hit(limit, window_ms))


class WorkersObjectStorage:
    """A Durable Object's ``ctx.storage`` (its async key-value API) behind the ``ObjectStorage`` port."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def get(self, key: str) -> str | None:
        value = await self._storage.get(key)
        return None if _is_null(value) else str(value)

    async def put(self, key: str, value: str) -> None:
        await self._storage.put(key, value)


class WorkersBackground:
    """``ctx.waitUntil``: the isolate stays alive until the deferred work is done."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def defer(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)

        # waitUntil takes a JS Promise; one that settles with the task (errors are handled by the core).
        def executor(resolve: Any, reject: Any) -> None:
            task.add_done_callback(lambda _done: resolve(None))

        self._ctx.waitUntil(_new_promise(create_once_callable(executor)))


class WorkersOriginClient:
    """Outbound fetch: redirects are not followed, and the timeout aborts the request."""

    async def fetch(self, request: OutboundRequest) -> EdgeResponse:
        init = _js_object({"method": request.method, "headers": _header_list(request.headers), "redirect": "manual"})
        init.signal = _abort_after(max(1, int(request.timeout * 1000)))
        if request.body:
            init.body = to_js(request.body)  # a Uint8Array
        try:
            response = await js.fetch(request.url, init)
            body = (await response.arrayBuffer()).to_bytes()
        except JsException as exc:
            if getattr(exc, "name", "") == "TimeoutError":
                raise OriginTimeout("the origin did not answer in time") from exc
            raise OriginUnavailable(str(exc)) from exc
        return EdgeResponse(status=int(response.status), headers=_headers(response.headers), body=body)


class WorkersBody:
    """The request's body: read whole when its declared length is within the limit (the core checks
    the declaration first), else streamed chunk by chunk and abandoned as soon as it passes the limit."""

    def __init__(self, js_request: Any, declared_length: str | None) -> None:
        self._js_request = js_request
        self._declared = declared_length

    async def read(self, limit: int) -> bytes:
        stream = self._js_request.body
        if _is_null(stream):
            return b""
        if self._declared is not None and self._declared.isdigit() and int(self._declared) <= limit:
            # One call across the FFI instead of one per chunk; the runtime enforces the declared length.
            whole: bytes = (await self._js_request.arrayBuffer()).to_bytes()
            if len(whole) > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            return whole
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


def _binding(env: Any, name: str) -> Any:
    value = getattr(env, name, None)
    return None if _is_null(value) else value


def build_deps(env: Any, worker: str) -> GatewayDeps:
    """A worker's composition root on Workers: configuration and bindings from ``env``.

    The adapters call the JS bindings themselves, so they take the JS env underneath the SDK's
    wrapper when there is one: the wrapper converts every argument and result generically, which
    costs about 0.2 ms per binding call under Pyodide.
    """
    env = getattr(env, "_env", env)
    spec = WORKERS[worker]
    config = GatewayConfig.from_mapping(env_values(env))
    stores = {name: WorkersKv(binding) for name in KV_BINDINGS if (binding := _binding(env, name)) is not None}
    rate_limits = {
        name: WorkersRateLimitBinding(binding)
        for name in required_rate_limit_bindings(route_table(spec, config))
        if (binding := _binding(env, name)) is not None
    }
    namespace = _binding(env, LIMITER_OBJECTS_BINDING)
    origin = WorkersOriginClient()
    return build(
        spec,
        config,
        stores=stores,
        origin=origin,
        siteverify=HttpSiteverify(origin, config.siteverify_url),
        bindings=rate_limits,
        objects=None if namespace is None else WorkersLimiterObjects(namespace),
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
        body=WorkersBody(js_request, headers.get("content-length")),
        # Set by Cloudflare for every request; a client cannot choose it.
        client_ip=headers.get("cf-connecting-ip") or "",
    )


def to_js_response(response: EdgeResponse) -> Any:
    body = None if response.status in _NULL_BODY_STATUSES or not response.body else to_js(response.body)
    return _new_response(body, _js_object({"status": response.status, "headers": _header_list(response.headers)}))


async def respond(entry: Any, request: Any, worker: str) -> Any:
    """Serve one request for a worker entrypoint (``entry``: a ``WorkerEntrypoint`` whose class has a
    ``deps`` attribute) and return the JS Response. The dependencies are built from ``env`` on the
    isolate's first request (env is not available at import) and reused by the next ones."""
    entrypoint = type(entry)
    deps: GatewayDeps | None = entrypoint.deps
    if deps is None:
        deps = entrypoint.deps = build_deps(entry.env, worker)
    converted = to_edge_request(request, deps)
    if isinstance(converted, EdgeResponse):
        return to_js_response(converted)
    return to_js_response(await handle(converted, deps, WorkersBackground(entry.ctx)))
