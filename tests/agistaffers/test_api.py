"""AGI Staffers' HTTP API on its real Chalice app, signed like the edge signs: every route's access
rule for anonymous callers, a member and the owner of the customer, the owner of another customer,
and staff; ids guessed from another customer; the error shape; sessions of the other product."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.sites import SiteService
from shared.envelope import AGISTAFFERS, Identity
from tests.agistaffers.conftest import PASSWORD, Tenants
from tests.conftest import ApiResponse, EdgeSignedClient

CALLERS = ("anonymous", "member_a", "owner_a", "owner_b", "staff")


def identity(actor: Actor) -> Identity:
    return Identity(user_id=actor.user_id, role=actor.role, email=actor.email, product=AGISTAFFERS)


@dataclass
class World:
    """Customer A (owner and member) and customer B (owner), both active, and a staff account."""

    sites: SiteService
    actors: dict[str, Actor]
    site_a: dict[str, Any]
    invitation_a: str

    def identity(self, caller: str) -> Identity | None:
        return None if caller == "anonymous" else identity(self.actors[caller])

    @property
    def customer_a(self) -> str:
        customer_id = self.actors["owner_a"].customer_id
        assert customer_id is not None
        return customer_id

    def new_site(self) -> str:
        site = self.sites.add(self.actors["owner_a"], f"site-{secrets.token_hex(4)}.example.com")
        return str(site["id"])


@pytest.fixture
def world(tenants: Tenants, sites: SiteService) -> World:
    owner_a = tenants.owner(company="Alpha Hosting", plan="business")
    member_a = tenants.member(owner_a)
    owner_b = tenants.owner(company="Beta Hosting")
    site_a = sites.add(owner_a, "alpha.example.com")
    invitation = tenants.accounts.invite(owner_a, "pending-invite@example.com", "member")["invitation"]
    actors = {"member_a": member_a, "owner_a": owner_a, "owner_b": owner_b, "staff": tenants.staff}
    return World(sites, actors, site_a, str(invitation["id"]))


def call(agi_api: EdgeSignedClient, world: World, caller: str, method: str, path: str, body: Any = None) -> ApiResponse:
    return agi_api.request(method, path, identity=world.identity(caller), json_body=body)


def assert_error(response: ApiResponse, status: int, code: str | None = None) -> None:
    assert response.status == status, response.body
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code


Path = Callable[[World], str]
Body = Callable[[World], Any]


@dataclass
class Rule:
    method: str
    path: Path
    expected: dict[str, int]
    body: Body | None = None
    # Mutating routes get a fresh target per caller, so one caller's success cannot hide another's.
    fresh_site: bool = False


def _site(world: World) -> str:
    return f"/sites/{world.site_a['id']}"


RULES: dict[str, Rule] = {
    "GET /me": Rule("GET", lambda w: "/me", {"anonymous": 401, "member_a": 200, "owner_a": 200, "owner_b": 200,
                                               "staff": 200}),
    "GET /plans": Rule("GET", lambda w: "/plans", dict.fromkeys(CALLERS, 200)),
    "GET /sites": Rule("GET", lambda w: "/sites", {"anonymous": 401, "member_a": 200, "owner_a": 200,
                                                    "owner_b": 200, "staff": 200}),
    "POST /sites": Rule(
        "POST", lambda w: "/sites", {"anonymous": 401, "member_a": 201, "owner_a": 201, "owner_b": 201, "staff": 403},
        body=lambda w: {"domain": f"new-{secrets.token_hex(4)}.example.org"},
    ),
    "GET /sites/{id}": Rule("GET", _site, {"anonymous": 401, "member_a": 200, "owner_a": 200, "owner_b": 404,
                                           "staff": 200}),
    "PATCH /sites/{id}": Rule("PATCH", _site, {"anonymous": 401, "member_a": 200, "owner_a": 200, "owner_b": 404,
                                               "staff": 200}, body=lambda w: {"label": "Main shop"}),
    "DELETE /sites/{id}": Rule("DELETE", _site, {"anonymous": 401, "member_a": 403, "owner_a": 204, "owner_b": 404,
                                                 "staff": 403}, fresh_site=True),
    "GET /customer": Rule("GET", lambda w: "/customer", {"anonymous": 401, "member_a": 200, "owner_a": 200,
                                                         "owner_b": 200, "staff": 403}),
    "PATCH /customer": Rule("PATCH", lambda w: "/customer", {"anonymous": 401, "member_a": 403, "owner_a": 200,
                                                             "owner_b": 200, "staff": 403},
                            body=lambda w: {"phone": "+1 312 555 0100"}),
    "GET /customers": Rule("GET", lambda w: "/customers", {"anonymous": 401, "member_a": 403, "owner_a": 403,
                                                           "owner_b": 403, "staff": 200}),
    "GET /customers/{a}": Rule("GET", lambda w: f"/customers/{w.customer_a}",
                               {"anonymous": 401, "member_a": 200, "owner_a": 200, "owner_b": 404, "staff": 200}),
    "PATCH /customers/{a}": Rule("PATCH", lambda w: f"/customers/{w.customer_a}",
                                 {"anonymous": 401, "member_a": 403, "owner_a": 403, "owner_b": 403, "staff": 200},
                                 body=lambda w: {"website": "https://alpha.example.com"}),
    "POST /customers/{a}/suspend": Rule("POST", lambda w: f"/customers/{w.customer_a}/suspend",
                                        {"anonymous": 401, "member_a": 403, "owner_a": 403, "owner_b": 403,
                                         "staff": 200}, body=lambda w: {"reason": "unpaid invoice"}),
    "PUT /customers/{a}/plan": Rule("PUT", lambda w: f"/customers/{w.customer_a}/plan",
                                    {"anonymous": 401, "member_a": 403, "owner_a": 403, "owner_b": 403,
                                     "staff": 200}, body=lambda w: {"plan": "business"}),
    "GET /team/members": Rule("GET", lambda w: "/team/members", {"anonymous": 401, "member_a": 200, "owner_a": 200,
                                                                 "owner_b": 200, "staff": 403}),
    "PATCH /team/members/{member}": Rule("PATCH", lambda w: f"/team/members/{w.actors['member_a'].user_id}",
                                         {"anonymous": 401, "member_a": 403, "owner_a": 200, "owner_b": 404,
                                          "staff": 403}, body=lambda w: {"role": "member"}),
    "GET /team/invitations": Rule("GET", lambda w: "/team/invitations",
                                  {"anonymous": 401, "member_a": 403, "owner_a": 200, "owner_b": 200, "staff": 403}),
    "POST /team/invitations": Rule("POST", lambda w: "/team/invitations",
                                   {"anonymous": 401, "member_a": 403, "owner_a": 201, "owner_b": 201, "staff": 403},
                                   body=lambda w: {"email": f"new-{secrets.token_hex(4)}@example.com"}),
    "DELETE /team/invitations/{a}": Rule("DELETE", lambda w: f"/team/invitations/{w.invitation_a}",
                                         {"anonymous": 401, "member_a": 403, "owner_a": 200, "owner_b": 404,
                                          "staff": 403}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RULES))
def test_access_rule_per_role_and_across_customers(name: str, agi_api: EdgeSignedClient, world: World) -> None:
    rule = RULES[name]
    # Staff last: a staff write (suspend, plan) changes customer A for everyone after it.
    for caller in CALLERS:
        path = f"/sites/{world.new_site()}" if rule.fresh_site else rule.path(world)
        body = rule.body(world) if rule.body else None
        response = call(agi_api, world, caller, rule.method, path, body)
        expected = rule.expected[caller]
        assert response.status == expected, f"{name} as {caller}: {response.status} {response.body!r}"
        if expected >= 400:
            assert_error(response, expected)


def test_owner_b_never_sees_customer_a_data(agi_api: EdgeSignedClient, world: World) -> None:
    listing = call(agi_api, world, "owner_b", "GET", "/sites").json
    assert world.site_a["id"] not in {item["id"] for item in listing["items"]}
    members = call(agi_api, world, "owner_b", "GET", "/team/members").json["items"]
    assert {member["id"] for member in members} == {world.actors["owner_b"].user_id}
    # The customer filter is the staff's: for a customer's user it never widens the listing.
    filtered = call(agi_api, world, "owner_b", "GET", f"/sites?customer_id={world.customer_a}")
    assert filtered.status in (200, 403, 404, 422)
    if filtered.status == 200:
        assert world.site_a["id"] not in {item["id"] for item in filtered.json["items"]}


@pytest.mark.parametrize("guess", ["random", "malformed", "other_customer"])
def test_guessed_site_ids_are_404(guess: str, agi_api: EdgeSignedClient, world: World) -> None:
    site_id = {"random": str(uuid.uuid4()), "malformed": "1 OR 1=1", "other_customer": str(world.site_a["id"])}[guess]
    for method, body in (("GET", None), ("PATCH", {"label": "x"}), ("DELETE", None)):
        response = call(agi_api, world, "owner_b", method, f"/sites/{site_id.replace(' ', '%20')}", body)
        assert_error(response, 404, "site_not_found")


def test_sign_up_log_in_add_site_and_list_it(agi_api: EdgeSignedClient, world: World) -> None:
    email = f"new-{secrets.token_hex(4)}@example.com"
    signed = agi_api.request(
        "POST", "/signup", json_body={"company_name": "Gamma", "email": email, "password": PASSWORD, "plan": "starter"}
    )
    assert signed.status == 201, signed.body
    assert signed.json["customer"]["status"] == "pending"
    assert signed.json["user"]["role"] == "owner"
    login = agi_api.request("POST", "/auth/login", json_body={"email": email.upper(), "password": PASSWORD})
    assert login.status == 200
    user = login.json["user"]
    assert {"id", "email", "role"} <= set(user) and "password_hash" not in user
    me = Identity(user_id=user["id"], role=user["role"], email=email, product=AGISTAFFERS)
    added = agi_api.request("POST", "/sites", identity=me, json_body={"domain": "Bücher.DE."})
    assert added.status == 201, added.body
    assert added.json["site"]["domain"] == "xn--bcher-kva.de"
    assert added.json["site"]["status"] == "provisioning"
    listed = agi_api.request("GET", "/sites", identity=me).json
    assert [item["id"] for item in listed["items"]] == [added.json["site"]["id"]]
    assert listed["next_cursor"] is None


def test_wrong_password_and_unknown_email_answer_alike(agi_api: EdgeSignedClient, world: World) -> None:
    wrong = agi_api.request(
        "POST", "/auth/login", json_body={"email": world.actors["owner_a"].email, "password": "not the password"}
    )
    unknown = agi_api.request("POST", "/auth/login", json_body={"email": "nobody@example.com", "password": PASSWORD})
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json == unknown.json


def test_a_stepperslife_session_counts_for_nothing_here(agi_api: EdgeSignedClient, world: World) -> None:
    owner = world.actors["owner_a"]
    # The same id, signed by the edge, but a SteppersLife identity: AGI Staffers sees nobody.
    foreign = Identity(user_id=owner.user_id, role="admin", email=owner.email)
    assert_error(agi_api.request("GET", "/me", identity=foreign), 401)
    assert_error(agi_api.request("GET", "/customers", identity=foreign), 401)


def test_role_changes_count_on_the_next_request(agi_api: EdgeSignedClient, world: World) -> None:
    """The session says owner; the database says member now: the database wins."""
    owner_a, member_a = world.actors["owner_a"], world.actors["member_a"]
    promote = call(agi_api, world, "owner_a", "PATCH", f"/team/members/{member_a.user_id}", {"role": "owner"})
    assert promote.status == 200, promote.body
    demote = agi_api.request(
        "PATCH", f"/team/members/{owner_a.user_id}", identity=identity(member_a), json_body={"role": "member"}
    )
    assert demote.status == 200, demote.body
    # The promotion ended nothing: member_a's session, which says "member", already acts as an owner.
    # The demotion ended owner_a's sessions; a new one (generation 1) is a member's.
    response = call(agi_api, world, "owner_a", "POST", "/team/invitations", {"email": "x@example.com"})
    assert_error(response, 401, "session_revoked")
    relogged = identity(owner_a)._replace(generation=1)
    response = agi_api.request("POST", "/team/invitations", identity=relogged, json_body={"email": "x@example.com"})
    assert_error(response, 403, "owner_only")


def test_logout_everywhere_ends_every_session(agi_api: EdgeSignedClient, world: World) -> None:
    assert call(agi_api, world, "member_a", "POST", "/auth/logout-all").status == 204
    assert_error(call(agi_api, world, "member_a", "GET", "/me"), 401, "session_revoked")
    # Another account's sessions are untouched.
    assert call(agi_api, world, "owner_a", "GET", "/me").status == 200
    login = agi_api.request(
        "POST", "/auth/login", json_body={"email": world.actors["member_a"].email, "password": PASSWORD}
    )
    assert login.status == 200 and login.json["session"] == {"generation": 1}
    fresh = identity(world.actors["member_a"])._replace(generation=1)
    assert agi_api.request("GET", "/me", identity=fresh).status == 200


def test_removed_member_is_signed_out_at_once(agi_api: EdgeSignedClient, world: World) -> None:
    member = world.actors["member_a"]
    removed = call(agi_api, world, "owner_a", "DELETE", f"/team/members/{member.user_id}")
    assert removed.status == 200, removed.body
    assert_error(call(agi_api, world, "member_a", "GET", "/sites"), 401, "session_revoked")


def test_suspended_customer_reads_but_cannot_write(agi_api: EdgeSignedClient, world: World) -> None:
    suspended = call(agi_api, world, "staff", "POST", f"/customers/{world.customer_a}/suspend", {"reason": "unpaid"})
    assert suspended.status == 200 and suspended.json["customer"]["status"] == "suspended"
    assert call(agi_api, world, "owner_a", "GET", "/sites").status == 200
    assert call(agi_api, world, "owner_a", "GET", "/me").status == 200
    assert_error(call(agi_api, world, "owner_a", "POST", "/sites", {"domain": "more.example.com"}), 403,
                 "customer_suspended")  # fmt: skip
    assert_error(call(agi_api, world, "member_a", "PATCH", _site(world), {"label": "x"}), 403, "customer_suspended")
    assert_error(call(agi_api, world, "owner_a", "DELETE", _site(world)), 403, "customer_suspended")
    reinstated = call(agi_api, world, "staff", "POST", f"/customers/{world.customer_a}/reinstate")
    assert reinstated.status == 200 and reinstated.json["customer"]["status"] == "active"
    assert call(agi_api, world, "owner_a", "POST", "/sites", {"domain": "more.example.com"}).status == 201


def test_invalid_transition_is_a_conflict(agi_api: EdgeSignedClient, world: World) -> None:
    response = call(agi_api, world, "staff", "POST", f"/customers/{world.customer_a}/reinstate")
    assert_error(response, 409, "invalid_transition")


def test_plan_limit_on_sites(agi_api: EdgeSignedClient, tenants: Tenants) -> None:
    starter = identity(tenants.owner(plan="starter"))
    for number in range(3):
        added = agi_api.request("POST", "/sites", identity=starter, json_body={"domain": f"s{number}.example.net"})
        assert added.status == 201
    over = agi_api.request("POST", "/sites", identity=starter, json_body={"domain": "s9.example.net"})
    assert_error(over, 409, "plan_limit")
    assert over.json["error"]["details"]["limit"] == 3


@pytest.mark.parametrize(
    "domain",
    ["localhost", "intranet.local", "db.internal", "10.0.0.1", "[::1]", "co.uk", "foo.notatld", "-bad-.example.com"],
)
def test_unhostable_domains_are_refused(domain: str, agi_api: EdgeSignedClient, world: World) -> None:
    assert_error(call(agi_api, world, "owner_a", "POST", "/sites", {"domain": domain}), 422)


def test_domain_taken_by_another_customer_case_insensitively(agi_api: EdgeSignedClient, world: World) -> None:
    taken = call(agi_api, world, "owner_b", "POST", "/sites", {"domain": "ALPHA.Example.com"})
    assert_error(taken, 409, "domain_taken")


def test_idempotency_key_replays_the_first_site(agi_api: EdgeSignedClient, world: World) -> None:
    owner = identity(world.actors["owner_a"])
    headers = {"idempotency-key": "add-site-1"}
    body = {"domain": "replay.example.com"}
    first = agi_api.request("POST", "/sites", identity=owner, json_body=body, headers=headers)
    again = agi_api.request("POST", "/sites", identity=owner, json_body=body, headers=headers)
    assert first.status == again.status == 201
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"


def test_invitation_round_trip(agi_api: EdgeSignedClient, world: World) -> None:
    invited = call(agi_api, world, "owner_a", "POST", "/team/invitations", {"email": "joiner@example.com"})
    assert invited.status == 201
    token = invited.json["token"]
    accepted = agi_api.request(
        "POST", "/invitations/accept", json_body={"token": token, "name": "Joiner", "password": PASSWORD}
    )
    assert accepted.status == 201, accepted.body
    assert accepted.json["user"]["customer_id"] == world.customer_a
    again = agi_api.request(
        "POST", "/invitations/accept", json_body={"token": token, "name": "Joiner", "password": PASSWORD}
    )
    assert_error(again, 404, "invitation_not_found")


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/sites", b"{not json", 400),
        ("POST", "/sites", b'{"domain": "a.example.com", "extra": 1}', 422),
        ("POST", "/sites", b'{"domain": 42}', 422),
        ("POST", "/sites", b'{"domain": "a\\u0000.example.com"}', 422),
        ("PATCH", "/sites/00000000-0000-0000-0000-000000000000", b"{}", 422),
        ("GET", "/sites?limit=0", b"", 422),
        ("GET", "/sites?cursor=not-a-cursor", b"", 422),
        ("GET", "/sites?limit=5&limit=6", b"", 422),
    ],
)
def test_bad_input_is_a_clear_4xx(
    method: str, path: str, body: bytes, status: int, agi_api: EdgeSignedClient, world: World
) -> None:
    owner = identity(world.actors["owner_a"])
    response = agi_api.request(method, path, identity=owner, body=body)
    assert_error(response, status)


def test_unsigned_requests_are_refused(agi_api: EdgeSignedClient, world: World) -> None:
    assert_error(agi_api.request("GET", "/sites", sign=False), 401, "unsigned_request")
    health = agi_api.request("GET", "/healthz", sign=False)
    assert health.status == 200 and health.json["checks"]["postgres"] == "up"


def test_staff_list_customers_with_filters_and_pages(agi_api: EdgeSignedClient, world: World) -> None:
    seen: list[str] = []
    cursor = ""
    while True:
        page = call(agi_api, world, "staff", "GET", "/customers?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200
        seen += [item["id"] for item in page.json["items"]]
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 2
    alpha = call(agi_api, world, "staff", "GET", "/customers?q=alpha").json["items"]
    assert [item["company_name"] for item in alpha] == ["Alpha Hosting"]
