"""Child-process entry point: run one Scrapy crawl and report it as JSON lines on stdout.

Started by :mod:`tidings.crawler.runner`; runnable by hand for debugging::

    python -m tidings.crawler.crawl_process --spider listings --url http://127.0.0.1:8765/ \\
        --settings-json '{"DOWNLOAD_DELAY": 0}'

The process owns its Twisted reactor (``AsyncCrawlerProcess``), which is why crawls run here and not
in the caller: a reactor cannot be restarted, and the caller may be an asyncio server or a Celery
worker. Before Scrapy starts, the original stdout is kept as the protocol channel
(:mod:`tidings.crawler.protocol`) and file descriptor 1 is pointed at stderr, so nothing but
protocol records reaches the parent's stdout pipe.

Hook design: :class:`JsonLinesReporter` is an ordinary Scrapy extension (enabled through
``EXTENSIONS``; it finds its descriptor in the ``TIDINGS_REPORT_FD`` setting). It listens to
``item_scraped`` -- which fires after all ``ITEM_PIPELINES`` have run, so project pipelines can
clean or drop items in the child -- and writes each surviving item as a JSON line. Storage (upsert
by URL) is not done here: it belongs to the parent, through ``run_crawl(..., on_item=...)``.

Shutdown: SIGINT / SIGTERM stop the crawl gracefully (Scrapy closes the spider with reason
``"shutdown"``); a second signal forces it. With ``--stop-on-stdin-eof`` the child also stops when
its stdin closes, so an orphaned child does not outlive a parent that died.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from tidings.crawler import protocol
from tidings.crawler.egress import POLICY_SETTING

REPORTER_PATH = "tidings.crawler.crawl_process.JsonLinesReporter"

CHILD_DEFAULT_SETTINGS: dict[str, Any] = {
    "SPIDER_MODULES": ["tidings.crawler.spiders"],
    "LOG_LEVEL": "INFO",
    "TELNETCONSOLE_ENABLED": False,
    # Scrapy's remote-control extension opens a local HTTP server that executes Python code and writes
    # job files under the user's profile: never wanted in a worker's child process.
    "REMOTE_CONTROL_ENABLED": False,
}
"""Settings applied at "project" priority: below spider ``custom_settings`` and caller settings."""


class JsonLinesReporter:
    """Scrapy extension writing crawl events as protocol records (see :mod:`tidings.crawler.protocol`)."""

    def __init__(self, crawler: Any, stream: TextIO) -> None:
        from scrapy import signals

        from tidings.crawler import signals as tidings_signals

        self.crawler = crawler
        self.stream = stream
        self.start_ok = 0
        self._broken = False
        connect = crawler.signals.connect
        connect(self.item_scraped, signal=signals.item_scraped)
        connect(self.item_error, signal=signals.item_error)
        connect(self.item_dropped, signal=signals.item_dropped)
        connect(self.spider_error, signal=signals.spider_error)
        connect(self.response_received, signal=signals.response_received)
        connect(self.spider_closed, signal=signals.spider_closed)
        connect(self.listing_skipped, signal=tidings_signals.listing_skipped)
        connect(self.request_failed, signal=tidings_signals.request_failed)

    @classmethod
    def from_crawler(cls, crawler: Any) -> JsonLinesReporter:
        """Build the extension; disabled (NotConfigured) unless ``TIDINGS_REPORT_FD`` is set."""
        from scrapy.exceptions import NotConfigured

        fd = crawler.settings.getint(protocol.REPORT_FD_SETTING, -1)
        if fd < 0:
            raise NotConfigured(f"{protocol.REPORT_FD_SETTING} not set")
        stream = open(fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
        return cls(crawler, stream)

    def emit(self, record: dict[str, Any]) -> None:
        """Write one record; if the parent is gone, stop the crawl (once)."""
        if self._broken:
            return
        try:
            self.stream.write(protocol.encode(record))
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._broken = True
            os.kill(os.getpid(), signal.SIGTERM)

    def _error(self, kind: str, url: str | None, message: str, start: bool = False) -> None:
        self.emit({"type": protocol.ERROR, "kind": kind, "url": url, "message": message, "start": start})

    # --- signal handlers ------------------------------------------------------------------------
    def item_scraped(self, item: Any) -> None:
        """Report an item that went through all item pipelines."""
        from itemadapter import ItemAdapter

        from tidings.crawler.items import PropertyItem

        data = item.to_json_dict() if isinstance(item, PropertyItem) else ItemAdapter(item).asdict()
        self.emit({"type": protocol.ITEM, "item": data})

    def item_dropped(self, item: Any, exception: BaseException) -> None:
        """An item pipeline dropped an item: report it as skipped."""
        from itemadapter import ItemAdapter

        url = ItemAdapter(item).get("url") if ItemAdapter.is_item(item) else None
        self.emit({"type": protocol.SKIPPED, "url": url, "reason": str(exception) or "dropped by pipeline"})

    def item_error(self, item: Any, failure: Any) -> None:
        """An item pipeline raised."""
        from itemadapter import ItemAdapter

        url = ItemAdapter(item).get("url") if ItemAdapter.is_item(item) else None
        message = f"{type(failure.value).__name__}: {failure.value}"
        self._error("pipeline", url, message)

    def spider_error(self, failure: Any, response: Any) -> None:
        """A spider callback raised."""
        message = f"{type(failure.value).__name__}: {failure.value}"
        url = getattr(response, "url", None)
        self._error("spider", url, message)

    def response_received(self, response: Any, request: Any) -> None:
        """Count pages, and start requests that got a usable response."""
        from tidings.crawler.signals import START_META_KEY

        if request.meta.get(START_META_KEY) and response.status < 400:
            self.start_ok += 1
        self.emit({"type": protocol.PAGE, "url": response.url, "status": response.status})

    def listing_skipped(self, url: str, reason: str) -> None:
        """A spider deliberately dropped a listing."""
        self.emit({"type": protocol.SKIPPED, "url": url, "reason": reason})

    def request_failed(self, url: str, message: str, kind: str, start: bool) -> None:
        """A request failed (errback); one the egress policy refused says so, whatever Scrapy reported."""
        if self.crawler.settings.get(POLICY_SETTING):
            from tidings.crawler.egress_scrapy import refusal_for

            refused = refusal_for(url)
            if refused is not None:
                kind, message = "refused", refused
        self._error(kind, url, message, start)

    def spider_closed(self, reason: str) -> None:
        """Final record: close reason, start-request successes and JSON-safe stats."""
        stats = self.crawler.stats.get_stats() if self.crawler.stats else {}
        safe = json.loads(protocol.encode(stats))
        self.emit({"type": protocol.DONE, "reason": reason, "start_ok": self.start_ok, "stats": safe})


def _take_over_stdout() -> TextIO:
    """Keep the original stdout for protocol records; send fd 1 (prints, stray output) to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    return open(protocol_fd, "w", encoding="utf-8", closefd=True)


def _watch_stdin() -> None:
    """Stop gracefully when stdin reaches EOF (the parent closed it or died)."""

    stdin_fd = sys.stdin.fileno()

    def watch() -> None:
        # os.read on the raw descriptor: a daemon thread blocked inside sys.stdin's buffered reader
        # would make the interpreter abort at exit ("could not acquire lock ... at interpreter shutdown").
        try:
            while os.read(stdin_fd, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="stdin-watchdog", daemon=True).start()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {protocol.CHILD_MODULE}", description="Run one crawl, report JSON lines on stdout."
    )
    parser.add_argument("--spider", required=True, help="spider name (from SPIDER_MODULES)")
    parser.add_argument("--url", action="append", default=[], dest="urls", help="start URL (repeatable)")
    parser.add_argument("--settings-json", default="{}", help="Scrapy settings as a JSON object")
    parser.add_argument("--spider-kwargs-json", default="{}", help="extra spider arguments as a JSON object")
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help="stop the crawl when stdin closes")
    return parser.parse_args(argv)


def _json_object(text: str, what: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run one crawl, reporting on the original stdout. Exit status 0 after a crawl, 2 on fatal errors."""
    args = _parse_args(argv)
    out = _take_over_stdout()

    def fatal(message: str) -> int:
        out.write(protocol.encode({"type": protocol.FATAL, "message": message}))
        out.flush()
        return 2

    try:
        user_settings = _json_object(args.settings_json, "--settings-json")
        spider_kwargs = _json_object(args.spider_kwargs_json, "--spider-kwargs-json")
    except ValueError as exc:
        return fatal(f"Bad arguments: {exc}")
    if not args.urls:
        return fatal("No target URLs given")

    from scrapy.crawler import AsyncCrawlerProcess
    from scrapy.settings import Settings

    settings = Settings()
    settings.setdict(CHILD_DEFAULT_SETTINGS, priority="project")
    extensions = dict(user_settings.pop("EXTENSIONS", None) or {})
    extensions.setdefault(REPORTER_PATH, 0)
    # Not merely disabled but removed: loading it imports aiohttp (~0.6 s of start-up).
    extensions.setdefault("scrapy.extensions.remote_control.RemoteControl", None)
    settings.setdict(user_settings, priority="cmdline")
    settings.set("EXTENSIONS", extensions, priority="cmdline")
    settings.set(protocol.REPORT_FD_SETTING, out.fileno(), priority="cmdline")
    if settings.get(POLICY_SETTING):
        from tidings.crawler import egress_scrapy

        egress_scrapy.install(settings)

    try:
        process = AsyncCrawlerProcess(settings)
        try:
            crawler = process.create_crawler(args.spider)
        except KeyError:
            available = ", ".join(sorted(process.spider_loader.list())) or "none"
            return fatal(f"Unknown spider {args.spider!r} (available: {available})")
        started = {"type": protocol.STARTED, "pid": os.getpid(), "spider": args.spider, "urls": args.urls}
        out.write(protocol.encode(started))
        out.flush()
        if args.stop_on_stdin_eof:
            _watch_stdin()
        failures: list[str] = []
        task = process.crawl(crawler, start_urls=list(args.urls), **spider_kwargs)

        def crawl_done(finished: Any) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                exc = finished.exception()
                failures.append(f"{type(exc).__name__}: {exc}")

        task.add_done_callback(crawl_done)
        process.start()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return fatal(f"Crawl could not run: {type(exc).__name__}: {exc}")
    if failures:
        return fatal(f"Crawl could not run: {failures[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
