"""HTML rendering of the sample property site.

Every link is relative, so the pages work at the root of a server, mounted under a prefix
(``/sample-site/``) or written as static files. The markup contract the spiders rely on:

* index: ``a.location-link`` to each location's first page;
* location page: ``.listing.listing-card`` cards with ``a.detail-link``, ``.title``, ``.price``,
  ``.location``; pagination ``a.next`` / ``a.prev`` (absent on the last / first page);
* detail page: ``article.listing.listing-detail[data-listing-id]`` with ``.title``, ``.price``,
  ``.location``, ``.bedrooms``, ``.area``, ``a.url`` (permalink) and ``link[rel=canonical]``.
"""

from __future__ import annotations

from html import escape

from tidings.crawler.sample_site.generator import (
    LOCATIONS,
    Listing,
    Location,
    get_listing,
    get_location,
    listing_page,
    listings_for,
)

SITE_NAME = "Tidings sample properties"

ROBOTS_TXT = "User-agent: *\nAllow: /\n"


def _document(title: str, root: str, body: str, canonical: str | None = None) -> str:
    canonical_link = f'\n<link rel="canonical" href="{escape(canonical)}">' if canonical else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)} | {SITE_NAME}</title>{canonical_link}
</head>
<body>
<header class="site-header"><a class="home" href="{root}index.html">{SITE_NAME}</a></header>
<main>
{body}
</main>
</body>
</html>
"""


def list_page_path(location: Location, page: int) -> str:
    """Path of a location page relative to the site root."""
    return f"listings/{location.slug}/page/{page}.html"


def render_index() -> str:
    """The index page: one link per location."""
    items = "\n".join(
        f'  <li><a class="location-link" href="{list_page_path(loc, 1)}">{escape(loc.name)}</a>'
        f' <span class="count">{len(listings_for(loc))} listings</span></li>'
        for loc in LOCATIONS
    )
    body = f'<h1>Locations</h1>\n<ul class="locations">\n{items}\n</ul>'
    return _document("Locations", "", body)


def _card(listing: Listing, price_version: int) -> str:
    price = listing.price_text(price_version)
    title = listing.title if listing.skip_reason is None else "(untitled)"
    return (
        f'  <li class="listing listing-card" data-listing-id="{listing.id}">\n'
        f'    <span class="title">{escape(title)}</span>\n'
        f'    <span class="price">{escape(price or "")}</span>\n'
        f'    <span class="location">{escape(listing.location_text)}</span>\n'
        f'    <a class="detail-link" href="../../../{listing.detail_path}">View listing</a>\n'
        "  </li>"
    )


def render_listing_page(slug: str, page: int, price_version: int = 0) -> str | None:
    """A location's listing page (1-based); None when the location or page does not exist."""
    location = get_location(slug)
    if location is None:
        return None
    listings = listing_page(location, page)
    if listings is None:
        return None
    cards = "\n".join(_card(item, price_version) for item in listings)
    nav = []
    if page > 1:
        nav.append(f'<a class="prev" href="{page - 1}.html">Previous</a>')
    nav.append(f'<span class="page-info">Page {page} of {location.page_count}</span>')
    if page < location.page_count:
        nav.append(f'<a class="next" href="{page + 1}.html">Next</a>')
    body = (
        f'<h1 class="location-name">{escape(location.name)}</h1>\n'
        f'<ol class="listings">\n{cards}\n</ol>\n'
        f'<nav class="pagination">{" ".join(nav)}</nav>'
    )
    return _document(f"{location.name}, page {page}", "../../../", body)


def render_detail(listing_id: int, price_version: int = 0) -> str | None:
    """A listing's detail page; None when the listing (or its page) does not exist."""
    listing = get_listing(listing_id)
    if listing is None or not listing.has_detail_page:
        return None
    parts: list[str] = []
    title_html = listing.title_html()
    if title_html is not None:
        # title_html is generated markup (tags on purpose for the messy-title case), not user input.
        parts.append(f'  <h1 class="title">{title_html}</h1>')
    price = listing.price_text(price_version)
    if price is not None:
        parts.append(f'  <p class="price">{escape(price)}</p>')
    if listing.shows_location:
        parts.append(f'  <p class="location">{escape(listing.location_text)}</p>')
    parts.append(
        '  <ul class="facts">\n'
        f'    <li class="bedrooms">{escape(listing.bedrooms_text())}</li>\n'
        f'    <li class="area">{escape(listing.area_text())}</li>\n'
        "  </ul>"
    )
    parts.append(
        f'  <p class="description">A {escape(listing.kind)} in {escape(listing.neighbourhood)}, '
        f"listing #{listing.id}.</p>"
    )
    own = f"{listing.id}.html"
    parts.append(f'  <a class="url" href="{own}">Permalink</a>')
    back = f"../{list_page_path(listing.location, 1)}"
    parts.append(f'  <a class="back" href="{back}">All listings in {escape(listing.location.name)}</a>')
    body = (
        f'<article class="listing listing-detail" data-listing-id="{listing.id}">\n' + "\n".join(parts) + "\n</article>"
    )
    page_title = listing.title if listing.skip_reason is None else f"Listing {listing.id}"
    return _document(page_title, "../", body, canonical=own)


def render_not_found() -> str:
    """A plain 404 page."""
    return _document("Not found", "", "<h1>Not found</h1>")
