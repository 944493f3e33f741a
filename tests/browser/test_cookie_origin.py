"""Cookie auth is safe only with the Origin check: a real Chromium holding the ``tidings_token`` cookie, on a page
served from another origin (a second local HTTP server), cannot open a WebSocket to the hub with it."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

expect: Any = pytest.importorskip("playwright.sync_api").expect

PAGE = """<!doctype html><meta charset="utf-8"><title>other origin</title><pre id="out">pending</pre>
<script>
const out = document.getElementById("out");
const ws = new WebSocket(new URLSearchParams(location.search).get("ws"));
ws.onmessage = (e) => { out.textContent = "message " + JSON.parse(e.data).type; };
ws.onclose = (e) => { out.dataset.code = String(e.code); out.textContent += " | closed " + e.code + " " + e.reason; };
</script>"""


@contextlib.contextmanager
def page_server() -> Iterator[int]:
    """A plain HTTP server on another port of 127.0.0.1 (so another origin) serving :data:`PAGE`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_cross_origin_page_with_the_cookie_is_refused(server: LiveServer, new_page: Callable[[], Any]) -> None:
    page = new_page()
    # cookies are not port-scoped: the browser sends it to the hub from a page on another port of the same host
    page.context.add_cookies([{"name": "tidings_token", "value": server.token("ann"), "url": server.url}])
    # the control: the hub's own origin with the same cookie connects (so the refusal below is the Origin check)
    page.goto(f"{server.url}/healthz")
    page.evaluate(
        """(url) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onmessage = (e) => { document.title = JSON.parse(e.data).type; ws.close(); resolve(null); };
            ws.onclose = (e) => { if (!document.title) document.title = "closed " + e.code; resolve(null); };
        })""",
        server.ws_url(),
    )
    assert page.title() == "connection_established"
    with page_server() as port:
        page.goto(f"http://127.0.0.1:{port}/?ws={server.ws_url()}")
        out = page.locator("#out")
        expect(out).to_have_attribute("data-code", "1008")
        expect(out).to_contain_text("Origin not allowed")
        expect(out).not_to_contain_text("connection_established")
