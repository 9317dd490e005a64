"""The OpenAPI 3.1 documents generated from the route tables (functions/platform/openapi.py)."""

from __future__ import annotations

import inspect
import re
from typing import Any

import jsonschema
import pytest
from chalice.app import Blueprint
from openapi_spec_validator import validate
from pydantic import BaseModel

from edge_workers.core.routes import Auth, RouteTable
from functions.agistaffers.app import app as agi_app
from functions.agistaffers.http import route as agi_route
from functions.platform import openapi
from functions.platform.http import ANYONE, Call, Router
from functions.platform.responses import Reply
from functions.stepperslife.app import app as stepperslife_app
from functions.stepperslife.http import route as stepperslife_route
from shared.envelope import AGISTAFFERS, STEPPERSLIFE
from shared.errors import NotFound, ValidationFailed, internal_error_body

assert stepperslife_app and agi_app  # the apps register every route on import
ROUTERS = {"stepperslife": stepperslife_route, "agistaffers": agi_route}


def _document(router: Router) -> dict[str, Any]:
    return openapi.document(router, title="test", version="1", server="/api")


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    return schema


@pytest.mark.parametrize("product", ROUTERS)
def test_each_document_is_valid_openapi_3_1(product: str) -> None:
    document = _document(ROUTERS[product])
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"


@pytest.mark.parametrize("product", ROUTERS)
def test_every_route_is_described_with_its_access_rule(product: str) -> None:
    router = ROUTERS[product]
    document = _document(router)
    assert len(router.operations) >= 15
    for operation in router.operations:
        described = document["paths"][operation.path][operation.method.lower()]
        roles = sorted(operation.roles) if operation.roles else ["anyone"]
        assert described["x-access"]["roles"] == roles, operation.path
        anyone: list[dict[str, list[str]]] = (
            [{}, {"session": []}] if operation.signed else []
        )  # unsigned: health checks only
        assert described["security"] == ([{"session": []}] if operation.roles else anyone)
        if operation.roles:
            assert {"401", "403"} <= set(described["responses"]), operation.path


@pytest.mark.parametrize("product", ROUTERS)
def test_each_route_declares_the_models_its_handler_validates(product: str) -> None:
    """The document shows the declared models; the handler validates with the ones it names. A route
    whose handler calls ``call.json(X)`` or ``call.query_model(X)`` must declare ``body=X`` or
    ``query=X``, else its document would promise requests the handler refuses."""
    for operation in ROUTERS[product].operations:
        source = inspect.getsource(operation.handler)
        where = f"{operation.method} {operation.path}"
        for declared, pattern in (
            (operation.body, r"call\.json\((\w+)\)"),
            (operation.query, r"call\.query_model\((\w+)\)"),
        ):
            used = set(re.findall(pattern, source))
            assert used == ({declared.__name__} if declared else set()), (
                f"{where}: validates {used}, declares {declared}"
            )


@pytest.mark.parametrize("product", ROUTERS)
def test_every_success_body_is_described_by_real_fields(product: str) -> None:
    """A bare ``object`` would make the fuzz's schema check vacuous: each JSON answer names its fields,
    and only a 204 has no body."""
    document = _document(ROUTERS[product])
    for path, methods in document["paths"].items():
        for method, described in methods.items():
            for status, response in described["responses"].items():
                if not status.startswith("2"):
                    continue
                where = f"{method.upper()} {path} {status}"
                if status == "204":
                    assert "content" not in response, where
                    continue
                assert "content" in response, f"{where}: its route declares no response= model"
                for media_type, content in response["content"].items():
                    if media_type == "application/json":
                        assert _resolve(document, content["schema"]).get("required"), where


@pytest.mark.parametrize(
    "body",
    [
        NotFound("no such event").body(),
        ValidationFailed("the request is not valid", details=[{"loc": ["title"], "msg": "x", "type": "y"}]).body(),
        internal_error_body(),
    ],
)
def test_the_error_component_is_the_shape_errors_have(body: dict[str, Any]) -> None:
    document = _document(stepperslife_route)
    schema = {**document["components"]["responses"]["404"]["content"]["application/json"]["schema"]}
    schema["$defs"] = document["components"]["schemas"]
    schema = {"$ref": schema["$ref"].replace("#/components/schemas/", "#/$defs/"), "$defs": schema["$defs"]}
    _rewrite_refs(schema)
    jsonschema.validate(body, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"message": "Missing Authentication Token"}, schema)  # Chalice's own shape


def _rewrite_refs(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            node["$ref"] = node["$ref"].replace("#/components/schemas/", "#/$defs/")
        for value in node.values():
            _rewrite_refs(value)
    elif isinstance(node, list):
        for value in node:
            _rewrite_refs(value)


class GadgetQuery(BaseModel):
    colour: str | None = None
    limit: int = 10


class GadgetIn(BaseModel):
    name: str


class Gadget(Reply):
    id: str
    name: str


def test_a_route_registered_later_is_described_from_its_registration() -> None:
    """The generator reads the route table: a new route needs no hand-written description."""
    router = Router(STEPPERSLIFE, runtime=lambda: pytest.fail("not called"))
    bp = Blueprint(__name__)

    @router(bp, "/gadgets/{gadget_id}", methods=["PUT"], roles=frozenset({"admin"}), body=GadgetIn, response=Gadget)
    def put_gadget(call: Call) -> dict[str, Any]:
        """Replace a gadget."""
        return {}

    @router(bp, "/gadgets", methods=["GET"], roles=ANYONE, query=GadgetQuery, response=Gadget, errors=(409,))
    def list_gadgets(call: Call) -> dict[str, Any]:
        return {}

    @router(bp, "/gadgets", methods=["POST"], roles=frozenset({"admin"}), body=GadgetIn, response=Gadget)
    def put_gadget_too(call: Call) -> dict[str, Any]:
        return {}

    put_gadget_too.__name__ = "put_gadget"  # as another module might name its handler

    document = _document(router)
    validate(document)
    put = document["paths"]["/gadgets/{gadget_id}"]["put"]
    assert put["summary"] == "Replace a gadget."
    assert put["x-access"] == {"roles": ["admin"], "signed": True}
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/GadgetIn"}
    assert put["parameters"] == [
        {"name": "gadget_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    ]
    assert set(put["responses"]) == {"200", "400", "401", "403", "404", "413", "415", "422", "503"}
    assert document["paths"]["/gadgets"]["post"]["operationId"] == "put_gadget_test_openapi_post"
    listing = document["paths"]["/gadgets"]["get"]
    assert set(listing["responses"]) == {"200", "401", "409", "422", "503"}
    # An optional query field is a parameter that may be left out: no null alternative.
    colour = next(parameter for parameter in listing["parameters"] if parameter["name"] == "colour")
    assert colour == {"name": "colour", "in": "query", "required": False, "schema": {"type": "string"}}


def test_query_parameters_carry_their_aliases() -> None:
    listing = _document(stepperslife_route)["paths"]["/events"]["get"]
    names = {parameter["name"] for parameter in listing["parameters"]}
    assert {"from", "to", "limit", "cursor"} <= names
    assert "starts_after" not in names


def test_idempotent_writes_document_the_key_header() -> None:
    create = _document(stepperslife_route)["paths"]["/events"]["post"]
    header = next(parameter for parameter in create["parameters"] if parameter["in"] == "header")
    assert header["name"] == "Idempotency-Key"
    assert {"409", "422"} <= set(create["responses"])


@pytest.mark.parametrize(
    ("path", "origin"), [("/api/openapi.json", STEPPERSLIFE), ("/api/agi/openapi.json", AGISTAFFERS)]
)
def test_the_edge_forwards_the_documents_as_public_cacheable_reads(path: str, origin: str) -> None:
    for method in ("GET", "HEAD"):
        match = RouteTable().match(path, method)
        assert match.route.origin == origin
        assert match.route.upstream_path(path) == openapi.SPEC_PATH
        assert match.access.auth is Auth.ANONYMOUS  # the same for everyone: no identity forwarded
        assert match.route.cache is not None and match.route.cache.public
