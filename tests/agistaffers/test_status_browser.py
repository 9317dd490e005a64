"""The public status page in a real browser: Debian's headless Chromium, driven by playwright (its
own browser download is never used), loads ``/status/{slug}`` THROUGH the local edge, which proxies
to the real AGI Staffers API on real PostgreSQL and Redis.

The data is seeded as the rollups would leave it: 90 days of hourly ``up`` rollups per site (count 60,
one check a minute) behind the 1-hour watermark and minute rollups since, with downtime at known
hours, and incidents. The expected percentages are computed here from those seeded counts.

Checked with JavaScript disabled (the page must not need it): the content, the accessibility tree
(lang, one h1, landmarks, named bar lists whose days carry text, states in words), and, through a
second page with JavaScript, that the edge's CSP lets the inline stylesheet apply. Screenshots (light
desktop and dark phone) are kept under ``.artefacts/`` and their paths printed. Without
``/usr/bin/chromium`` (``make browser`` installs it as root) the tests skip and say why.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devstack.edge_server import local_edge_config, start_local_edge
from devstack.local_api import local_server
from functions.agistaffers.services import rollups
from functions.agistaffers.services.sites import SiteService
from shared.status_page import STATUS_PAGE_CSS_HASH
from tests.agistaffers.conftest import Tenants
from tests.conftest import SIGNING_SECRET

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
# The flags that work on these machines (no GPU, no sandbox as root, nothing fetched in the background).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOURS = 90 * 24 - 1  # hourly buckets seeded before the watermark: all inside the 90-day window
WINDOWS = {"Last 24 hours": 23, "Last 7 days": 7 * 24 - 1, "Last 30 days": 30 * 24 - 1, "Last 90 days": HOURS}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium as root)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def edge_url(configured_agi_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real AGI Staffers API over HTTP (as ``agistack dev`` serves it) behind the
    real local edge; the edge's URL."""
    api = local_server(configured_agi_app, "127.0.0.1", 0)
    api.start()
    api_url = api.url
    config = local_edge_config(
        {},
        signing_secret=SIGNING_SECRET,
        # Only AGI Staffers is reached here; the gateway insists on an origin for each product.
        origins={"AGISTAFFERS_ORIGIN": api_url, "STEPPERSLIFE_ORIGIN": api_url},
        media_base_url="http://127.0.0.1:9/media",
        vapid_public_key=None,
    )
    edge = start_local_edge("127.0.0.1", 0, tmp_path_factory.mktemp("status-edge"), config)
    yield edge.url
    # playwright's sync API keeps an event loop running on this thread; the edge stops its own loop
    # with run_until_complete, which asyncio refuses there: stop it from a thread of its own.
    stopping = threading.Thread(target=edge.stop, name="status-page-edge-stop")
    stopping.start()
    stopping.join()
    api.stop()


@dataclass
class SeededSite:
    name: str
    down_hours: set[int]  # hours before the watermark that were down
    down_now: bool  # the minutes since the watermark
    up_by_window: dict[str, tuple[int, int]] = field(default_factory=dict)
    up_by_day: dict[date, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Seeded:
    slug: str
    sites: list[SeededSite]


def seed(sql: psycopg.Connection[Any], tenants: Tenants, sites: SiteService) -> Seeded:
    """Three sites of one customer: one always up, one with past outages, one down now; an open and a
    resolved incident. Returns the counts each percentage on the page must come from."""
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 45:
        # The windows move with the hour: seed and load inside one hour, or the counts would not match.
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    hour = rollups.floor_to(now, rollups.HOUR)
    minutes = int((rollups.floor_to(now, rollups.MINUTE) - hour) / rollups.MINUTE) + 1
    owner = tenants.owner(plan="business", company="Northwind Bakery")
    plans = [
        SeededSite("Online shop", set(), down_now=False),
        SeededSite("Booking API", {50, 51, 52, 24 * 20 + 5}, down_now=False),
        SeededSite("Blog", {1, 24 * 40 + 3, 24 * 40 + 4}, down_now=True),
    ]
    ids = {}
    for index, plan in enumerate(plans):
        ids[plan.name] = sites.add(owner, f"site{index}.northwind.example.com", label=plan.name)["id"]
        sql.execute(
            "INSERT INTO metric_rollups_1h (site_id, metric, bucket, count, min, max, sum, p95) "
            "SELECT %(site)s, 'up', %(hour)s - k * interval '1 hour', 60, 1 - down::int, 1 - down::int, "
            "60 * (1 - down::int), 1 - down::int "
            "FROM (SELECT k, k = ANY(%(down)s) AS down FROM generate_series(1, %(hours)s) k) h",
            {"site": ids[plan.name], "hour": hour, "down": sorted(plan.down_hours), "hours": HOURS},
        )
        sql.execute(
            "INSERT INTO metric_rollups_1m (site_id, metric, bucket, count, min, max, sum, p95) "
            "SELECT %s, 'up', %s + m * interval '1 minute', 1, %s, %s, %s, 1 FROM generate_series(0, %s) m",
            (ids[plan.name], hour, *(3 * [0 if plan.down_now else 1]), minutes - 1),
        )
        up_now = 0 if plan.down_now else minutes
        plan.up_by_window = {
            name: (60 * (count - len({k for k in plan.down_hours if k <= count})) + up_now, 60 * count + minutes)
            for name, count in WINDOWS.items()
        }
        by_day: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for k in range(1, HOURS + 1):
            day = (hour - timedelta(hours=k)).date()
            by_day[day][0] += 0 if k in plan.down_hours else 60
            by_day[day][1] += 60
        by_day[hour.date()][0] += up_now
        by_day[hour.date()][1] += minutes
        plan.up_by_day = {day: (up, count) for day, (up, count) in by_day.items()}
    sql.execute(
        "INSERT INTO rollup_watermarks (name, done_until) VALUES ('1h', %s) "
        "ON CONFLICT (name) DO UPDATE SET done_until = EXCLUDED.done_until",
        (hour,),
    )
    sql.execute(
        "INSERT INTO incidents (site_id, kind, title, opened_at, resolved_at) VALUES "
        "(%s, 'downtime', 'Blog is not responding', %s, NULL), "
        "(%s, 'downtime', 'Booking API unreachable', %s, %s)",
        (
            ids["Blog"],
            hour - timedelta(hours=1),
            ids["Booking API"],
            hour - timedelta(hours=52),
            hour - timedelta(hours=49),
        ),
    )
    row = sql.execute("SELECT status_slug FROM customers WHERE id = %s", (owner.customer_id,)).fetchone()
    assert row is not None
    return Seeded(row[0], plans)


def percent(text: str) -> float:
    match = re.fullmatch(r"(\d+\.\d\d)%", text.strip())
    assert match, f"not a percentage: {text!r}"
    return float(match.group(1))


def assert_shows(text: str, up: int, count: int) -> None:
    """The page's two-decimal figure is the exact share, rounded."""
    assert abs(percent(text) - 100 * up / count) <= 0.0051, (text, up, count)


def artefact(repo_root: Path, name: str) -> Path:
    path = repo_root / ".artefacts" / name
    path.parent.mkdir(exist_ok=True)
    return path


def test_status_page_through_the_edge_without_javascript(
    browser: Browser,
    edge_url: str,
    sql: psycopg.Connection[Any],
    tenants: Tenants,
    sites: SiteService,
    repo_root: Path,
) -> None:
    seeded = seed(sql, tenants, sites)
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    response = page.goto(f"{edge_url}/status/{seeded.slug}")
    assert response is not None and response.status == 200
    assert STATUS_PAGE_CSS_HASH in response.headers["content-security-policy"]
    assert page.locator("script").count() == 0

    assert page.locator("html").get_attribute("lang") == "en"
    assert page.title() == "Northwind Bakery status"
    h1 = page.get_by_role("heading", level=1)
    assert h1.count() == 1 and h1.inner_text() == "Northwind Bakery status"
    for landmark in ("banner", "main", "contentinfo"):
        assert page.get_by_role(landmark).count() == 1, landmark
    # The symbol beside the words is decorative: hidden from the accessibility tree.
    assert page.get_by_role("status").aria_snapshot() == "- status: Some systems are down"

    states = {"Online shop": "Operational", "Booking API": "Operational", "Blog": "Down"}
    for site in seeded.sites:
        card = page.get_by_role("region", name=site.name)
        assert card.count() == 1, site.name
        # The state is a word, not only a colour.
        assert card.locator(".state").inner_text().strip() == states[site.name]
        for window, (up, count) in site.up_by_window.items():
            assert_shows(card.locator("dl div").filter(has_text=window).locator("dd").inner_text(), up, count)
        bar = card.get_by_role("list", name=re.compile(f"^Daily uptime of {site.name}, last 90 days"))
        days = bar.get_by_role("listitem")
        assert days.count() == 90
        today = datetime.now(UTC).date()
        for offset in (0, 1, 2, 20, 40, 89):
            day = today - timedelta(days=offset)
            item = days.nth(89 - offset)
            text = item.text_content() or ""
            assert text.startswith(f"{day.isoformat()}: "), text
            assert item.get_attribute("title") == text
            if day in site.up_by_day:
                assert_shows(text.split(": ", 1)[1].split(" ")[0], *site.up_by_day[day])
    # Hour 51 is the middle of three down hours: its day holds at least two of them (under 95%).
    outage_day = (datetime.now(UTC) - timedelta(hours=51)).date()
    booking = page.get_by_role("region", name="Booking API")
    assert "bad" in (
        booking.get_by_role("listitem").filter(has_text=outage_day.isoformat()).get_attribute("class") or ""
    )

    incidents = page.get_by_role("region", name="Incidents")
    ongoing = incidents.get_by_role("listitem").filter(has_text="Blog is not responding")
    resolved = incidents.get_by_role("listitem").filter(has_text="Booking API unreachable")
    assert "Ongoing" in (ongoing.text_content() or "") and "Resolved" in (resolved.text_content() or "")

    screenshot = artefact(repo_root, "status-page.png")
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"status page screenshot: {screenshot}")
    context.close()


def test_status_page_styles_apply_under_the_edge_csp_in_dark_mode_on_a_phone(
    browser: Browser,
    edge_url: str,
    sql: psycopg.Connection[Any],
    tenants: Tenants,
    sites: SiteService,
    repo_root: Path,
) -> None:
    seeded = seed(sql, tenants, sites)
    context = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page: Page = context.new_page()
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    page.goto(f"{edge_url}/status/{seeded.slug}")
    assert refused == []
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    down_bar = page.evaluate("getComputedStyle(document.querySelector('ol.bar li.bad')).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), background  # dark, styled
    assert down_bar != "rgba(0, 0, 0, 0)"
    # No horizontal scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot = artefact(repo_root, "status-page-dark-phone.png")
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"status page screenshot (dark, phone): {screenshot}")
    context.close()
