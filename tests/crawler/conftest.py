"""Fixtures for the crawler tests: the sample site served by a real uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from tidings.crawler.sample_site import create_sample_site_app

# Settings for crawling the local site fast; the spider's polite defaults are for real sites.
FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False, "CONCURRENT_REQUESTS_PER_DOMAIN": 8}


@dataclass
class SiteServer:
    """A running sample site; ``price_version`` is read by the app on every request."""

    port: int
    price_version: int = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def prefixed(self) -> str:
        """The site mounted under ``/sample-site`` (as the platform mounts it)."""
        return f"http://127.0.0.1:{self.port}/sample-site/"


@pytest.fixture(scope="package")
def site() -> Iterator[SiteServer]:
    """The sample site at ``/`` and under ``/sample-site/``, on an ephemeral port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server_state = SiteServer(port=sock.getsockname()[1])
    site_app = create_sample_site_app(lambda: server_state.price_version)
    app = Starlette(routes=[Mount("/sample-site", app=site_app), Mount("/", app=site_app)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sample-site", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sample site did not start")
        time.sleep(0.02)
    try:
        yield server_state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
