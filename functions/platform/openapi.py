"""The OpenAPI 3.1 document of an API, generated from its route table (``Router.operations``) and
its pydantic models; nothing is written per route by hand.

Each operation states its access rule twice: as ``security`` (the edge's session cookie; the origin
itself sees only the identity the edge signed) and as ``x-access`` (the roles, or ``anyone``). Its
responses are the success body's model and the error shape (``ErrorBody``) under every status the
glue can answer for it: 401/403 from the rule, 404 for a path id, 400/413/415/422 for a body, 422 for
a query, 409/422 for an ``Idempotency-Key``, 503 when a dependency is down, plus the statuses the
route declares (``errors=``). pydantic v2 writes JSON Schema 2020-12, which OpenAPI 3.1 uses as is.

``serve`` registers ``GET /openapi.json`` on the product's own router: the document is built once,
on first use, from whatever routes the app registered (a route added later is described too).
"""

from __future__ import annotations

import re
from functools import cache
from http import HTTPStatus
from typing import Any

from chalice.app import Blueprint, Response
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from functions.platform.http import ANYONE, Call, Operation, Router, public_read_response
from functions.platform.idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN

OPENAPI_VERSION = "3.1.0"
SPEC_PATH = "/openapi.json"
SESSION_COOKIE = "__Host-session"
REF_TEMPLATE = "#/components/schemas/{model}"
# Every route reads PostgreSQL or Redis: either being down is a fast 503 (functions/platform/adapters).
DEPENDENCY_ERRORS = (503,)
BODY_ERRORS = (400, 413, 415, 422)
_PATH_PARAM = re.compile(r"\{([^}]+)\}")
# The JSON Schema of each model, by the way it is used: read from a request or written in an answer.
Schemas = dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(title="ErrorDetail")

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer of both APIs: ``shared.errors.AppError.body``."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class OpenApiDocument(BaseModel):
    """The document's required top-level fields (the rest is OpenAPI's own schema)."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


def error_statuses(operation: Operation) -> list[int]:
    """The error statuses ``operation`` may answer: those of its rule and inputs, and its own."""
    found: set[int] = set(operation.errors)
    if operation.signed:
        found.add(401)  # a bad envelope, a revoked session
    if operation.roles:
        found.update((401, 403))
    if _PATH_PARAM.search(operation.path):
        found.add(404)  # a malformed or unknown id
    if operation.body is not None:
        found.update(BODY_ERRORS)
    if operation.query is not None:
        found.add(422)
    if operation.idempotent:
        found.update((409, 422))
    found.update(DEPENDENCY_ERRORS)
    return sorted(found - {operation.status, *operation.statuses})


def access_rule(operation: Operation) -> dict[str, Any]:
    if not operation.roles:
        return {"roles": ["anyone"], "signed": operation.signed}
    return {"roles": sorted(operation.roles), "signed": operation.signed}


def _access_text(operation: Operation) -> str:
    if not operation.roles:
        return "Access: anyone." if operation.signed else "Access: anyone; not signed by the edge."
    return "Access: signed in, with role " + " or ".join(sorted(operation.roles)) + "."


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A query model's fields as parameters (by alias); an optional field is one that may be left out,
    so its ``null`` alternative is dropped (a query string cannot say null)."""
    required = set(schema.get("required", ()))
    parameters = []
    for name, declared in schema.get("properties", {}).items():
        field = {key: value for key, value in declared.items() if key not in ("default", "title", "anyOf")}
        options = [option for option in declared.get("anyOf", []) if option != {"type": "null"}]
        if len(options) == 1:
            field.update(options[0])
        elif options:
            field["anyOf"] = options
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": field})
    return parameters


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _response(description: str, media_type: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _ref_name(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rpartition("/")[2]


def _operation(operation: Operation, schemas: Schemas, components: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM.findall(operation.path)
    ]
    if operation.query is not None:
        parameters += _query_parameters(components[_ref_name(schemas[(operation.query, "validation")])])
    if operation.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A retry with the same key gets the first answer again (Idempotent-Replayed: true).",
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN.pattern},
            }
        )
    if operation.response is None:
        success_schema = None if operation.media_type == "application/json" else {"type": "string"}
    else:
        success_schema = schemas[(operation.response, "serialization")]
    success = _response(HTTPStatus(operation.status).phrase, operation.media_type, success_schema)
    responses: dict[str, Any] = {str(status): success for status in (operation.status, *operation.statuses)}
    for status in error_statuses(operation):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    handler = operation.handler
    described: dict[str, Any] = {
        "operationId": handler.__name__,
        "summary": (handler.__doc__ or handler.__name__.replace("_", " ")).strip().split("\n")[0],
        "description": _access_text(operation),
        "tags": [handler.__module__.rpartition(".")[2]],  # the resource its module serves
        "x-access": access_rule(operation),
        "security": [{"session": []}] if operation.roles else [{}, {"session": []}] if operation.signed else [],
        "responses": responses,
    }
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": _json_content(schemas[(operation.body, "validation")]),
        }
    return described


def _schemas(operations: list[Operation]) -> tuple[Schemas, dict[str, Any]]:
    """The JSON Schema of every model the operations name, by (model, mode), and the definitions they
    refer to (the document's ``components.schemas``)."""
    wanted: set[tuple[type[BaseModel], JsonSchemaMode]] = {(ErrorBody, "serialization")}
    for operation in operations:
        wanted.update((model, "validation") for model in (operation.body, operation.query) if model is not None)
        if operation.response is not None:
            wanted.add((operation.response, "serialization"))
    ordered = sorted(wanted, key=lambda item: (item[0].__module__, item[0].__qualname__, item[1]))
    by_model, definitions = models_json_schema(ordered, ref_template=REF_TEMPLATE)
    resolved: Schemas = {
        (model, mode): schema for (model, mode), schema in by_model.items() if issubclass(model, BaseModel)
    }
    return resolved, definitions.get("$defs", {})


def document(router: Router, *, title: str, version: str, server: str, description: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation registered on ``router``."""
    schemas, components = _schemas(router.operations)
    error_schema = schemas[(ErrorBody, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for operation in router.operations:
        described = _operation(operation, schemas, components)
        # operationId must be unique in a document; two modules may name their handlers alike.
        if described["operationId"] in taken:
            described["operationId"] += f"_{described['tags'][0]}_{operation.method.lower()}"
        taken.add(described["operationId"])
        paths.setdefault(operation.path, {})[operation.method.lower()] = described
    statuses = sorted({status for operation in router.operations for status in error_statuses(operation)})
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": server, "description": "through the edge"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "responses": {
                str(status): {
                    "description": f"{HTTPStatus(status).phrase}: the error shape",
                    "content": _json_content(error_schema),
                }
                for status in statuses
            },
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "The edge's session; the edge forwards the caller's identity to the "
                    "origin in a signed envelope, which the origin verifies on every request.",
                }
            },
        },
    }


def serve(route: Router, bp: Blueprint, *, title: str, version: str, server: str, description: str = "") -> None:
    """Register ``GET /openapi.json`` (public, cacheable) on ``bp``; the document is built on first use."""

    @cache
    def built() -> dict[str, Any]:
        return document(route, title=title, version=version, server=server, description=description)

    def openapi_document(call: Call) -> Response:
        """This API's OpenAPI 3.1 description."""
        return public_read_response(call, built())

    route(bp, SPEC_PATH, methods=["GET"], roles=ANYONE, response=OpenApiDocument)(openapi_document)
