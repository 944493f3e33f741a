"""Issue 9, item 4: SSRF. Crawl jobs may not reach loopback, private, link-local, metadata... targets.

Unit tests of the policy on literal URLs and addresses; then real crawls (Scrapy in its child process) against
real local HTTP servers: a redirect to a refused address, and a host name that resolves to loopback at connect
time; then a real ``tidings serve``: job creation answers 422, the server's own sample site stays crawlable.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tidings.crawler.egress import POLICY_SETTING, EgressPolicy, SelfOrigin, address_reason, host_reason
from tidings.crawler.runner import arun_crawl

FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False, "RETRY_TIMES": 0, "LOG_LEVEL": "WARNING"}

REFUSED = {
    "http://169.254.169.254/latest/meta-data/": "cloud metadata address 169.254.169.254",
    "http://metadata.google.internal/computeMetadata/v1/": "cloud metadata name",
    "http://10.1.2.3/": "private address 10.1.2.3",
    "http://172.16.0.1/": "private address",
    "http://192.168.1.1/admin": "private address 192.168.1.1",
    "http://100.64.0.1/": "CGNAT address",
    "http://127.0.0.1:8000/api/stats": "loopback address 127.0.0.1",
    "http://[::1]/": "loopback address ::1",
    "http://localhost:6379/": "loopback name localhost",
    "http://redis.localhost/": "internal name",
    "http://printer.local/": "internal name",
    "http://2130706433/": "non-canonical numeric host 2130706433",
    "http://0x7f000001/": "non-canonical numeric host 0x7f000001",
    "http://0177.0.0.1/": "non-canonical numeric host",
    "http://127.1/": "non-canonical numeric host",
    "http://127.0.0.1./": "non-canonical numeric host",
    "http://user:pw@example.com/": "userinfo",
    "http://[fe80::1]/": "link-local address",
    "http://[fd12:3456::1]/": "unique-local address",
    "http://[fd00:ec2::254]/": "cloud metadata address",
    "http://224.0.0.1/": "multicast address",
    "http://[ff02::1]/": "multicast address",
    "http://0.0.0.0:8000/": "unspecified address",
    "http://[::]/": "unspecified address",
    "http://[::ffff:127.0.0.1]/": "loopback address 127.0.0.1 (inside ::ffff:7f00:1)",
    "http://[64:ff9b::a00:1]/": "private address 10.0.0.1",
    "http://[2002:a9fe:a9fe::]/": "cloud metadata address 169.254.169.254",
    "http://198.18.0.1/": "non-public address",
    "ftp://example.com/": "scheme 'ftp'",
    "file:///etc/passwd": "scheme 'file'",
}


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_refused_literal_targets(url: str) -> None:
    reason = EgressPolicy.build().check_url(url)
    assert reason is not None and REFUSED[url] in reason, (url, reason)


@pytest.mark.parametrize(
    "url", ["http://example.com/", "https://93.184.215.14/x", "http://8.8.8.8:8080/", "https://xn--bcher-kva.example/"]
)
def test_public_targets_pass(url: str) -> None:
    assert EgressPolicy.build().check_url(url) is None


def test_addresses() -> None:
    assert address_reason("8.8.8.8") is None and address_reason("2606:4700::1111") is None
    assert address_reason("127.0.0.2") == "loopback address 127.0.0.2"
    assert host_reason("example.com") is None and host_reason("0x7f.1") is not None


def test_allowed_hosts_are_exceptions_by_host_and_port() -> None:
    policy = EgressPolicy.build(["127.0.0.1:8765", "intranet.example", "*.corp.example", "[fd00::5]"])
    assert policy.check_url("http://127.0.0.1:8765/anything") is None
    assert policy.check_url("http://127.0.0.1:8766/") is not None
    assert policy.check_url("http://[fd00::5]:81/") is None
    assert policy.name_allowed("intranet.example") and policy.name_allowed("wiki.corp.example")
    assert not policy.name_allowed("corp.example.evil.com")
    assert policy.check_address("wiki.corp.example", "10.0.0.7") is None
    assert policy.check_address("evil.example", "10.0.0.7") == "private address 10.0.0.7"
    again = EgressPolicy.from_setting(policy.to_setting())
    assert again.allowed_hosts == policy.allowed_hosts and again.name_allowed("intranet.example")


def test_own_sample_site_only() -> None:
    policy = EgressPolicy.build().with_self_origin(SelfOrigin(8000))
    assert policy.check_url("http://127.0.0.1:8000/sample-site/") is None
    assert policy.check_url("http://localhost:8000/sample-site/listing/3.html") is None
    assert policy.check_url("http://127.0.0.1:8000/sample-site") is None
    for url in (
        "http://127.0.0.1:8000/api/stats",
        "http://127.0.0.1:8000/sample-site/../api/stats",
        "http://127.0.0.1:8000/sample-site/%2e%2e/api/stats",
        "http://127.0.0.1:8000/sample-sitex/",
        "http://127.0.0.1:8001/sample-site/",
        "http://10.0.0.1:8000/sample-site/",
    ):
        assert policy.check_url(url) is not None, url


# ---- real crawls ----------------------------------------------------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str]
    redirect_to: str | None = None

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"<html><body><p>internal secret</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(redirect_to: str | None = None) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("Handler", (_Recorder,), {"hits": hits, "redirect_to": redirect_to})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, hits


@pytest.fixture
def internal() -> Iterator[tuple[int, list[str]]]:
    """An 'internal service' on a loopback port, recording every request it gets."""
    httpd, hits = _serve()
    try:
        yield httpd.server_address[1], hits
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_redirect_to_a_refused_address_fails_the_crawl(internal: tuple[int, list[str]]) -> None:
    port, hits = internal
    target = f"http://127.0.0.1:{port}/secret"
    front, front_hits = _serve(redirect_to=target)
    front_port = front.server_address[1]
    try:
        policy = EgressPolicy.build([f"127.0.0.1:{front_port}"])  # the 'public' site, allowed as an exception
        settings = {**FAST, POLICY_SETTING: policy.to_setting()}
        result = await arun_crawl(
            "listings", [f"http://127.0.0.1:{front_port}/"], on_item=lambda i: None, settings=settings
        )
    finally:
        front.shutdown()
        front.server_close()
    assert front_hits == ["/"]
    assert hits == [], "the refused address was fetched"
    assert result.reason == "failed"
    assert result.error is not None and "target not allowed: loopback address 127.0.0.1" in result.error, result.error
    assert target in result.error


async def test_redirect_to_metadata_fails_the_crawl() -> None:
    front, _ = _serve(redirect_to="http://169.254.169.254/latest/meta-data/iam/")
    port = front.server_address[1]
    try:
        settings = {**FAST, POLICY_SETTING: EgressPolicy.build([f"127.0.0.1:{port}"]).to_setting()}
        result = await arun_crawl("listings", [f"http://127.0.0.1:{port}/"], on_item=lambda i: None, settings=settings)
    finally:
        front.shutdown()
        front.server_close()
    assert result.error is not None and "target not allowed: cloud metadata address 169.254.169.254" in result.error


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(internal: tuple[int, list[str]]) -> None:
    """The URL check passes a plain host name; the crawl process checks the address it resolves to (rebinding)."""
    port, hits = internal
    name = socket.gethostname()
    if "." in name or socket.gethostbyname(name) != "127.0.0.1":
        pytest.skip(f"this machine's name {name!r} does not resolve to 127.0.0.1")
    policy = EgressPolicy.build()
    url = f"http://{name}:{port}/"
    assert policy.check_url(url) is None  # nothing in the text gives it away
    settings = {**FAST, POLICY_SETTING: policy.to_setting()}
    result = await arun_crawl("listings", [url], on_item=lambda i: None, settings=settings)
    assert hits == [], "the loopback service was fetched"
    assert result.error is not None and "target not allowed" in result.error and "loopback address" in result.error


async def test_without_the_policy_the_same_crawl_reaches_the_service(internal: tuple[int, list[str]]) -> None:
    """Control: the crawl above does reach the service when no policy is given (library use)."""
    port, hits = internal
    result = await arun_crawl("listings", [f"http://127.0.0.1:{port}/"], on_item=lambda i: None, settings=FAST)
    assert hits == ["/"] and result.pages_crawled == 1
