"""Customers: the lifecycle matrix, tenancy of reads, profile and plan changes, the staff listing."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.customers import TRANSITIONS, CustomerService
from functions.agistaffers.services.plans import PlanService
from functions.agistaffers.services.sites import SiteService
from functions.platform.adapters.postgres import Database
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tests.agistaffers.conftest import Tenants

STATUSES = ("pending", "active", "suspended", "cancelled")
# method -> (the status it moves to, the one status it moves from)
MOVES = {
    "activate": ("active", {"pending"}),
    "reinstate": ("active", {"suspended"}),
    "suspend": ("suspended", {"active"}),
    "cancel": ("cancelled", {"pending", "active", "suspended"}),
}


def move(customers: CustomerService, actor: Actor, method: str, customer_id: Any) -> dict[str, Any]:
    if method in ("suspend", "cancel"):
        result: dict[str, Any] = getattr(customers, method)(actor, customer_id, f"{method} for a test")
    else:
        result = getattr(customers, method)(actor, customer_id)
    return result


@pytest.mark.parametrize("method", sorted(MOVES))
@pytest.mark.parametrize("start", STATUSES)
def test_transition_matrix(
    customers: CustomerService, tenants: Tenants, staff: Actor, sql: psycopg.Connection[Any], start: str, method: str
) -> None:
    owner = tenants.owner(status="pending")
    # The starting state is arranged directly: the matrix is about every pair, reachable or not.
    sql.execute("UPDATE customers SET status = %s WHERE id = %s", (start, owner.customer_id))
    target, allowed_from = MOVES[method]
    if start in allowed_from:
        moved = move(customers, staff, method, owner.customer_id)
        assert moved["status"] == target
        assert moved["status_changed_at"] is not None
        expected_reason = f"{method} for a test" if method in ("suspend", "cancel") else None
        assert moved["status_reason"] == expected_reason
    else:
        with pytest.raises(Conflict) as caught:
            move(customers, staff, method, owner.customer_id)
        assert caught.value.code == "invalid_transition"
        assert caught.value.details == {"from": start, "to": target}
        status = sql.execute("SELECT status FROM customers WHERE id = %s", (owner.customer_id,)).fetchone()
        assert status == (start,)


def test_the_allowed_moves_are_exactly_the_documented_ones() -> None:
    allowed = {(start, target) for target, starts in MOVES.values() for start in starts}
    assert allowed == set(TRANSITIONS)


def test_only_staff_move_a_customer(customers: CustomerService, tenants: Tenants, staff: Actor) -> None:
    owner = tenants.owner()
    for method in MOVES:
        with pytest.raises(Forbidden):
            move(customers, owner, method, owner.customer_id)
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFound) as caught:
            customers.suspend(staff, missing, "x")
        assert caught.value.code == "customer_not_found"
    with pytest.raises(ValidationFailed):
        customers.suspend(staff, owner.customer_id, "x" * 1001)


def test_reads_are_tenant_scoped(customers: CustomerService, tenants: Tenants, staff: Actor) -> None:
    a = tenants.owner(company="Alpha")
    a_member = tenants.member(a)
    b = tenants.owner(company="Beta")
    assert customers.get(a, a.customer_id)["company_name"] == "Alpha"
    assert customers.get(a_member, a.customer_id)["site_count"] == 0
    assert customers.get(staff, b.customer_id)["company_name"] == "Beta"
    for customer_id in (b.customer_id, str(uuid.uuid4()), "junk"):
        with pytest.raises(NotFound) as caught:
            customers.get(a, customer_id)
        assert caught.value.code == "customer_not_found"
    with pytest.raises(Forbidden):
        customers.list(a)


def test_profile_is_changed_by_an_owner_or_staff(customers: CustomerService, tenants: Tenants, staff: Actor) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    other = tenants.owner()
    changed = customers.update_profile(
        owner,
        owner.customer_id,
        {"phone": "+44 20 7946 0000", "website": "https://acme.example.com", "billing_email": "Bills@Acme.example.com"},
    )
    assert changed["phone"] == "+44 20 7946 0000"
    assert changed["billing_email"] == "bills@acme.example.com"
    assert customers.update_profile(staff, owner.customer_id, {"phone": None, "address": "1 High St"})["phone"] is None
    with pytest.raises(Forbidden):
        customers.update_profile(member, owner.customer_id, {"phone": "123"})
    with pytest.raises(NotFound):
        customers.update_profile(other, owner.customer_id, {"phone": "123"})
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"status": "active"}, "unknown_field"),
        ({"plan": "enterprise"}, "unknown_field"),
        ({}, "no_changes"),
        ({"company_name": None}, "invalid_company_name"),
        ({"company_name": "  "}, "invalid_company_name"),
        ({"website": "javascript:alert(1)"}, "invalid_website"),
        ({"billing_email": "nope"}, "invalid_email"),
        ({"address": "x" * 1001}, "invalid_address"),
        ({"phone": "12\x003"}, "invalid_phone"),
    ]
    for changes, code in refusals:
        with pytest.raises(ValidationFailed) as caught:
            customers.update_profile(owner, owner.customer_id, changes)
        assert caught.value.code == code, changes


def test_a_suspended_customer_reads_its_profile_but_cannot_change_it(
    customers: CustomerService, tenants: Tenants, staff: Actor
) -> None:
    owner = tenants.owner()
    customers.suspend(staff, owner.customer_id, "chargeback")
    for actor in (owner, tenants.refresh(owner)):  # a stale actor and a fresh one
        assert customers.get(actor, owner.customer_id)["status"] == "suspended"
        with pytest.raises(Forbidden) as caught:
            customers.update_profile(actor, owner.customer_id, {"phone": "123"})
        assert caught.value.code == "customer_suspended"
    # Staff still can.
    assert customers.update_profile(staff, owner.customer_id, {"phone": "123"})["phone"] == "123"


def test_plan_changes_refuse_a_downgrade_below_usage(
    customers: CustomerService, sites: SiteService, tenants: Tenants, staff: Actor
) -> None:
    owner = tenants.owner(plan="business")
    for n in range(4):
        sites.add(owner, f"site{n}.example.com")
    with pytest.raises(Conflict) as caught:
        customers.change_plan(staff, owner.customer_id, "starter")
    assert caught.value.code == "plan_limit"
    assert caught.value.details["limit"] == 3
    assert caught.value.details["resource"] == "sites"
    assert customers.change_plan(staff, owner.customer_id, "enterprise")["plan"] == "enterprise"
    # A deleted site does not count.
    site = sites.list(owner, limit=1)["items"][0]
    sites.delete(owner, site["id"])
    assert customers.change_plan(staff, owner.customer_id, "starter")["plan"] == "starter"
    with pytest.raises(Forbidden):
        customers.change_plan(owner, owner.customer_id, "enterprise")
    with pytest.raises(ValidationFailed) as refused:
        customers.change_plan(staff, owner.customer_id, "platinum")
    assert refused.value.code == "unknown_plan"


def test_staff_listing_filters(customers: CustomerService, tenants: Tenants, staff: Actor) -> None:
    tenants.owner(company="Alpha Bakery", plan="starter", status="active")
    tenants.owner(company="Beta 100% Widgets", plan="business", status="suspended")
    tenants.owner(company="Gamma Bakery", plan="enterprise", status="pending")

    def companies(**filters: Any) -> set[str]:
        return {item["company_name"] for item in customers.list(staff, **filters)["items"]}

    assert companies() == {"Alpha Bakery", "Beta 100% Widgets", "Gamma Bakery"}
    assert companies(status="suspended") == {"Beta 100% Widgets"}
    assert companies(plan="enterprise") == {"Gamma Bakery"}
    assert companies(q="bakery") == {"Alpha Bakery", "Gamma Bakery"}
    assert companies(q="100%") == {"Beta 100% Widgets"}
    assert companies(q="%") == {"Beta 100% Widgets"}  # % is literal, not a wildcard
    assert companies(q="bakery", status="active") == {"Alpha Bakery"}
    with pytest.raises(ValidationFailed) as caught:
        customers.list(staff, status="deleted")
    assert caught.value.code == "invalid_status"


def test_staff_listing_pages_return_every_row_once(
    customers: CustomerService, tenants: Tenants, staff: Actor, sql: psycopg.Connection[Any]
) -> None:
    for n in range(7):
        tenants.owner(company=f"Company {n}")
    # Ties on created_at are broken by id: give half of them the same instant.
    sql.execute(
        "UPDATE customers SET created_at = '2027-01-01T00:00:00Z' "
        "WHERE company_name IN ('Company 1', 'Company 2', 'Company 3')"
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = customers.list(staff, limit=2, cursor=cursor)
        pages += 1
        seen.extend(item["company_name"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert sorted(seen) == [f"Company {n}" for n in range(7)]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'["2027-01-01T00:00:00", "x"]').decode(),
        base64.urlsafe_b64encode(b'["2027-01-01T00:00:00+00:00", "not-a-uuid"]').decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        "",
    ],
)
def test_a_malformed_cursor_is_a_validation_error(customers: CustomerService, staff: Actor, cursor: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        customers.list(staff, cursor=cursor)
    assert caught.value.code == "invalid_cursor"


@pytest.mark.parametrize("limit", [0, 101, -1, True])
def test_a_bad_limit_is_refused(customers: CustomerService, staff: Actor, limit: Any) -> None:
    with pytest.raises(ValidationFailed):
        customers.list(staff, limit=limit)


def test_service_calls_for_every_staff_only_action_refuse_customers(
    customers: CustomerService, tenants: Tenants
) -> None:
    owner = tenants.owner()
    calls: list[Callable[[], object]] = [
        lambda: customers.list(owner),
        lambda: customers.change_plan(owner, owner.customer_id, "business"),
        lambda: customers.activate(owner, owner.customer_id),
        lambda: customers.reinstate(owner, owner.customer_id),
    ]
    for call in calls:
        with pytest.raises(Forbidden) as caught:
            call()
        assert caught.value.code == "staff_only"


def test_the_three_plans_are_seeded(agi_db: Database) -> None:
    plans = PlanService(agi_db)
    assert [(p["name"], p["max_sites"], p["max_members"]) for p in plans.list()] == [
        ("starter", 3, 3),
        ("business", 25, 10),
        ("enterprise", 250, 50),
    ]
    assert plans.get("enterprise")["metrics_retention_days"] == 90
    assert plans.get("starter")["min_check_interval_seconds"] == 300
    with pytest.raises(ValidationFailed) as caught:
        plans.get("free")
    assert caught.value.code == "unknown_plan"
