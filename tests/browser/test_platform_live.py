"""The platform's live views: a job resumed after a restart, the properties table updating in place, aggregated
price-change toasts, the price chart, filters in the URL, and stats pushed on a channel."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import UI_TIMEOUT, sign_in
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

expect: Any = pytest.importorskip("playwright.sync_api").expect

SLOW_CRAWL = (
    '{"DOWNLOAD_DELAY": 0.3, "RANDOMIZE_DOWNLOAD_DELAY": false, "AUTOTHROTTLE_ENABLED": false,'
    ' "CONCURRENT_REQUESTS": 1, "LOG_LEVEL": "WARNING"}'
)
FAST_CRAWL = '{"DOWNLOAD_DELAY": 0, "LOG_LEVEL": "WARNING", "CONCURRENT_REQUESTS": 8}'


def start_job(server: LiveServer, user: str = "ann") -> int:
    response = httpx.post(
        f"{server.url}/api/jobs",
        json={"spider_name": "listings", "target_urls": [f"{server.url}/sample-site/"]},
        headers={"Authorization": f"Bearer {server.token(user)}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    job_id: int = response.json()["job_id"]
    return job_id


def test_job_resumed_after_a_restart(
    server_factory: Any, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_CRAWL_SETTINGS": SLOW_CRAWL})
    server.create_user("ann")
    page = sign_in(new_page(), server, "ann")
    job_id = start_job(server)
    card = page.locator(f"#job-{job_id}")
    expect(card).to_have_attribute("data-status", "running")
    expect(card.locator(".items")).not_to_have_text("0 items scraped")
    server.stop()  # a graceful restart in the middle of the crawl
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    server.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=UI_TIMEOUT * 2)
    expect(card.locator(".job-resumed")).to_have_text("resumed after restart")
    expect(card).to_have_attribute("data-status", "running")
    shot(page, "job-resumed-running")
    expect(card).to_have_attribute("data-status", "completed", timeout=UI_TIMEOUT * 4)
    expect(card.locator(".job-resumed")).to_have_text("resumed after restart")
    expect(card.locator(".job-error")).to_have_text("")
    shot(page, "job-resumed-completed")


def wait_job(server: LiveServer, job_id: int, user: str = "ann", timeout: float = 180) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    while True:
        job: dict[str, Any] = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"] not in ("pending", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def properties(server: LiveServer, **params: Any) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {server.token('ann')}"}
    reply = httpx.get(f"{server.url}/api/properties", params={"limit": 500, **params}, headers=headers, timeout=10)
    found: list[dict[str, Any]] = reply.json()["properties"]
    return found


@pytest.fixture
def crawled(server_factory: Any) -> LiveServer:
    """A server whose catalogue was filled by one crawl of its sample site."""
    server: LiveServer = server_factory(env={"TIDINGS_CRAWL_SETTINGS": FAST_CRAWL})
    server.create_user("ann")
    assert wait_job(server, start_job(server))["status"] == "completed"
    return server


def test_price_changes_update_the_open_table_in_one_toast_and_the_chart(
    crawled: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    server = crawled
    before = {p["property_id"]: p for p in properties(server)}
    page = sign_in(new_page(), server, "ann", hash_="#properties")
    rows = page.locator("#properties tr")
    expect(rows).to_have_count(len(before))

    (server.data_dir / "sample-site-price-version").write_text("1")  # every fifth listing changes price
    assert wait_job(server, start_job(server))["status"] == "completed"
    after = {p["property_id"]: p for p in properties(server)}
    changed = sorted(i for i, p in after.items() if p["price"] != before[i]["price"])
    assert len(changed) >= 10

    # The table changed in place while open, every changed row highlighted, with the new price.
    for property_id in changed:
        row = page.locator(f"#properties tr[data-property-id='{property_id}']")
        expect(row).to_have_class(re.compile(r"\bchanged\b"))
        price = after[property_id]["price"]
        expect(row.locator(".price")).to_have_attribute(
            "data-price", f"{price:.0f}" if price == int(price) else str(price)
        )
    expect(rows).to_have_count(len(before))

    # One toast for all of them: none dropped.
    toast = page.locator(".toast[data-kind=price]")
    expect(toast).to_have_count(1)
    expect(toast).to_have_attribute("data-count", str(len(changed)))
    expect(toast.locator(".toast-title")).to_have_text(f"{len(changed)} prices changed — view")
    first = after[changed[-1]]
    expect(toast.locator(".toast-list a").first).to_have_text(first["title"])
    expect(toast.locator(".toast-list li").first).to_contain_text("%")
    symbol = {"EUR": "€", "GBP": "£", "USD": "$"}.get(first["currency"], first["currency"])
    expect(toast.locator(".toast-list li").first).to_contain_text(symbol)
    shot(page, "properties-live-prices")

    # The toast links to the property: its page formats the history and draws it.
    toast.locator(".toast-list a").first.click()
    expect(page.locator("#property-view")).to_be_visible()
    expect(page.locator("#property-title")).to_have_text(first["title"])
    change = page.locator("#property-history .price-change").first
    expect(change.locator(".change")).to_have_text(re.compile(r"^[▲▼■] [+\u2212±]\d+\.\d%$"))
    expect(change.locator(".prices")).to_contain_text(symbol)
    expect(change.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    chart = page.locator("#price-chart")
    expect(chart).to_have_attribute("data-points", "3")  # first seen, the change, now
    drawn = page.evaluate("() => window.Chart.getChart(document.querySelector('#price-chart')).data.datasets[0].data")
    assert drawn[-1] == first["price"] and drawn[0] != first["price"]
    shot(page, "property-price-chart")


def test_filters_are_in_the_url(
    crawled: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    server = crawled
    london = properties(server, location="London")
    assert 0 < len(london) < len(properties(server))
    page = sign_in(new_page(), server, "ann", hash_="#properties?location=London")
    expect(page.locator("#filter-location")).to_have_value("London")
    expect(page.locator("#properties tr")).to_have_count(len(london))
    cheapest = sorted(p["price"] for p in london if p["price"] is not None)
    floor = cheapest[len(cheapest) // 2]
    page.fill("#filter-min", str(floor))
    expected = [p for p in london if p["price"] is not None and p["price"] >= floor]
    expect(page.locator("#properties tr")).to_have_count(len(expected))
    page.wait_for_function(f"() => location.hash === '#properties?location=London&min_price={floor}'")
    expect(page.locator("#properties-count")).to_contain_text(f"{len(expected)} of {len(expected)}")
    shot(page, "properties-filtered")
    # The URL is the view: opening it elsewhere shows the same rows.
    other = sign_in(new_page(), server, "ann", hash_=f"#properties?location=London&min_price={floor}")
    expect(other.locator("#filter-min")).to_have_value(str(floor))
    expect(other.locator("#properties tr")).to_have_count(len(expected))
    other.locator("#property-filters button[type=reset]").click()
    other.wait_for_function("() => location.hash === '#properties'")
    expect(other.locator("#properties tr")).to_have_count(len(properties(server)))


def test_stats_are_pushed_and_shown_stale_while_disconnected(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    page = sign_in(new_page(), server, "ann")
    bob = sign_in(new_page(), server, "bob")
    expect(page.locator("#stat-connections")).to_have_text("2")
    expect(page.locator("#stat-rate")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    page.wait_for_function("() => window.tidings && true")
    pushed = page.evaluate(
        """() => new Promise((resolve) => {
            const off = window.tidings.onMessage('stats_update', (m) => { off(); resolve(m); });
        })"""
    )
    assert pushed["channel"] == "dashboard_stats" and pushed["connections"] == 2 and "deliveries" in pushed
    bob.close()
    expect(page.locator("#stat-connections")).to_have_text("1")
    log = server.log()
    assert log.count("GET /api/stats") <= 0  # fetched once at start, and at DEBUG: no INFO line for it
    assert "GET /api/dashboard/rates" not in log
    assert "GET /dashboard" not in log

    server.stop()
    tiles = page.locator(".tiles")
    expect(tiles).to_have_attribute("data-stale", "true")
    expect(page.locator("#stats-note")).to_contain_text("not live")
    expect(page.locator("#stat-connections")).to_have_text("1")  # the last figure, marked stale
    shot(page, "stats-stale")
    server.start()
    expect(tiles).to_have_attribute("data-stale", "false", timeout=UI_TIMEOUT * 2)
    expect(page.locator("#stats-note")).to_have_text("live")
