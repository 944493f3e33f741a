"""Browser fixtures: Debian's Chromium driven by Playwright (never ``playwright install``), screenshots as artifacts.

Chromium comes from ``make browser-deps`` (``apt-get install chromium``). The tests skip, saying so, only when no
Chromium binary can be found at all.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import ROOT, LiveServer

ARTIFACTS = ROOT / "test-results" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Upper bound for anything to show up in the page (Playwright polls; nothing is timed).
UI_TIMEOUT = 30_000


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, /usr/bin/chromium, or chromium/chromium-browser on PATH."""
    candidates = [
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module (closed before other modules' asyncio tests run in this thread)."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium not found (/usr/bin/chromium): run `make browser-deps` (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as pw:
        sync_api.expect.set_options(timeout=UI_TIMEOUT)
        instance = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Pages in fresh browser contexts (separate sessionStorage: one per user); closed at the end."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        context.set_default_timeout(UI_TIMEOUT)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    """``shot(page, name)`` saves a full-page screenshot under test-results/browser/ and returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def admin_password(server: LiveServer) -> str:
    """The administrator password the server printed at its first start."""
    match = re.search(r"username '[^']+', password '([^']+)'", server.log())
    assert match, "the server did not print the administrator's password"
    return match.group(1)


def sign_in(page: Any, server: LiveServer, username: str, password: str = "pw", hash_: str = "") -> Any:
    """Sign in through the login page and wait until the dashboard is live (connected)."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/login?next={quote('/dashboard' + hash_, safe='')}")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/dashboard**")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page
