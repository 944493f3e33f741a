"""Serving the sample property site: an ASGI app and a static-site writer.

Routes (relative to wherever the app is mounted):

* ``/`` and ``/index.html`` -- index of locations;
* ``/listings/<location>/page/<n>.html`` -- a location's listings, :data:`~.generator.PAGE_SIZE` per page;
* ``/listing/<id>.html`` -- a listing's detail page;
* ``/robots.txt`` -- allows everything.

The price version is read on every request from ``price_version`` (an int, a zero-argument callable,
or a file path via :func:`price_version_from_file`), so a test or an operator can bump prices while
the server runs. Responses carry ``Cache-Control: no-store`` for the same reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from tidings.crawler.sample_site.generator import generate_listings, iter_pages
from tidings.crawler.sample_site.pages import (
    ROBOTS_TXT,
    list_page_path,
    render_detail,
    render_index,
    render_listing_page,
    render_not_found,
)

PriceVersionSource = int | Callable[[], int] | None
_NO_STORE = {"Cache-Control": "no-store"}


def price_version_from_file(path: str | os.PathLike[str], default: int = 0) -> Callable[[], int]:
    """A price-version getter reading an integer from ``path`` on every call.

    A missing, empty or unparseable file yields ``default``.
    """
    file = Path(path)

    def getter() -> int:
        try:
            return int(file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return default

    return getter


def _as_getter(source: PriceVersionSource) -> Callable[[], int]:
    if source is None:
        return lambda: 0
    if isinstance(source, int):
        value = source
        return lambda: value
    return source


def create_sample_site_app(price_version_getter: PriceVersionSource = None) -> Starlette:
    """Build the ASGI app serving the sample property site.

    ``price_version_getter`` is called on every request (or is a fixed int; None means 0). The app
    only emits relative links, so it can be mounted under any prefix, e.g.
    ``platform_app.mount("/sample-site", create_sample_site_app())``.
    """
    get_version = _as_getter(price_version_getter)

    def html(content: str | None) -> Response:
        if content is None:
            return HTMLResponse(render_not_found(), status_code=404, headers=_NO_STORE)
        return HTMLResponse(content, headers=_NO_STORE)

    async def index(request: Request) -> Response:
        return html(render_index())

    async def location_page(request: Request) -> Response:
        slug: str = request.path_params["location"]
        page: int = request.path_params["page"]
        return html(render_listing_page(slug, page, get_version()))

    async def detail(request: Request) -> Response:
        listing_id: int = request.path_params["listing_id"]
        return html(render_detail(listing_id, get_version()))

    async def robots(request: Request) -> Response:
        return PlainTextResponse(ROBOTS_TXT)

    routes = [
        Route("/", index),
        Route("/index.html", index),
        Route("/robots.txt", robots),
        Route("/listings/{location}/page/{page:int}.html", location_page),
        Route("/listing/{listing_id:int}.html", detail),
    ]
    return Starlette(routes=routes)


def write_static_site(directory: str | os.PathLike[str], price_version: int = 0) -> list[Path]:
    """Write the site as static files under ``directory`` (created if needed).

    Serve the directory with any web server (e.g. ``python -m http.server``). The detail page of
    the deliberately broken listing is not written, so it is a 404 there too. Returns the paths
    written, sorted.
    """
    root = Path(directory)
    pages: dict[str, str] = {"index.html": render_index(), "robots.txt": ROBOTS_TXT}
    for location, page in iter_pages():
        content = render_listing_page(location.slug, page, price_version)
        if content is not None:
            pages[list_page_path(location, page)] = content
    for listing in generate_listings():
        content = render_detail(listing.id, price_version)
        if content is not None:
            pages[listing.detail_path] = content
    written: list[Path] = []
    for relative, content in pages.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        written.append(target)
    return sorted(written)
