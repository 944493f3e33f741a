"""The sample site's data, pages, ASGI app (also mounted under a prefix) and static writer -- no crawling."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tidings.crawler.sample_site import (
    LOCATIONS,
    Defect,
    Outcome,
    create_sample_site_app,
    generate_listings,
    price_changed_ids,
    price_version_from_file,
    summary,
    write_static_site,
)
from tidings.crawler.sample_site.__main__ import main as sample_site_main
from tidings.crawler.sample_site.pages import render_detail, render_listing_page

CHANGING = frozenset(range(5, 61, 5))


def test_counts_are_the_designed_ones() -> None:
    s = summary()
    assert (s.total, s.well_formed, s.malformed) == (60, 48, 12)
    assert (s.lenient, s.skipped, s.unreachable, s.items_expected) == (9, 2, 1, 57)
    assert (s.price_changing, s.pages) == (12, 7)
    assert [loc.listing_count for loc in LOCATIONS] == [25, 20, 15]
    assert [listing.id for listing in generate_listings()] == list(range(1, 61))
    assert {listing.defect for listing in generate_listings() if listing.defect} == set(Defect)


def test_generation_is_deterministic_and_versions_change_only_every_fifth_price() -> None:
    generate_listings.cache_clear()
    first = [(x.title, x.price_text(0), x.bedrooms_text(), x.area_text()) for x in generate_listings()]
    generate_listings.cache_clear()
    second = [(x.title, x.price_text(0), x.bedrooms_text(), x.area_text()) for x in generate_listings()]
    assert first == second
    assert generate_listings()[0].title == "Sunny studio in Jordaan"
    assert generate_listings()[0].price_text(0) == "€ 410.000"
    for version in (1, 2, -1):
        assert price_changed_ids(version) == CHANGING
    assert price_changed_ids(2, base_version=1) == CHANGING
    assert price_changed_ids(0) == frozenset()
    # No defect hides a price change, so every change is observable by a crawler.
    assert all(generate_listings()[i - 1].outcome is Outcome.OK for i in CHANGING)
    listing5 = generate_listings()[4]
    assert listing5.price(1) == Decimal(866_000) and listing5.price(0) == Decimal(825_000)


def test_pages_carry_the_markup_contract_and_version_only_touches_prices() -> None:
    page = render_listing_page("amsterdam", 1)
    assert page is not None
    assert page.count('class="listing listing-card"') == 10
    assert 'class="next" href="2.html"' in page and 'class="prev"' not in page
    last = render_listing_page("amsterdam", 3)
    assert last is not None and last.count("listing-card") == 5 and 'class="next"' not in last
    assert render_listing_page("amsterdam", 4) is None and render_listing_page("paris", 1) is None
    detail = render_detail(1)
    assert (
        detail is not None and 'data-listing-id="1"' in detail and '<p class="price">€ 410.000</p>' in detail
    )
    assert render_detail(53) is None  # the broken listing
    assert "<h1 class" not in (render_detail(3) or "")  # missing title
    # Between versions only the .price text of every 5th listing differs.
    for listing in generate_listings():
        v0, v1 = render_detail(listing.id, 0), render_detail(listing.id, 1)
        assert (v0 != v1) == (listing.id in CHANGING), listing.id
        if v0 and v1 and v0 != v1:
            strip = re.compile(r'<p class="price">[^<]*</p>')
            assert strip.sub("", v0) == strip.sub("", v1)


async def test_app_works_mounted_under_a_prefix_with_live_price_version(tmp_path: Path) -> None:
    version_file = tmp_path / "price_version"
    platform = FastAPI()
    platform.mount("/sample-site", create_sample_site_app(price_version_from_file(version_file)))
    transport = httpx.ASGITransport(app=platform)
    async with httpx.AsyncClient(transport=transport, base_url="http://platform") as client:
        redirect = await client.get("/sample-site")
        assert redirect.status_code in (307, 308)
        assert redirect.headers["location"].endswith("/sample-site/")
        index = await client.get("/sample-site/")
        assert index.status_code == 200
        first_link = re.search(r'class="location-link" href="([^"]+)"', index.text)
        assert first_link is not None
        page_url = httpx.URL("http://platform/sample-site/").join(first_link.group(1))
        assert page_url.path == "/sample-site/listings/amsterdam/page/1.html"
        page = await client.get(page_url)
        detail_href = re.search(r'class="detail-link" href="([^"]+)"', page.text)
        assert detail_href is not None
        detail_url = page_url.join(detail_href.group(1))
        assert detail_url.path == "/sample-site/listing/1.html"
        assert (await client.get(detail_url)).status_code == 200
        assert (await client.get("/sample-site/listing/53.html")).status_code == 404
        assert (await client.get("/sample-site/listing/999.html")).status_code == 404

        before = (await client.get("/sample-site/listing/5.html")).text
        assert "EUR 825.000" in before
        version_file.write_text("1")
        after = (await client.get("/sample-site/listing/5.html")).text
        assert "EUR 866.000" in after
        assert (await client.get("/sample-site/listing/5.html")).headers["cache-control"] == "no-store"


def test_static_site_writer_and_cli(tmp_path: Path) -> None:
    paths = write_static_site(tmp_path / "v0")
    relative = {p.relative_to(tmp_path / "v0").as_posix() for p in paths}
    assert len(relative) == 2 + 7 + 59
    assert {"index.html", "robots.txt", "listings/boston/page/2.html", "listing/60.html"} <= relative
    assert "listing/53.html" not in relative
    assert sample_site_main(["--write-static", str(tmp_path / "v1"), "--price-version", "1"]) == 0
    changed = {
        p.name
        for p in (tmp_path / "v0" / "listing").iterdir()
        if p.read_text() != (tmp_path / "v1" / "listing" / p.name).read_text()
    }
    assert changed == {f"{i}.html" for i in CHANGING}


@pytest.mark.parametrize("value, expected", [("3", 3), ("", 0), ("garbage", 0)])
def test_price_version_file_getter(tmp_path: Path, value: str, expected: int) -> None:
    path = tmp_path / "pv"
    path.write_text(value)
    assert price_version_from_file(path)() == expected
    assert price_version_from_file(tmp_path / "missing", default=7)() == 7
