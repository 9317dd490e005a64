"""The platform's HTTP glue on both products' real apps: every answer in the error shape, with the
right status, whatever the request (hostile bodies and headers, unknown paths, wrong methods)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.envelope import Identity
from tests.conftest import ApiResponse, EdgeSignedClient
from tests.stepperslife.test_api import create_event, event_body

# An anonymous JSON POST on each product: the glue parses its body before the handler runs.
PRODUCTS = {"stepperslife": "/users", "agistaffers": "/signup"}


@pytest.fixture(params=sorted(PRODUCTS))
def product(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(product: str, request: pytest.FixtureRequest) -> EdgeSignedClient:
    fixture = "api" if product == "stepperslife" else "agi_api"
    signed: EdgeSignedClient = request.getfixturevalue(fixture)
    return signed


def header(response: ApiResponse, name: str) -> str:
    return {key.lower(): value for key, value in response.headers.items()}[name]


def assert_shape(response: ApiResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response.body
    assert header(response, "content-type") == "application/json"
    error: dict[str, Any] = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    return error


@pytest.mark.parametrize(
    "body",
    [b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 33 + b"]" * 33],
    ids=["arrays", "objects", "just-too-deep"],
)
def test_deeply_nested_json_is_a_400(client: EdgeSignedClient, product: str, body: bytes) -> None:
    assert_shape(client.request("POST", PRODUCTS[product], body=body), 400, "json_too_deep")


def test_brackets_inside_strings_do_not_count(client: EdgeSignedClient, product: str) -> None:
    response = client.request("POST", PRODUCTS[product], json_body={"email": "[" * 5000, "unknown": "{" * 5000})
    assert_shape(response, 422, "validation_failed")


@pytest.mark.parametrize("key", ["k" * 201, "has space", "ünïcode", ""])
def test_a_malformed_idempotency_key_is_a_422_before_any_use(client: EdgeSignedClient, product: str, key: str) -> None:
    response = client.request("POST", PRODUCTS[product], json_body={}, headers={"idempotency-key": key})
    assert_shape(response, 422, "idempotency_key_invalid")


def test_a_long_idempotency_key_on_an_idempotent_route_writes_nothing(
    api: EdgeSignedClient, users: dict[str, Identity]
) -> None:
    organizer = users["user"]
    response = api.request(
        "POST", "/events", identity=organizer, json_body=event_body(), headers={"idempotency-key": "k" * 500}
    )
    assert_shape(response, 422, "idempotency_key_invalid")
    assert api.request("GET", "/events", identity=organizer).json["items"] == []
    ok = api.request(
        "POST", "/events", identity=organizer, json_body=event_body(), headers={"idempotency-key": "k" * 200}
    )
    assert ok.status == 201, ok.body


@pytest.mark.parametrize("path", ["/nope", "/nope/deeper/still", "/", "/events/x/y/z/w"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_paths_are_404_in_the_shape(client: EdgeSignedClient, path: str, method: str) -> None:
    assert_shape(client.request(method, path, sign=False), 404, "not_found")


def test_a_wrong_method_is_405_with_allow(client: EdgeSignedClient, product: str) -> None:
    response = client.request("PUT", PRODUCTS[product], json_body={})
    assert_shape(response, 405, "method_not_allowed")
    assert header(response, "allow") == "POST"


@pytest.mark.parametrize("content_type", ["application/vnd.hostile", "text/xml", "image/png"])
def test_any_unsupported_content_type_is_415_in_the_shape(
    client: EdgeSignedClient, product: str, content_type: str
) -> None:
    response = client.request("POST", PRODUCTS[product], body=b"<x/>", headers={"content-type": content_type})
    assert_shape(response, 415, "unsupported_media_type")


def test_head_is_get_without_a_body(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    create_event(api, users["user"], status="published")
    got = api.request("GET", "/events")
    head = api.request("HEAD", "/events")
    assert head.status == 200 and head.body == b""
    assert header(head, "etag") == header(got, "etag")
    assert header(head, "cache-control") == header(got, "cache-control")
    missing = api.request("HEAD", "/events/00000000-0000-4000-8000-000000000000")
    assert missing.status == 404 and missing.body == b""


@pytest.mark.parametrize("path", ["/events/", "/events/?limit=5"])
def test_a_trailing_slash_is_the_same_resource(api: EdgeSignedClient, path: str) -> None:
    response = api.request("GET", path)
    assert response.status == 200, response.body
    assert response.json["items"] == []


def test_the_listing_shows_an_organizer_their_own_drafts(api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    published = create_event(api, users["user"], status="published", title="Open night")
    draft = create_event(api, users["user"], title="Secret plans")
    other = create_event(api, users["user2"], title="Someone else's draft")

    def titles(identity: Identity | None) -> set[str]:
        response = api.request("GET", "/events", identity=identity)
        assert response.status == 200, response.body
        return {item["title"] for item in response.json["items"]}

    assert titles(None) == {published["title"]}
    assert titles(users["customer"]) == {published["title"]}
    assert titles(users["user"]) == {published["title"], draft["title"]}
    assert titles(users["user2"]) == {published["title"], other["title"]}
    assert titles(users["admin"]) == {published["title"], draft["title"], other["title"]}
    # The anonymous answer stays cacheable and never holds a draft.
    assert "public" in header(api.request("GET", "/events"), "cache-control")
