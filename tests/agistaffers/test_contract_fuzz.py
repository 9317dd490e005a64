"""AGI Staffers' API against its own OpenAPI document, fuzzed over HTTP as each role (tests/contract.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from functions.agistaffers.services.accounts import AccountService, Actor
from shared.envelope import AGISTAFFERS, Identity
from tests.agistaffers.conftest import Tenants
from tests.conftest import EdgeSignedClient
from tests.contract import fuzz, served, signers


def _identity(actor: Actor) -> Identity:
    return Identity(user_id=actor.user_id, role=actor.role, email=actor.email, product=AGISTAFFERS)


def test_every_answer_keeps_the_documented_contract(
    agi_api: EdgeSignedClient,
    configured_agi_app: Any,
    tenants: Tenants,
    accounts: AccountService,
    staff: Actor,
    agistaffers_url: str,
) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    invitation = accounts.invite(owner, "invited@example.com", "member")["invitation"]
    site = agi_api.request("POST", "/sites", identity=_identity(owner), json_body={"domain": "fuzz-example.com"})
    assert site.status == 201, site.body
    document = agi_api.request("GET", "/openapi.json").json
    roles: dict[str, Identity | None] = {
        "anonymous": None,
        "member": _identity(member),
        "owner": _identity(owner),
        "staff": _identity(staff),
    }
    with psycopg.connect(agistaffers_url, autocommit=True) as conn, served(configured_agi_app) as base_url:
        slug = conn.execute("SELECT status_slug FROM customers WHERE id = %s", (owner.customer_id,)).fetchone()
        assert slug is not None

        report = fuzz(
            document,
            base_url,
            signers(roles, conn),
            known_ids={
                "customer_id": [str(owner.customer_id)],
                "site_id": [site.json["site"]["id"]],
                "user_id": [member.user_id],
                "invitation_id": [str(invitation["id"])],
                "slug": [slug[0]],
            },
        )
    report.assert_kept()


def test_a_deeply_nested_metrics_batch_is_a_400(agi_api: EdgeSignedClient, tenants: Tenants) -> None:
    """The ingest route parsed its body with ``json.loads``: a few thousand brackets were a
    RecursionError, a 500. Found by reading what the fuzz cannot generate; now the one depth-limited
    loader (``shared.jsonbody``), for JSON and NDJSON alike."""
    owner = tenants.owner()
    site = agi_api.request("POST", "/sites", identity=_identity(owner), json_body={"domain": "deep-example.com"})
    assert site.status == 201, site.body
    token = {"authorization": f"Bearer {site.json['site']['ingest_token']}"}
    deep = b"[" * 20_000 + b"]" * 20_000
    for content_type, body in (("application/json", deep), ("application/x-ndjson", b"{}\n" + deep)):
        answer = agi_api.request("POST", "/metrics", body=body, headers={**token, "content-type": content_type})
        assert answer.status == 400, answer.body
        assert answer.json["error"]["code"] == "json_too_deep"
