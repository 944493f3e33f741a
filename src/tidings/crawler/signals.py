"""Custom Scrapy signals of the Tidings spiders, and failure descriptions.

Spiders send :data:`listing_skipped` and :data:`request_failed` through ``crawler.signals`` so that
extensions (here :class:`tidings.crawler.crawl_process.JsonLinesReporter`) can report them without
parsing logs. Start requests carry ``meta[START_META_KEY] = True`` so the reporter can tell a crawl
whose targets were unreachable from one that merely hit a few broken links.

This module imports Scrapy; it belongs to the child process side.
"""

from __future__ import annotations

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.spidermiddlewares.httperror import HttpError

listing_skipped = object()
"""Sent with ``url`` and ``reason`` when a spider deliberately drops a listing."""

request_failed = object()
"""Sent with ``url``, ``message``, ``kind`` (``"unreachable"`` or ``"http"`` or ``"other"``) and
``start`` (bool: whether the request was a start request)."""

START_META_KEY = "tidings_start_request"


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)`` for a failed request: ``("unreachable", "Connection refused")``,
    ``("http", "HTTP 404")``, ``("other", "<ExceptionType>: <text>")``..."""
    if isinstance(exc, HttpError):
        return "http", f"HTTP {exc.response.status}"
    name = type(exc).__name__
    if isinstance(exc, DownloadConnectionRefusedError) or name == "ConnectionRefusedError":
        return "unreachable", "Connection refused"
    if isinstance(exc, CannotResolveHostError) or name in ("DNSLookupError", "gaierror"):
        detail = str(exc).strip().rstrip(".")
        if detail.lower().startswith("dns lookup failed"):
            return "unreachable", detail
        return "unreachable", f"DNS lookup failed: {detail}" if detail else "DNS lookup failed"
    if isinstance(exc, DownloadTimeoutError) or name in ("TimeoutError", "TCPTimedOutError"):
        return "unreachable", "Timed out"
    if name in ("ConnectionLost", "ConnectionDone", "ConnectError", "NoRouteError") or isinstance(
        exc, DownloadFailedError | ResponseDataLossError
    ):
        detail = str(exc).strip()
        return "unreachable", f"{name}: {detail}" if detail else name
    if isinstance(exc, IgnoreRequest):
        return "other", f"Request ignored: {exc}" if str(exc) else "Request ignored"
    detail = str(exc).strip()
    return "other", f"{name}: {detail}" if detail else name
