"""The egress policy inside the Scrapy crawl process: a downloader middleware and a DNS resolver.

:func:`install` (called by :mod:`tidings.crawler.crawl_process` when the crawl's settings carry
:data:`~tidings.crawler.egress.POLICY_SETTING`) adds both to a crawl's settings:

* :class:`EgressMiddleware` runs first on every request the downloader gets -- start requests, followed links,
  redirects (the redirect middleware schedules a new request, which comes through again) and ``robots.txt`` --
  and refuses it by its URL (:meth:`~tidings.crawler.egress.EgressPolicy.check_url`);
* :class:`EgressResolver` checks the address every host name resolves to when the crawler connects, so a name
  that passed the URL check but resolves to ``127.0.0.1`` or ``10.0.0.5`` (now, or after a DNS change: rebinding)
  is refused too. Scrapy's DNS cache sits below the check, so cached answers are checked as well.

Refusals are remembered (:func:`refusal_for`) so the reporter can say ``target not allowed: <reason>`` instead
of the DNS or "request ignored" error Scrapy and Twisted report. This module imports Scrapy and Twisted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.resolver import CachingThreadedResolver
from scrapy.settings import SETTINGS_PRIORITIES
from twisted.internet.error import DNSLookupError

from tidings.crawler.egress import POLICY_SETTING, EgressPolicy

__all__ = ["EgressMiddleware", "EgressRefused", "EgressResolver", "install", "refusal_for"]

MIDDLEWARE_PATH = "tidings.crawler.egress_scrapy.EgressMiddleware"
RESOLVER_PATH = "tidings.crawler.egress_scrapy.EgressResolver"
HTTP11_HANDLER = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
_MAX_REMEMBERED = 1000

_by_url: dict[str, str] = {}
_by_host: dict[str, str] = {}


def _remember(table: dict[str, str], key: str, reason: str) -> None:
    if len(table) >= _MAX_REMEMBERED:
        table.pop(next(iter(table)))
    table[key] = reason


def refusal_for(url: str | None) -> str | None:
    """``target not allowed: <reason>`` if the policy refused ``url`` (or its host's address), else None."""
    if not url:
        return None
    reason = _by_url.get(url)
    if reason is None:
        try:
            host = (urlsplit(url).hostname or "").rstrip(".")
        except ValueError:
            return None
        reason = _by_host.get(host)
    return None if reason is None else f"target not allowed: {reason}"


class EgressRefused(IgnoreRequest):
    """A request the egress policy refused; its message is ``target not allowed: <reason>``."""


class _AddressRefused(DNSLookupError):
    """A name resolved to a refused address (Twisted treats it as a failed lookup)."""


def _policy(settings: Any) -> EgressPolicy:
    value = settings.getdict(POLICY_SETTING) if settings.get(POLICY_SETTING) else None
    if value is None:
        raise NotConfigured(f"{POLICY_SETTING} not set")
    return EgressPolicy.from_setting(value)


class EgressMiddleware:
    """Downloader middleware: refuses requests whose URL the policy does not allow."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    @classmethod
    def from_crawler(cls, crawler: Any) -> EgressMiddleware:
        """Built from the crawl's :data:`~tidings.crawler.egress.POLICY_SETTING`."""
        return cls(_policy(crawler.settings))

    def process_request(self, request: Any, spider: Any = None) -> None:
        """Let the request through, or raise :class:`EgressRefused`."""
        reason = self.policy.check_url(request.url)
        if reason is not None:
            _remember(_by_url, request.url, reason)
            if spider is not None:
                spider.logger.warning("Refused %s: target not allowed: %s", request.url, reason)
            raise EgressRefused(f"target not allowed: {reason}")


class EgressResolver(CachingThreadedResolver):
    """Scrapy's caching resolver, with every answer checked against the policy before a connection is made."""

    policy: EgressPolicy = EgressPolicy()

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> EgressResolver:
        """Built from the crawl's settings (DNS cache size and timeout, the policy)."""
        resolver = super().from_crawler(crawler, reactor)
        resolver.policy = _policy(crawler.settings)
        return resolver

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> Any:  # noqa: N802 - Twisted's interface
        """Resolve ``name``; fail the lookup when the address is refused."""
        deferred = super().getHostByName(name, timeout)
        deferred.addCallback(self._check, name)
        return deferred

    def _check(self, address: str, name: str) -> str:
        reason = self.policy.check_address(name, address)
        if reason is not None:
            _remember(_by_host, name.lower().rstrip("."), f"{name} resolves to {reason}")
            raise _AddressRefused(f"{name}: target not allowed: {reason}")
        return address


def install(settings: Any, priority: str = "cmdline") -> None:
    """Add the middleware and the resolver to a crawl's Scrapy ``settings``; drop non-HTTP download handlers."""
    middlewares = dict(settings.getdict("DOWNLOADER_MIDDLEWARES"))
    middlewares[MIDDLEWARE_PATH] = 1
    settings.set("DOWNLOADER_MIDDLEWARES", middlewares, priority=priority)
    settings.set("TWISTED_DNS_RESOLVER", RESOLVER_PATH, priority=priority)
    if (settings.getpriority("DNS_RESOLVER") or 0) > SETTINGS_PRIORITIES["default"]:
        settings.set("DNS_RESOLVER", RESOLVER_PATH, priority=priority)  # the deprecated name wins when it is set
    handlers = dict(settings.getdict("DOWNLOAD_HANDLERS"))
    # Only Twisted's HTTP/1.1 handler connects through the resolver above; nothing but http(s) is fetched.
    handlers.update(
        {"http": HTTP11_HANDLER, "https": HTTP11_HANDLER, "file": None, "data": None, "s3": None, "ftp": None}
    )
    settings.set("DOWNLOAD_HANDLERS", handlers, priority=priority)
