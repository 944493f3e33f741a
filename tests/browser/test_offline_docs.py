"""/docs, /redoc and /asyncapi work offline: Chromium aborts every request not addressed to the Tidings server
(a CDN included), and the pages still render the endpoints and message types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

expect: Any = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def docs_server(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    return server


def offline_page(new_page: Callable[[], Any], server: LiveServer) -> tuple[Any, list[str]]:
    """A page whose requests to anything but ``server`` are aborted; the aborted URLs are collected."""
    page = new_page()
    aborted: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(server.url + "/"):
            r.continue_()
        else:
            aborted.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return page, aborted


def test_swagger_ui_renders_without_a_cdn(docs_server: LiveServer, new_page: Callable[[], Any]) -> None:
    page, aborted = offline_page(new_page, docs_server)
    page.goto(f"{docs_server.url}/docs")
    expect(page.get_by_text("/api/publish", exact=True).first).to_be_visible()
    assert aborted == [], aborted


def test_redoc_renders_without_a_cdn(docs_server: LiveServer, new_page: Callable[[], Any]) -> None:
    page, aborted = offline_page(new_page, docs_server)
    page.goto(f"{docs_server.url}/redoc")
    expect(page.get_by_text("/api/publish").first).to_be_attached()
    expect(page.locator("h1").first).to_contain_text("Tidings")
    # ReDoc's bundle hard-codes its footer logo (an <img> that hides itself when it fails); nothing else may leave
    assert [url for url in aborted if url != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == [], aborted


def test_asyncapi_page_lists_messages_and_close_codes(docs_server: LiveServer, new_page: Callable[[], Any]) -> None:
    page, aborted = offline_page(new_page, docs_server)
    page.goto(f"{docs_server.url}/asyncapi")
    expect(page.locator("#doc")).to_have_attribute("data-ready", "true")
    for message_type in ("subscribe", "publication", "connection_established", "pong"):
        expect(page.locator(f'details.message[data-message="{message_type}"]').first).to_be_visible()
    page.locator('details.message[data-message="subscribe"] summary').first.click()
    expect(page.locator('details.message[data-message="subscribe"] pre').first).to_contain_text('"properties"')
    expect(page.get_by_role("cell", name="4003", exact=True)).to_be_visible()
    expect(page.locator("#doc")).to_contain_text("/ws/authenticated")
    assert aborted == [], aborted
