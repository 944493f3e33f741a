"""Issue 9, item 4: SSRF through crawl jobs, seen from the REST API of a real ``tidings serve``.

Job creation answers 422 ``{"detail": "target not allowed: <reason>"}`` for internal targets, the answer is the
same for open and closed ports, and the server's own sample site stays crawlable with the default settings.
(The policy itself and real crawls with redirects and rebinding: ``test_egress.py``.)
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer


@pytest.fixture
def internal() -> Iterator[tuple[int, list[str]]]:
    """An 'internal service' on a loopback port, recording every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], hits
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def platform(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory(
        env={"TIDINGS_CRAWL_SETTINGS": '{"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": false}'}
    )
    server.create_user("ann")
    return server


def _create(server: LiveServer, urls: list[str]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/jobs",
        json={"spider_name": "listings", "target_urls": urls},
        headers={"Authorization": f"Bearer {server.token('ann')}"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.10/",
        "http://[::1]/",
        "http://localhost:6379/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://metadata.google.internal/",
        "http://user:pw@example.com/",
    ],
)
def test_job_creation_refuses_internal_targets(platform: LiveServer, url: str) -> None:
    response = _create(platform, [url])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.startswith("target not allowed: "), detail


def test_refused_targets_do_not_tell_open_from_closed_ports(
    platform: LiveServer, internal: tuple[int, list[str]]
) -> None:
    port, hits = internal
    closed = _create(platform, ["http://127.0.0.1:9/"])
    opened = _create(platform, [f"http://127.0.0.1:{port}/"])
    assert closed.status_code == opened.status_code == 422
    assert closed.json() == opened.json() == {"detail": "target not allowed: loopback address 127.0.0.1"}
    assert hits == []


def test_the_servers_own_sample_site_stays_crawlable(platform: LiveServer) -> None:
    response = _create(platform, [f"{platform.url}/sample-site/"])
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 120
    headers = {"Authorization": f"Bearer {platform.token('ann')}"}
    while True:
        job = httpx.get(f"{platform.url}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"] not in ("pending", "running"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "completed" and job["items_scraped"] > 0, job
    other = _create(platform, [f"{platform.url}/api/stats"])
    assert other.status_code == 422 and other.json()["detail"].startswith("target not allowed"), other.text
