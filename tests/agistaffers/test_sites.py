"""Sites: adding under the plan limit (also concurrently), domain uniqueness, tenancy, listing, deletion."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import pytest

from functions.agistaffers.schemas import SiteCreate, SiteListQuery, SitePatch
from functions.agistaffers.services.accounts import Actor
from functions.agistaffers.services.customers import CustomerService
from functions.agistaffers.services.sites import SiteService
from shared.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from tests.agistaffers.conftest import Tenants

SITE_KEYS = {"id", "customer_id", "domain", "label", "status", "container_id", "created_at", "updated_at"}


def test_adding_a_site(sites: SiteService, tenants: Tenants) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    site = sites.add(member, "  WWW.Example.COM. ", label="Main shop")
    assert set(site) == SITE_KEYS | {"ingest_token"}
    assert site["domain"] == "www.example.com"
    assert site["status"] == "provisioning"
    assert site["label"] == "Main shop"
    assert str(site["customer_id"]) == owner.customer_id
    token = site.pop("ingest_token")
    assert token.startswith("agi_ingest_")
    # Shown once: reads never return it.
    assert sites.get(owner, site["id"]) == site
    with pytest.raises(ValidationFailed) as caught:
        sites.add(owner, "printer.local")
    assert caught.value.code == "invalid_domain"
    assert caught.value.details == [{"reason": "reserved_suffix"}]


def test_staff_cannot_add_a_site_without_a_customer(sites: SiteService, staff: Actor) -> None:
    with pytest.raises(Forbidden) as caught:
        sites.add(staff, "example.com")
    assert caught.value.code == "customer_required"


def test_the_plan_limits_sites_and_deleted_ones_do_not_count(sites: SiteService, tenants: Tenants) -> None:
    owner = tenants.owner(plan="starter")  # max_sites 3
    added = [sites.add(owner, f"s{n}.example.com") for n in range(3)]
    with pytest.raises(Conflict) as caught:
        sites.add(owner, "s3.example.com")
    assert caught.value.code == "plan_limit"
    assert caught.value.details == {"limit": 3, "plan": "starter"}
    sites.delete(owner, added[0]["id"])
    assert sites.add(owner, "s3.example.com")["status"] == "provisioning"


def test_concurrent_adds_never_exceed_the_plan(
    sites: SiteService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owner = tenants.owner(plan="starter")
    threads_count = 10
    barrier = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def add(n: int) -> None:
        barrier.wait()
        try:
            sites.add(owner, f"race{n}.example.com")
            outcome = "added"
        except AppError as exc:
            outcome = exc.code
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("added") == 3
    assert outcomes.count("plan_limit") == threads_count - 3
    stored = sql.execute(
        "SELECT count(*) FROM customer_sites WHERE customer_id = %s AND status <> 'deleted'", (owner.customer_id,)
    ).fetchone()
    assert stored == (3,)


def test_concurrent_adds_of_one_domain_by_two_customers_make_one_site(
    sites: SiteService, tenants: Tenants, sql: psycopg.Connection[Any]
) -> None:
    owners = [tenants.owner() for _ in range(4)]
    barrier = threading.Barrier(len(owners))
    outcomes: list[str] = []

    def add(owner: Actor) -> None:
        barrier.wait()
        try:
            sites.add(owner, "contested.example.com")
            outcomes.append("added")
        except AppError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=add, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added", "domain_taken", "domain_taken", "domain_taken"]
    assert sql.execute("SELECT count(*) FROM customer_sites").fetchone() == (1,)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("example.com", "EXAMPLE.com"),
        ("example.com", "example.com."),
        ("Bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "BÜCHER.DE"),
    ],
)
def test_a_domain_is_hosted_once_across_customers(
    sites: SiteService, tenants: Tenants, first: str, second: str
) -> None:
    a, b = tenants.owner(), tenants.owner()
    sites.add(a, first)
    for who in (b, a):
        with pytest.raises(Conflict) as caught:
            sites.add(who, second)
        assert caught.value.code == "domain_taken"


def test_a_deleted_sites_domain_can_be_added_again(sites: SiteService, tenants: Tenants, staff: Actor) -> None:
    a, b = tenants.owner(), tenants.owner()
    old = sites.add(a, "Bücher.de")
    deleted = sites.delete(a, old["id"])
    assert deleted["status"] == "deleted"
    again = sites.add(b, "xn--bcher-kva.de")
    assert again["domain"] == "xn--bcher-kva.de"
    assert again["id"] != old["id"]
    # And again once more, by the first customer, after the second deletes it.
    sites.delete(b, again["id"])
    sites.add(a, "bücher.de")
    deleted_rows = sites.list(staff, status="deleted")["items"]
    assert {row["id"] for row in deleted_rows} == {old["id"], again["id"]}


def test_another_customers_site_does_not_exist(sites: SiteService, tenants: Tenants) -> None:
    a, b = tenants.owner(), tenants.owner()
    site = sites.add(a, "alpha.example.com")
    calls: list[Callable[[Any], object]] = [
        lambda site_id: sites.get(b, site_id),
        lambda site_id: sites.update(b, site_id, {"label": "mine now"}),
        lambda site_id: sites.delete(b, site_id),
    ]
    for call in calls:
        for site_id in (site["id"], str(site["id"]), str(uuid.uuid4()), "not-a-uuid", None, 7):
            with pytest.raises(NotFound) as caught:
                call(site_id)
            assert caught.value.code == "site_not_found"
    assert sites.get(a, site["id"])["label"] is None
    assert sites.list(b)["items"] == []
    with pytest.raises(NotFound):
        sites.list(b, customer_id=a.customer_id)


def test_who_changes_and_deletes_a_site(sites: SiteService, tenants: Tenants, staff: Actor) -> None:
    owner = tenants.owner()
    member = tenants.member(owner)
    site = sites.add(owner, "team.example.com")
    assert sites.update(member, site["id"], {"label": "Team site"})["label"] == "Team site"
    assert sites.update(owner, site["id"], {"label": None})["label"] is None
    with pytest.raises(Forbidden):
        sites.update(owner, site["id"], {"status": "active"})
    for changes, code in [
        ({"domain": "other.example.com"}, "unknown_field"),
        ({"container_id": "abc"}, "unknown_field"),
        ({}, "no_changes"),
        ({"label": "x" * 101}, "invalid_label"),
        ({"label": "  "}, "invalid_label"),
    ]:
        with pytest.raises(ValidationFailed) as caught:
            sites.update(owner, site["id"], changes)
        assert caught.value.code == code
    assert sites.update(staff, site["id"], {"status": "suspended"})["status"] == "suspended"
    assert sites.update(staff, site["id"], {"status": "active", "label": "Fixed"})["label"] == "Fixed"
    with pytest.raises(ValidationFailed):
        sites.update(staff, site["id"], {"status": "deleted"})
    with pytest.raises(Forbidden) as forbidden:
        sites.delete(member, site["id"])
    assert forbidden.value.code == "owner_only"
    sites.delete(owner, site["id"])
    # Gone for the customer; staff still see it, and cannot change it.
    with pytest.raises(NotFound):
        sites.get(owner, site["id"])
    with pytest.raises(NotFound):
        sites.delete(owner, site["id"])
    assert sites.get(staff, site["id"])["status"] == "deleted"
    with pytest.raises(NotFound):
        sites.update(staff, site["id"], {"label": "zombie"})


def test_a_suspended_customer_reads_its_sites_but_cannot_change_them(
    sites: SiteService, customers: CustomerService, tenants: Tenants, staff: Actor
) -> None:
    owner = tenants.owner()
    site = sites.add(owner, "frozen.example.com")
    customers.suspend(staff, owner.customer_id, "unpaid")
    for actor in (owner, tenants.refresh(owner)):  # the actor read before, and after
        assert sites.get(actor, site["id"])["domain"] == "frozen.example.com"
        assert len(sites.list(actor)["items"]) == 1
        calls: list[Callable[[], object]] = [
            partial(sites.add, actor, "more.example.com"),
            partial(sites.update, actor, site["id"], {"label": "x"}),
            partial(sites.delete, actor, site["id"]),
        ]
        for call in calls:
            with pytest.raises(Forbidden) as caught:
                call()
            assert caught.value.code == "customer_suspended"
    customers.reinstate(staff, owner.customer_id)
    assert sites.update(tenants.refresh(owner), site["id"], {"label": "Thawed"})["label"] == "Thawed"


def test_listing_for_customers_and_staff(sites: SiteService, tenants: Tenants, staff: Actor) -> None:
    a = tenants.owner(plan="business")
    b = tenants.owner(plan="business")
    a_sites = [sites.add(a, f"a{n}.example.com", label=f"Alpha {n}") for n in range(3)]
    b_sites = [sites.add(b, f"b{n}.example.org") for n in range(2)]
    sites.delete(a, a_sites[0]["id"])
    sites.update(staff, b_sites[1]["id"], {"status": "suspended"})

    def domains(actor: Actor, **filters: Any) -> set[str]:
        return {site["domain"] for site in sites.list(actor, **filters)["items"]}

    assert domains(a) == {"a1.example.com", "a2.example.com"}
    assert domains(a, customer_id=a.customer_id) == {"a1.example.com", "a2.example.com"}
    assert domains(a, status="deleted") == set()
    assert domains(a, q="alpha 2") == {"a2.example.com"}
    assert domains(b, status="suspended") == {"b1.example.org"}
    assert domains(staff) == {"a1.example.com", "a2.example.com", "b0.example.org", "b1.example.org"}
    assert domains(staff, status="deleted") == {"a0.example.com"}
    assert domains(staff, customer_id=b.customer_id) == {"b0.example.org", "b1.example.org"}
    assert domains(staff, q=".org", status="provisioning") == {"b0.example.org"}
    assert domains(staff, q="_") == set()  # _ is literal, not a wildcard
    newest_first = [site["domain"] for site in sites.list(staff)["items"]]
    assert newest_first[0] == "b1.example.org"
    with pytest.raises(ValidationFailed):
        sites.list(staff, status="gone")
    with pytest.raises(ValidationFailed):
        sites.list(staff, customer_id="junk")


def test_keyset_pages_return_every_site_exactly_once(
    sites: SiteService, tenants: Tenants, staff: Actor, sql: psycopg.Connection[Any]
) -> None:
    owners = [tenants.owner(plan="business") for _ in range(3)]
    for i, owner in enumerate(owners):
        for n in range(4):
            sites.add(owner, f"p{i}-{n}.example.com")
    # Several sites at the same instant: the id breaks the tie, so none is skipped or repeated.
    sql.execute("UPDATE customer_sites SET created_at = '2027-03-01T12:00:00Z' WHERE domain LIKE 'p1-%'")
    for actor, expected in [(staff, 12), (owners[0], 4)]:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = sites.list(actor, limit=3, cursor=cursor)
            pages += 1
            seen.extend(site["domain"] for site in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == expected
        assert len(set(seen)) == expected
        assert pages == -(-expected // 3)
    with pytest.raises(ValidationFailed) as caught:
        sites.list(staff, cursor="@@@")
    assert caught.value.code == "invalid_cursor"


def test_site_request_schemas() -> None:
    assert SiteCreate.model_validate({"domain": " Bücher.de "}).domain == "Bücher.de"
    assert SitePatch.model_validate({"label": None}).changes() == {"label": None}
    query = SiteListQuery.model_validate({"limit": "10", "customer_id": str(uuid.uuid4())})
    assert query.limit == 10
    for bad_body in ({"domain": "x.com", "owner": "me"}, {"domain": 5}, {"domain": "a\x00.com"}, {"domain": ""}):
        with pytest.raises(ValueError):
            SiteCreate.model_validate(bad_body)
    for bad_patch in ({}, {"status": None}, {"status": "deleted"}):
        with pytest.raises(ValueError):
            SitePatch.model_validate(bad_patch)
    for bad_query in ({"limit": "0"}, {"limit": "101"}, {"customer_id": "nope"}, {"status": "gone"}):
        with pytest.raises(ValueError):
            SiteListQuery.model_validate(bad_query)
