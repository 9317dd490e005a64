"""SteppersLife's API against its own OpenAPI document, fuzzed over HTTP as each role (tests/contract.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from functions.stepperslife.http import ORGANIZERS
from shared.envelope import Identity
from tests.conftest import EdgeSignedClient
from tests.contract import fuzz, served, signers

EVENT = {
    "title": "Fuzzed social",
    "event_date": "2027-05-01T19:00:00+00:00",
    "capacity": 3,
    "status": "published",
    "category": "social",
}


def test_every_answer_keeps_the_documented_contract(
    api: EdgeSignedClient, users: dict[str, Identity], configured_app: Any, stepperslife_url: str
) -> None:
    organizer = users["user"]
    assert organizer.role in ORGANIZERS
    event = api.request("POST", "/events", identity=organizer, json_body=EVENT).json["event"]
    registration = api.request("POST", f"/events/{event['id']}/registrations", identity=users["customer"])
    assert registration.status == 201, registration.body
    served_document = api.request("GET", "/openapi.json")
    assert served_document.status == 200
    # Public and briefly cacheable (the edge keeps it for its s-maxage), revalidated by its ETag.
    assert served_document.headers["Cache-Control"].startswith("public")
    etag = served_document.headers["ETag"]
    assert api.request("GET", "/openapi.json", headers={"If-None-Match": etag}).status == 304
    document = served_document.json
    assert document["openapi"] == "3.1.0" and document["servers"] == [
        {"url": "/api", "description": "through the edge"}
    ]
    roles: dict[str, Identity | None] = {
        "anonymous": None,
        "organizer": organizer,
        "attendee": users["customer"],
        "admin": users["admin"],
    }
    with psycopg.connect(stepperslife_url, autocommit=True) as conn, served(configured_app) as base_url:
        report = fuzz(
            document,
            base_url,
            signers(roles, conn),
            known_ids={"event_id": [event["id"]], "registration_id": [registration.json["registration"]["id"]]},
        )
    report.assert_kept()
