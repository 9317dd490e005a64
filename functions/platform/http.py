"""The Chalice side of HTTP: envelope check, access rules, body parsing and the one place where
errors become responses. Route handlers stay thin: parse, call a service, shape the output.

Chalice answers some requests itself, in its own format (``{"Code": ...}`` for a wrong method, a
content type or an exception outside a view; API Gateway and ``chalice local`` answer an unknown path
with 403 ``Missing Authentication Token``). ``install`` closes those gaps for a whole app: routes
accept every content type (the glue decides, with 415 in our shape), a catch-all route answers unknown
paths with 404, and one middleware reshapes whatever Chalice still answers by itself, so that every
response of both APIs is ``{"error": {code, message, details}}``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

from chalice.app import Blueprint, Chalice, Request, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from functions.platform import jsonable, telemetry, tracing
from functions.platform.config import Settings
from functions.platform.idempotency import IdempotencyKeys, StoredResponse, check_key, request_hash
from shared import envelope, jsonbody
from shared.envelope import Identity
from shared.errors import (
    AppError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    internal_error_body,
)

log = logging.getLogger("agistack.api")

ModelT = TypeVar("ModelT", bound=BaseModel)
# How long the edge may keep a public read: the seed's API-response TTL.
PUBLIC_S_MAXAGE = 300
ANYONE: frozenset[str] = frozenset()
# Every type: Chalice would answer unlisted types itself, in its own error format; ``Call.json`` answers 415.
ACCEPTED_CONTENT_TYPES = ["*/*"]
# What the catch-all route answers (API Gateway's greedy path variable: any path no other route has).
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CATCH_ALL_PATHS = ("/", "/{proxy+}")
# Chalice's own error answers, by status, as our errors; any other status is an internal error.
_CHALICE_ERRORS: dict[int, type[AppError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body=jsonable.dumps(body),
        status_code=status,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
    )


def health_response(checks: dict[str, str]) -> Response:
    """``GET /healthz``: each dependency's state; 503 when one the service needs is down."""
    healthy = all(state in ("up", "not configured") for state in checks.values())
    return json_response(200 if healthy else 503, {"status": "ok" if healthy else "degraded", "checks": checks})


def public_read_response(call: Call, body: Any, *, cache_hit: bool | None = None) -> Response:
    """A GET answer the edge may cache: ETag, Cache-Control and 304 for anonymous readers; a reader
    with an identity may see drafts, so their answer is private."""
    payload = jsonable.dumps(body)
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if cache_hit is not None:
        headers["X-Origin-Cache"] = "HIT" if cache_hit else "MISS"
    if call.identity is not None:
        headers["Cache-Control"] = "private, no-store"
        return Response(body=payload, status_code=200, headers=headers)
    etag = '"' + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32] + '"'
    headers.update({"ETag": etag, "Cache-Control": f"public, max-age=60, s-maxage={PUBLIC_S_MAXAGE}"})
    if etag in [tag.strip() for tag in call.headers.get("if-none-match", "").split(",")]:
        return Response(body="", status_code=304, headers=headers)
    return Response(body=payload, status_code=200, headers=headers)


@dataclass(frozen=True)
class Call:
    """One verified request, as a handler sees it."""

    identity: Identity | None
    target: str  # the path with its query, as signed
    params: dict[str, str]
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise Unauthorized("sign in first", code="authentication_required")
        return self.identity

    def json(self, model: type[ModelT]) -> ModelT:
        content_type = self.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise UnsupportedMediaType("send the body as application/json")
        try:
            data = jsonbody.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("the body is not valid JSON", code="malformed_json") from exc
        return validate(model, data)

    def query_model(self, model: type[ModelT]) -> ModelT:
        values: dict[str, str] = {}
        for name, value in self.query:
            if name in values:
                raise ValidationFailed("a query parameter is repeated", details=[{"loc": [name]}])
            values[name] = value
        return validate(model, values)


def validate(model: type[ModelT], data: Any) -> ModelT:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        details = [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise ValidationFailed("the request is not valid", details=details) from exc


Handler = Callable[[Call], Any]


class HttpRuntime(Protocol):
    """What the HTTP glue needs from a product's composition root."""

    @property
    def settings(self) -> Settings: ...

    @property
    def idempotency(self) -> IdempotencyKeys: ...

    def current_identity(self, identity: Identity) -> Identity:
        """The caller as the database says now, or 401 ``session_revoked`` (functions/platform/sessions.py)."""
        ...


@dataclass(frozen=True)
class Operation:
    """One registered route, as the API description (``functions/platform/openapi.py``) reads it.

    ``body`` and ``query`` are the models the handler validates with ``Call.json`` and
    ``Call.query_model``; ``response`` the model of its success body (None: no body, e.g. 204);
    ``statuses`` other success statuses with the same body; ``errors`` the error statuses the handler
    itself raises beyond those the glue derives from the rule (401/403, 404 for path ids, 4xx of a body).
    """

    method: str
    path: str
    roles: frozenset[str]
    status: int
    signed: bool
    idempotent: bool
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    media_type: str
    statuses: tuple[int, ...]
    errors: tuple[int, ...]
    handler: Handler


class Router:
    """The route decorator of one product: only its identities count, its runtime serves the glue.
    Every registration is also recorded in ``operations``, the route table the API description is
    generated from."""

    def __init__(self, product: str, runtime: Callable[[], HttpRuntime]) -> None:
        self.product = product
        self._runtime = runtime
        self.operations: list[Operation] = []

    def __call__(
        self,
        app: Chalice | Blueprint,
        path: str,
        *,
        methods: list[str],
        roles: frozenset[str],
        status: int = 200,
        signed: bool = True,
        idempotent: bool = False,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        media_type: str = "application/json",
        statuses: tuple[int, ...] = (),
        errors: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Register a handler for ``path``. ``roles`` is the route's access rule: ``ANYONE`` or the
        roles allowed. ``signed=False`` only for health checks, which disclose nothing. ``idempotent``
        honours an ``Idempotency-Key`` header from an identified caller. The rest describes the
        contract (``Operation``); it changes nothing at run time."""

        def register(handler: Handler) -> Handler:
            for method in methods:
                self.operations.append(
                    Operation(
                        method=method,
                        path=path,
                        roles=roles,
                        status=status,
                        signed=signed,
                        idempotent=idempotent,
                        body=body,
                        query=query,
                        response=response,
                        media_type=media_type,
                        statuses=statuses,
                        errors=errors,
                        handler=handler,
                    )
                )

            def view(**uri_params: str) -> Response:
                request = app.current_request
                assert request is not None  # Chalice sets it before calling a view
                # The edge's traceparent, checked again here: an unsigned route (health) takes it from anyone.
                with tracing.traced(request.headers.get(tracing.HEADER)), telemetry.serving(self.product):
                    return self._respond(
                        request,
                        uri_params,
                        path=path,
                        handler=handler,
                        roles=roles,
                        status=status,
                        signed=signed,
                        idempotent=idempotent,
                    )

            view.__name__ = handler.__name__
            # HEAD is GET without the body (RFC 9110 9.3.2), for every read.
            served = [*methods, "HEAD"] if "GET" in methods else methods
            app.route(path, methods=served, content_types=ACCEPTED_CONTENT_TYPES)(view)
            return handler

        return register

    def _respond(
        self,
        request: Any,
        uri_params: dict[str, str],
        *,
        path: str,
        handler: Handler,
        roles: frozenset[str],
        status: int,
        signed: bool,
        idempotent: bool,
    ) -> Response:
        started = time.perf_counter()
        try:
            runtime = self._runtime()
            call = _verified_call(request, uri_params, runtime.settings, self.product, signed=signed)
            if call.identity is not None:
                # Never the session's word for the role: it may be days old.
                call = replace(call, identity=runtime.current_identity(call.identity))
            if roles and call.identity is None:
                raise Unauthorized("sign in first", code="authentication_required")
            if roles and call.identity is not None and call.identity.role not in roles:
                raise Forbidden("your role may not do this", code="role_forbidden")
            key = call.headers.get("idempotency-key")
            if key is not None:
                check_key(key)  # before any use: a key the claims table cannot hold is the client's error
            if idempotent and key and call.identity is not None:
                response = _run_once(
                    runtime.idempotency,
                    call,
                    route_name=f"{request.method} {path}",
                    key=key,
                    handler=handler,
                    status=status,
                )
            else:
                response = _run(call, handler, status)
        except AppError as exc:
            response = json_response(exc.status, exc.body(), exc.headers())
        except Exception:
            log.exception("unhandled error in %s %s", request.method, path)
            response = json_response(500, internal_error_body())
        if request.method == "HEAD":
            response.body = ""
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        # Keys of the JSON line (Powertools prints a record's extra attributes; it adds trace_id).
        log.info(
            "request",
            extra={
                "route": f"{request.method} {path}",
                "status": response.status_code,
                "request_id": request.headers.get("x-request-id", ""),
                "duration_ms": duration_ms,
            },
        )
        telemetry.record_request(self.product, f"{request.method} {path}", response.status_code, duration_ms)
        return response


def install(app: Chalice) -> None:
    """Every answer of ``app`` in the error shape: unknown paths 404 (the catch-all route, which API
    Gateway matches last and the dev stack's local gateway too: ``devstack/local_api.py``) and
    Chalice's own answers reshaped (405 keeps its ``Allow``)."""

    def unknown_route(**_: str) -> Response:
        unknown = NotFound("no such resource")
        return json_response(unknown.status, unknown.body())

    for path in CATCH_ALL_PATHS:
        app.route(path, methods=ALL_METHODS, content_types=ACCEPTED_CONTENT_TYPES, name=f"unknown_route{path}")(
            unknown_route
        )
    app.register_middleware(_error_shape, "http")


def _error_shape(request: Request, get_response: Callable[[Request], Response]) -> Response:
    try:
        response = get_response(request)
    except Exception:
        log.exception("unhandled error outside a view")
        return json_response(500, internal_error_body())
    body = response.body
    if not (isinstance(body, dict) and "Code" in body):  # ours are strings: this is Chalice's own answer
        return response
    kind = _CHALICE_ERRORS.get(response.status_code)
    if kind is None:
        log.error("Chalice answered %s by itself: %s", response.status_code, body.get("Code"))
        shaped = json_response(500, internal_error_body())
    else:
        error = kind(str(body.get("Message") or kind.code.replace("_", " ")))
        kept = {name: str(value) for name, value in response.headers.items() if name.lower() == "allow"}
        shaped = json_response(error.status, error.body(), kept)
    if request.method == "HEAD":
        shaped.body = ""
    return shaped


def _run(call: Call, handler: Handler, status: int) -> Response:
    result = handler(call)
    return result if isinstance(result, Response) else json_response(status, result)


def _run_once(
    store: IdempotencyKeys, call: Call, *, route_name: str, key: str, handler: Handler, status: int
) -> Response:
    """Run ``handler`` at most once per (user, route, key); a retry gets the first answer again."""
    assert call.identity is not None

    def respond() -> tuple[Response, StoredResponse]:
        try:
            result = handler(call)
        except AppError as exc:
            if exc.status >= 500:
                raise  # "not now" is no answer to remember: the claim is released and a retry runs again
            return json_response(exc.status, exc.body()), StoredResponse(exc.status, exc.body())
        if isinstance(result, Response):
            return result, StoredResponse(result.status_code, None)
        return json_response(status, result), StoredResponse(status, jsonable.json_ready(result))

    fingerprint = request_hash(route_name, call.target, call.body)
    answer = store.run_once(call.identity.user_id, route_name, key, fingerprint, respond)
    if isinstance(answer, StoredResponse):
        return json_response(answer.status, answer.body, {"Idempotent-Replayed": "true"})
    return answer


def _verified_call(request: Any, uri_params: dict[str, str], settings: Settings, product: str, *, signed: bool) -> Call:
    edge = settings.require_edge()
    raw = request.raw_body or b""
    body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if len(body) > edge.max_request_bytes:
        raise PayloadTooLarge(f"the body is larger than {edge.max_request_bytes} bytes")
    query: list[tuple[str, str]] = []
    if request.query_params:
        for name in request.query_params:
            query.extend((name, value) for value in request.query_params.getlist(name))
    headers = {name.lower(): value for name, value in request.headers.items()}
    path = request.path
    for name, value in uri_params.items():
        path = path.replace("{" + name + "}", value)
    target = f"{path}?{urlencode(query, quote_via=quote)}" if query else path
    identity = None
    if signed:
        identity = envelope.verify(
            edge.signing_secret,
            method=request.method,
            path=target,
            headers=headers,
            body=body,
            now=int(time.time()),
            max_skew_seconds=edge.max_skew_seconds,
        )
    if identity is not None and identity.product != product:
        # The edge forwards only this product's sessions; should another's arrive, it counts for nothing.
        identity = None
    return Call(identity=identity, target=target, params=uri_params, query=query, headers=headers, body=body)
