"""Real crawls of the sample site through run_crawl / arun_crawl (Scrapy in a child process)."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import re
import threading
import time
import uuid
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from tidings.crawler.items import PropertyItem
from tidings.crawler.runner import CrawlProgress, CrawlResult, arun_crawl, run_crawl
from tidings.crawler.sample_site import Outcome, generate_listings, write_static_site
from tidings.crawler.sample_site.generator import ExpectedItem

from .conftest import FAST, SiteServer

LISTING_ID = re.compile(r"/listing/(\d+)\.html$")
CHANGING = frozenset(range(5, 61, 5))
WELL_FORMED = {x.id for x in generate_listings() if x.outcome is Outcome.OK}
ITEM_IDS = {x.id for x in generate_listings() if x.outcome in (Outcome.OK, Outcome.LENIENT)}


def by_id(items: list[PropertyItem]) -> dict[int, PropertyItem]:
    out: dict[int, PropertyItem] = {}
    for item in items:
        match = LISTING_ID.search(item.url)
        assert match, item.url
        listing_id = int(match.group(1))
        assert listing_id not in out, f"listing {listing_id} scraped twice"
        out[listing_id] = item
    return out


def as_expected(item: PropertyItem) -> ExpectedItem:
    return ExpectedItem(item.title, item.price, item.currency, item.location, item.bedrooms, item.area_m2)


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def full_crawl(site: SiteServer) -> tuple[CrawlResult, list[PropertyItem], list[CrawlProgress]]:
    """One complete synchronous crawl of the site at its root, price version 0."""
    site.price_version = 0
    items: list[PropertyItem] = []
    progress: list[CrawlProgress] = []
    result = run_crawl(
        "listings", [site.root], on_item=items.append, on_progress=progress.append, settings=FAST
    )
    return result, items, progress


def test_full_crawl_finds_exactly_the_designed_listings(
    full_crawl: tuple[CrawlResult, list[PropertyItem], list[CrawlProgress]],
) -> None:
    result, items, _ = full_crawl
    assert result.reason == "finished", result.error
    assert result.error is None and result.close_reason == "finished"
    assert "robotstxt/request_count" not in result.stats
    assert result.items_scraped == len(items) == 57
    scraped = by_id(items)
    assert set(scraped) == ITEM_IDS
    assert len(WELL_FORMED) == 48
    for listing in generate_listings():
        if listing.id in scraped:
            assert as_expected(scraped[listing.id]) == listing.expected(0), listing.id
    well_formed = [scraped[i] for i in WELL_FORMED]
    assert all(isinstance(x.price, Decimal) and x.currency and x.location for x in well_formed)
    assert all(x.bedrooms is not None and x.area_m2 is not None for x in well_formed)
    assert all(x.scraped_at.tzinfo is not None for x in items)
    # 1 index + 7 location pages + 60 detail pages (one of them a 404).
    assert result.pages_crawled == 68


def test_malformed_listings_are_handled_as_designed(
    full_crawl: tuple[CrawlResult, list[PropertyItem], list[CrawlProgress]],
) -> None:
    result, items, _ = full_crawl
    scraped = by_id(items)
    # Skipped with a logged, reported reason.
    assert sorted((s.url or "").rsplit("/", 1)[-1] for s in result.skipped) == ["28.html", "3.html"]
    assert {s.reason for s in result.skipped} == {"missing title"}
    # The broken detail page is an error, but the crawl still finished.
    assert [(e.kind, e.url.rsplit("/", 1)[-1] if e.url else None, e.message) for e in result.errors] == [
        ("http", "53.html", "HTTP 404")
    ]
    # Lenient parses.
    assert scraped[7].price is None and scraped[7].price_text == "Price on request"
    assert scraped[12].price is None and scraped[12].currency is None  # "€ 1.61O.000,-"
    assert scraped[33].price is None and scraped[33].price_text is None  # no price element
    assert scraped[37].price == Decimal(1_515_000) and scraped[37].currency == "GBP"  # "Offers over £..."
    assert scraped[18].price == Decimal(1_265_000) and scraped[18].currency is None
    assert scraped[41].location == "Camden, London"  # taken from the listing card
    assert scraped[47].bedrooms is None and scraped[24].area_m2 is None
    assert scraped[58].title == "Sunny studio in Dorchester"  # tags and whitespace runs collapsed


def test_progress_is_reported_every_n_items_and_at_the_end(
    full_crawl: tuple[CrawlResult, list[PropertyItem], list[CrawlProgress]],
) -> None:
    _, _, progress = full_crawl
    assert [p.items_scraped for p in progress] == [10, 20, 30, 40, 50, 57]
    assert progress[-1].pages_crawled == 68 and progress[-1].skipped == 2 and progress[-1].errors == 1
    assert all(a.elapsed <= b.elapsed for a, b in itertools.pairwise(progress))


async def test_async_crawl_under_prefix_sees_exactly_the_price_changes(
    site: SiteServer, full_crawl: tuple[CrawlResult, list[PropertyItem], list[CrawlProgress]]
) -> None:
    _, items_v0, _ = full_crawl
    site.price_version = 1  # bumped while the server runs
    items_v1: list[PropertyItem] = []

    async def store(item: PropertyItem) -> None:  # async on_item is awaited
        await asyncio.sleep(0)
        items_v1.append(item)

    try:
        # Also: robots.txt handling is configurable (off by default for the local site).
        settings = {**FAST, "ROBOTSTXT_OBEY": True}
        result = await arun_crawl("listings", [site.prefixed], on_item=store, settings=settings)
    finally:
        site.price_version = 0
    assert result.reason == "finished", result.error
    assert result.stats["robotstxt/request_count"] == 1
    assert all(item.url.startswith(site.prefixed) for item in items_v1)
    before, after = by_id(items_v0), by_id(items_v1)
    assert set(before) == set(after) == ITEM_IDS
    changed = {i for i in before if before[i].price != after[i].price}
    assert changed == CHANGING
    listings = generate_listings()
    for i in changed:
        assert after[i].price == listings[i - 1].price(1) != listings[i - 1].price(0)
    for i in before:  # nothing else moved
        a, b = as_expected(before[i]), as_expected(after[i])
        assert (a.title, a.location, a.bedrooms, a.area_m2) == (b.title, b.location, b.bedrooms, b.area_m2)


def test_crawl_of_the_static_site(tmp_path: Path) -> None:
    write_static_site(tmp_path)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = partial(QuietHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            items: list[PropertyItem] = []
            url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
            result = run_crawl("listings", [url], on_item=items.append, settings=FAST)
        finally:
            server.shutdown()
    assert result.reason == "finished", result.error
    assert set(by_id(items)) == ITEM_IDS
    assert len(result.skipped) == 2 and [e.message for e in result.errors] == ["HTTP 404"]


def test_should_stop_cancels_the_crawl(site: SiteServer) -> None:
    items: list[PropertyItem] = []
    started = time.monotonic()
    result = run_crawl(
        "listings",
        [site.root],
        on_item=items.append,
        should_stop=lambda: len(items) >= 3,
        settings={"DOWNLOAD_DELAY": 0.15, "AUTOTHROTTLE_ENABLED": False, "CONCURRENT_REQUESTS_PER_DOMAIN": 1},
        poll_interval=0.05,
    )
    elapsed = time.monotonic() - started
    assert result.reason == "cancelled"
    assert result.error is None
    assert 3 <= result.items_scraped == len(items) < 10  # nothing delivered after the stop request
    assert result.close_reason == "shutdown"  # the child shut down gracefully and reported
    assert elapsed < 30  # generous: the machine may be busy


async def test_stop_event_cancels_an_async_crawl(site: SiteServer) -> None:
    stop = asyncio.Event()
    items: list[PropertyItem] = []

    def on_item(item: PropertyItem) -> None:
        items.append(item)
        if len(items) == 3:
            stop.set()

    result = await arun_crawl(
        "listings",
        [site.root],
        on_item=on_item,
        stop_event=stop,
        settings={"DOWNLOAD_DELAY": 0.15, "AUTOTHROTTLE_ENABLED": False, "CONCURRENT_REQUESTS_PER_DOMAIN": 1},
    )
    assert result.reason == "cancelled"
    assert result.items_scraped == len(items) == 3
    assert result.exit_code == 0


async def test_cancelling_the_task_stops_the_child_process(site: SiteServer) -> None:
    marker = uuid.uuid4().hex
    items: list[PropertyItem] = []
    task = asyncio.create_task(
        arun_crawl(
            "listings",
            [f"{site.root}?run={marker}"],
            on_item=items.append,
            settings={"DOWNLOAD_DELAY": 0.3, "AUTOTHROTTLE_ENABLED": False},
            grace_period=5,
        )
    )
    deadline = time.monotonic() + 20
    while not items:
        assert time.monotonic() < deadline, "the crawl produced no item"
        assert not task.done(), task
        await asyncio.sleep(0.05)
    assert processes_with(marker), "the crawl child should be running"
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5 + 5  # grace period, then SIGKILL
    assert processes_with(marker) == []
    assert len(items) < 57


def test_timeout_fails_the_crawl(site: SiteServer) -> None:
    items: list[PropertyItem] = []
    slow = {"DOWNLOAD_DELAY": 0.5, "AUTOTHROTTLE_ENABLED": False, "CONCURRENT_REQUESTS_PER_DOMAIN": 1}
    started = time.monotonic()
    result = run_crawl(
        "listings", [site.root], on_item=items.append, settings=slow, timeout=2.5, grace_period=5
    )
    assert result.reason == "failed"
    assert result.error == "Crawl timed out after 2.5 s"
    assert len(items) < 57
    assert time.monotonic() - started < 2.5 + 5 + 7  # timeout + grace period + slack


def test_unreachable_target_fails_with_a_readable_error() -> None:
    items: list[PropertyItem] = []
    result = run_crawl("listings", ["http://127.0.0.1:9/"], on_item=items.append, settings=FAST)
    assert result.reason == "failed"
    assert result.error == "Could not reach http://127.0.0.1:9/ : Connection refused"
    assert result.items_scraped == 0 and items == []
    assert [(e.kind, e.start) for e in result.errors] == [("unreachable", True)]


async def test_unresolvable_host_fails_with_a_readable_error() -> None:
    result = await arun_crawl("listings", ["http://no-such-host.invalid/"], on_item=lambda item: None)
    assert result.reason == "failed"
    assert result.error is not None
    assert result.error.startswith("Could not reach http://no-such-host.invalid/ : DNS lookup failed")


def test_unknown_spider_and_missing_page_fail(site: SiteServer) -> None:
    unknown = run_crawl("nope", [site.root], on_item=lambda item: None)
    assert unknown.reason == "failed"
    assert unknown.error == "Unknown spider 'nope' (available: listings)"
    missing = run_crawl("listings", [f"{site.root}listing/53.html"], on_item=lambda item: None, settings=FAST)
    assert missing.reason == "failed"
    assert missing.error == f"Could not fetch {site.root}listing/53.html : HTTP 404"


def test_on_item_exception_stops_the_child_and_propagates(site: SiteServer) -> None:
    marker = uuid.uuid4().hex

    def explode(item: PropertyItem) -> None:
        raise RuntimeError("storage is down")

    with pytest.raises(RuntimeError, match="storage is down"):
        run_crawl("listings", [f"{site.root}?run={marker}"], on_item=explode, settings=FAST, grace_period=5)
    assert processes_with(marker) == []
