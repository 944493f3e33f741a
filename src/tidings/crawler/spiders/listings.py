"""``listings``: crawls property-listing sites with the sample site's markup.

Give it ``start_urls`` (a list, or a comma-separated string as with ``scrapy runspider ... -a
start_urls=URL1,URL2``): an index page, a location page or a detail page. It follows location links
(``a.location-link``), pagination (``a.next``) and listing cards (``.listing a.detail-link``), and
yields a :class:`~tidings.crawler.items.PropertyItem` per detail page
(``.listing-detail`` with ``.title``, ``.price``, ``.location``, ``.bedrooms``, ``.area``).

Malformed listings:

* no title (missing or blank) -> skipped: logged at WARNING and reported through
  :data:`tidings.crawler.signals.listing_skipped` (stat ``listings/skipped``);
* price missing, "on request" or garbage -> item with ``price=None``, ``currency=None`` (logged);
* price inside text (``Offers over £650,000``) or without currency -> parsed leniently;
* unparseable bedrooms / area -> that field is None;
* no location on the detail page -> the location shown on the listing card that linked to it;
* failing requests (404 detail page, unreachable host) -> reported through
  :data:`tidings.crawler.signals.request_failed`.

Only the hosts of the start URLs are crawled. Default settings are polite for a small site and can
be overridden through the runner's ``settings`` (e.g. ``DOWNLOAD_DELAY=0`` for local tests,
``ROBOTSTXT_OBEY=True`` for third-party sites).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.http import Response, TextResponse
from twisted.python.failure import Failure

from tidings.crawler.items import PropertyItem, is_http_url
from tidings.crawler.signals import START_META_KEY, describe_failure, listing_skipped, request_failed
from tidings.crawler.spiders.parsing import clean_text, parse_area_m2, parse_bedrooms, parse_price

POLITE_SETTINGS: dict[str, Any] = {
    "ROBOTSTXT_OBEY": False,
    "USER_AGENT": "TidingsCrawler/0.1 (+property listings; polite)",
    "CONCURRENT_REQUESTS": 8,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
    "DOWNLOAD_DELAY": 0.1,
    "AUTOTHROTTLE_ENABLED": True,
    "AUTOTHROTTLE_START_DELAY": 0.1,
    "AUTOTHROTTLE_MAX_DELAY": 5.0,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": 2.0,
    "DOWNLOAD_TIMEOUT": 30,
    "RETRY_TIMES": 1,
    "COOKIES_ENABLED": False,
    "TELNETCONSOLE_ENABLED": False,
    "REMOTE_CONTROL_ENABLED": False,
}
"""Spider defaults (Scrapy ``custom_settings``); the runner's ``settings`` override them."""

SKIP_MISSING_TITLE = "missing title"


def _split_urls(value: Iterable[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [url.strip() for url in value if url and url.strip()]


class ListingsSpider(scrapy.Spider):
    """Follows location pages, pagination and detail pages; yields :class:`PropertyItem`."""

    name = "listings"
    custom_settings = POLITE_SETTINGS

    def __init__(self, start_urls: Iterable[str] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = _split_urls(start_urls)
        if not self.start_urls:
            raise ValueError("ListingsSpider needs at least one start URL (start_urls=...)")
        hosts = {urlsplit(url).hostname for url in self.start_urls}
        self.allowed_domains = sorted(host for host in hosts if host)

    async def start(self) -> AsyncIterator[Any]:
        """One request per start URL, marked as a start request."""
        for url in self.start_urls:
            yield scrapy.Request(
                url,
                callback=self.parse,
                errback=self.on_request_error,
                dont_filter=True,
                meta={START_META_KEY: True},
            )

    # --- page dispatch --------------------------------------------------------------------------
    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        """Dispatch on the page's markup: detail page, location page or index."""
        if not isinstance(response, TextResponse):
            self.logger.warning("Not an HTML page, ignored: %s", response.url)
            return
        if response.css(".listing-detail"):
            yield from self.parse_detail(response)
            return
        found = False
        for card in response.css(".listing"):
            href = card.css("a.detail-link::attr(href)").get() or card.css("a::attr(href)").get()
            if not href:
                continue
            found = True
            hint = clean_text(card.css(".location ::text").getall()) or None
            yield response.follow(
                href,
                callback=self.parse_detail,
                errback=self.on_request_error,
                cb_kwargs={"location_hint": hint},
            )
        next_href = response.css("a.next::attr(href)").get()
        if next_href:
            found = True
            yield response.follow(next_href, callback=self.parse, errback=self.on_request_error)
        for href in response.css("a.location-link::attr(href)").getall():
            found = True
            yield response.follow(href, callback=self.parse, errback=self.on_request_error)
        if not found:
            self.logger.warning("No listings markup found at %s", response.url)
            self.crawler.stats.inc_value("listings/pages_without_markup")

    def parse_detail(self, response: Response, location_hint: str | None = None) -> Iterator[Any]:
        """Extract a :class:`PropertyItem` from a detail page, or skip the listing with a reason."""
        if not isinstance(response, TextResponse):
            self.skip(response.url, "detail page is not HTML")
            return
        detail = response.css(".listing-detail")
        root = detail[0] if detail else response
        title = clean_text(root.css(".title ::text").getall())
        if not title:
            self.skip(response.url, SKIP_MISSING_TITLE)
            return
        price_el = root.css(".price")
        price_text = clean_text(price_el[0].css("::text").getall()) if price_el else None
        price = parse_price(price_text)
        if price.amount is None or price.note:
            self.logger.info("Lenient price at %s: %s", response.url, price.note)
            self.crawler.stats.inc_value("listings/lenient_price")
        location = clean_text(root.css(".location ::text").getall()) or location_hint
        if location and location == location_hint and not root.css(".location"):
            self.logger.info("No location on %s; using the listing card's %r", response.url, location)
        bedrooms_text = clean_text(root.css(".bedrooms ::text").getall())
        bedrooms = parse_bedrooms(bedrooms_text)
        if bedrooms is None and bedrooms_text:
            self.logger.info("Unparseable bedrooms at %s: %r", response.url, bedrooms_text)
        area_text = clean_text(root.css(".area ::text").getall())
        area = parse_area_m2(area_text)
        if area is None and area_text:
            self.logger.info("Unparseable area at %s: %r", response.url, area_text)
        canonical = response.css('link[rel="canonical"]::attr(href)').get()
        url = response.urljoin(canonical.strip()) if canonical else response.url
        if not is_http_url(url):  # javascript:, data:... would be shown to every user as the listing's link
            self.logger.warning("Ignoring non-http canonical link at %s: %r", response.url, canonical)
            url = response.url
        yield PropertyItem(
            url=url,
            title=title,
            price=price.amount,
            currency=price.currency if price.amount is not None else None,
            location=location,
            bedrooms=bedrooms,
            area_m2=area,
            scraped_at=datetime.now(UTC),
            price_text=price_text,
        )

    # --- reporting ------------------------------------------------------------------------------
    def skip(self, url: str, reason: str) -> None:
        """Drop a listing: log the reason, count it and send :data:`listing_skipped`."""
        self.logger.warning("Skipping listing %s: %s", url, reason)
        self.crawler.stats.inc_value("listings/skipped")
        self.crawler.signals.send_catch_log(signal=listing_skipped, url=url, reason=reason, spider=self)

    def on_request_error(self, failure: Failure) -> None:
        """Errback: log the failed request and send :data:`request_failed`."""
        request = getattr(failure, "request", None)
        url: str = request.url if request is not None else "?"
        is_start = bool(request is not None and request.meta.get(START_META_KEY))
        exc = failure.value
        kind, message = describe_failure(exc) if exc is not None else ("other", "unknown failure")
        self.logger.warning("Request failed %s: %s", url, message)
        self.crawler.stats.inc_value(f"listings/request_failed/{kind}")
        self.crawler.signals.send_catch_log(
            signal=request_failed, url=url, message=message, kind=kind, start=is_start, spider=self
        )
