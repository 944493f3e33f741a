"""The dashboard and ``TIDINGS_ALLOWED_ORIGINS``: an extra origin does not lock the dashboard out, and a refused
origin says what to set without suggesting to sign in."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import sign_in
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

expect: Any = pytest.importorskip("playwright.sync_api").expect


def test_dashboard_works_with_an_extra_allowed_origin(
    server_factory: Any, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_ALLOWED_ORIGINS": "https://app.example.com"})
    server.create_user("ann")
    page = sign_in(new_page(), server, "ann")  # waits for "connected"
    expect(page.locator("#conn-label")).to_have_text("connected")
    expect(page.locator("#banner")).to_be_hidden()
    shot(page, "dashboard-extra-origin")


@contextlib.contextmanager
def host_rewriting_proxy(target_port: int, host: str) -> Iterator[int]:
    """A TCP proxy on a free port that rewrites the ``Host`` header, as a misconfigured reverse proxy does; the
    browser's ``Origin`` (the proxy's address) then differs from the ``Host`` the server sees."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ours = f"Host: 127.0.0.1:{port}\r\n".encode()
    theirs = f"Host: {host}\r\n".encode()
    stopping = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, rewrite: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk.replace(ours, theirs) if rewrite else chunk)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stopping.set()
        listener.close()


def test_refused_origin_tells_what_to_set_and_not_to_sign_in(
    server_factory: Any, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_ALLOWED_ORIGINS": "https://app.example.com"})
    server.create_user("ann")
    with host_rewriting_proxy(server.port, "internal.example:8000") as port:
        origin = f"http://127.0.0.1:{port}"
        page = new_page()
        page.goto(f"{origin}/login?next=%2Fdashboard")
        page.fill("#username", "ann")
        page.fill("#password", "pw")
        page.click("button[type=submit]")
        page.wait_for_url(f"{origin}/dashboard**")
        banner = page.locator("#banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text(f"Origin not allowed: add {origin} to TIDINGS_ALLOWED_ORIGINS")
        expect(banner).to_have_attribute("data-sign-in", "false")
        assert banner.locator("a").count() == 0
        assert "Sign in" not in banner.inner_text()
        expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
        shot(page, "origin-refused")
