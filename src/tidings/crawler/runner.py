"""Run a Scrapy crawl from ordinary Python code: a Celery task, a thread, or an asyncio server.

Twisted's reactor can run only once per process and must own its thread, so a crawl never runs in
the caller's process. :func:`run_crawl` (blocking) and :func:`arun_crawl` (asyncio) start a child
process -- ``python -m tidings.crawler.crawl_process`` -- which runs Scrapy's ``AsyncCrawlerProcess``
and writes one JSON line per event to its stdout (:mod:`tidings.crawler.protocol`). The parent reads
the lines as they come, calls ``on_item`` with a :class:`~tidings.crawler.items.PropertyItem` for
each item and ``on_progress`` every ``progress_every`` items, and returns a :class:`CrawlResult`.
This module imports neither Scrapy nor Twisted. A child process (rather than ``multiprocessing``)
also works inside Celery's daemonic prefork workers.

Storage is the caller's job: in the child, items pass through the Scrapy item pipelines and are then
written as JSON lines by the :class:`~tidings.crawler.crawl_process.JsonLinesReporter` extension;
the platform stores them in the parent, in ``on_item`` -- an upsert keyed by ``item.url``, so
re-crawls update prices instead of duplicating listings. ``on_item`` runs in the thread (or event
loop) that called the runner; if it raises, the child is stopped and the exception propagates.

Outcomes (``CrawlResult.reason``):

* ``"finished"`` -- the crawl ran to its end (broken links and skipped listings are in ``errors`` and
  ``skipped``; Scrapy's own close reason is in ``close_reason``);
* ``"cancelled"`` -- ``should_stop()`` returned True (or the ``stop_event`` was set): the child gets
  SIGINT (Scrapy's graceful shutdown), then SIGKILL after ``grace_period`` seconds. No ``on_item``
  call happens after the stop request;
* ``"failed"`` -- no start URL could be fetched (``error`` reads e.g. ``"Could not reach
  http://127.0.0.1:9/ : Connection refused"``), the crawl timed out, the spider is unknown, or the
  child crashed (``error`` then ends with the last lines of its log).

The child imports only ``tidings.crawler`` (the top-level package imports the server lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tidings.crawler import protocol
from tidings.crawler.items import PropertyItem

logger = logging.getLogger(__name__)
child_logger = logging.getLogger("tidings.crawler.child")

CrawlReason = Literal["finished", "cancelled", "failed"]

_SRC_DIR = Path(__file__).resolve().parents[2]
_STDERR_TAIL_LINES = 30
_LINE_LIMIT = 1 << 22


@dataclass(frozen=True, slots=True)
class CrawlError:
    """A failed request or a crash in a spider callback / pipeline.

    ``kind``: ``"unreachable"`` (connection refused, DNS, timeout), ``"http"`` (4xx/5xx), ``"spider"``,
    ``"pipeline"``, ``"decode"`` (an item the parent could not rebuild) or ``"other"``.
    """

    kind: str
    url: str | None
    message: str
    start: bool = False

    def __str__(self) -> str:
        return f"{self.url or '?'}: {self.message}"


@dataclass(frozen=True, slots=True)
class SkippedListing:
    """A listing the spider (or an item pipeline) deliberately dropped, with the reason."""

    url: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class CrawlProgress:
    """Counters passed to ``on_progress``."""

    items_scraped: int
    pages_crawled: int
    skipped: int
    errors: int
    elapsed: float


@dataclass(slots=True)
class CrawlResult:
    """Outcome of :func:`run_crawl` / :func:`arun_crawl` (see the module docstring for ``reason``)."""

    reason: CrawlReason
    items_scraped: int
    errors: list[CrawlError] = field(default_factory=list)
    skipped: list[SkippedListing] = field(default_factory=list)
    pages_crawled: int = 0
    error: str | None = None
    close_reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        """True when the crawl finished (possibly with some broken links or skipped listings)."""
        return self.reason == "finished"


# --------------------------------------------------------------------------------------------------
# shared bookkeeping
# --------------------------------------------------------------------------------------------------


def child_command(
    spider_name: str,
    target_urls: Sequence[str],
    settings: Mapping[str, Any] | None = None,
    spider_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """The argv of the crawl child process (useful for logging or running it by hand)."""
    if isinstance(target_urls, str):
        target_urls = [target_urls]
    urls = [url.strip() for url in target_urls if url and url.strip()]
    if not urls:
        raise ValueError("run_crawl needs at least one target URL")
    try:
        settings_json = json.dumps(dict(settings or {}))
        kwargs_json = json.dumps(dict(spider_kwargs or {}))
    except TypeError as exc:
        raise TypeError(f"crawl settings and spider_kwargs must be JSON-serialisable: {exc}") from None
    command = [sys.executable, "-m", "tidings.crawler.crawl_process", "--spider", spider_name]
    for url in urls:
        command += ["--url", url]
    command += ["--settings-json", settings_json, "--spider-kwargs-json", kwargs_json, "--stop-on-stdin-eof"]
    return command


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(_SRC_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class _Session:
    """Turns protocol records into callbacks and, at the end, a :class:`CrawlResult`."""

    def __init__(self, progress_every: int) -> None:
        self.progress_every = max(1, progress_every)
        self.started = time.monotonic()
        self.items = 0
        self.pages = 0
        self.errors: list[CrawlError] = []
        self.skipped: list[SkippedListing] = []
        self.done: dict[str, Any] | None = None
        self.fatal: str | None = None
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)

    def handle(self, record: dict[str, Any]) -> PropertyItem | None:
        """Update counters; return the item to deliver, if the record is one."""
        kind = record["type"]
        if kind == protocol.ITEM:
            try:
                item = PropertyItem.from_json_dict(record.get("item") or {})
            except (ValueError, TypeError) as exc:
                url = (record.get("item") or {}).get("url")
                self.errors.append(CrawlError("decode", url, f"Bad item: {exc}"))
                return None
            return item
        if kind == protocol.PAGE:
            self.pages += 1
        elif kind == protocol.SKIPPED:
            self.skipped.append(SkippedListing(record.get("url"), str(record.get("reason") or "skipped")))
        elif kind == protocol.ERROR:
            self.errors.append(
                CrawlError(
                    str(record.get("kind") or "other"),
                    record.get("url"),
                    str(record.get("message") or "error"),
                    bool(record.get("start")),
                )
            )
        elif kind == protocol.DONE:
            self.done = record
        elif kind == protocol.FATAL:
            self.fatal = str(record.get("message") or "crawl process failed")
        return None

    def delivered(self) -> bool:
        """Count a delivered item; True when a progress report is due."""
        self.items += 1
        return self.items % self.progress_every == 0

    def progress(self) -> CrawlProgress:
        """Current counters."""
        return CrawlProgress(
            self.items, self.pages, len(self.skipped), len(self.errors), time.monotonic() - self.started
        )

    def _start_failure(self) -> str | None:
        if self.done is None or int(self.done.get("start_ok") or 0) > 0:
            return None
        failures = [error for error in self.errors if error.start]
        if not failures:
            return None
        messages = []
        for error in failures:
            verb = "reach" if error.kind == "unreachable" else "fetch"
            messages.append(f"Could not {verb} {error.url} : {error.message}")
        return "; ".join(dict.fromkeys(messages))

    def result(self, *, exit_code: int | None, cancelled: bool, timed_out: float | None) -> CrawlResult:
        """Decide the outcome (see the module docstring)."""
        reason: CrawlReason = "finished"
        error: str | None = None
        close_reason = None if self.done is None else str(self.done.get("reason"))
        start_failure = self._start_failure()
        if cancelled:
            reason = "cancelled"
        elif timed_out is not None:
            reason, error = "failed", f"Crawl timed out after {timed_out:g} s"
        elif self.fatal is not None:
            reason, error = "failed", self.fatal
        elif self.done is None:
            tail = " | ".join(line for line in list(self.stderr_tail)[-5:] if line.strip())
            error = f"Crawl process exited with code {exit_code} before finishing"
            reason, error = "failed", f"{error}: {tail}" if tail else error
        elif start_failure is not None:
            reason, error = "failed", start_failure
        elif close_reason == "shutdown":
            reason, error = "cancelled", "Crawl process was stopped by a signal"
        elif close_reason not in ("finished", None) and (
            not str(close_reason).startswith("closespider_") or close_reason == "closespider_errorcount"
        ):
            reason, error = "failed", f"Crawl closed with reason {close_reason!r}"
        stats = dict(self.done.get("stats") or {}) if self.done else {}
        return CrawlResult(
            reason=reason,
            items_scraped=self.items,
            errors=list(self.errors),
            skipped=list(self.skipped),
            pages_crawled=self.pages,
            error=error,
            close_reason=close_reason,
            stats=stats,
            duration=time.monotonic() - self.started,
            exit_code=exit_code,
        )


class _StopState:
    """Cancellation / timeout bookkeeping shared by both runners."""

    def __init__(
        self,
        should_stop: Callable[[], bool] | None,
        timeout: float | None,
        poll_interval: float,
        grace_period: float,
        stop_event: asyncio.Event | None = None,
    ) -> None:
        self.should_stop = should_stop
        self.stop_event = stop_event
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last_poll = float("-inf")
        self.requested: float | None = None
        self.cancelled = False
        self.timed_out: float | None = None
        self._kill_sent = False

    def check(self, now: float) -> bool:
        """True once, when a stop (cancellation or timeout) is first requested."""
        if self.requested is not None:
            return False
        if self.stop_event is not None and self.stop_event.is_set():
            self.cancelled = True
        elif self.should_stop is not None and now - self.last_poll >= self.poll_interval:
            self.last_poll = now
            self.cancelled = bool(self.should_stop())
        if not self.cancelled and self.deadline is not None and now >= self.deadline:
            self.timed_out = self.timeout
        if self.cancelled or self.timed_out is not None:
            self.requested = now
            return True
        return False

    def kill_due(self, now: float) -> bool:
        """True once, when the grace period after the stop request has run out."""
        if self.requested is None or self._kill_sent or now - self.requested < self.grace_period:
            return False
        self._kill_sent = True
        return True

    def wait_budget(self, now: float) -> float:
        """How long the next blocking read may wait."""
        budget = self.poll_interval
        if self.requested is None and self.deadline is not None:
            budget = min(budget, self.deadline - now)
        return max(0.0, budget)


def _log_child_line(session: _Session, line: str) -> None:
    line = line.rstrip("\n")
    session.stderr_tail.append(line)
    child_logger.debug("%s", line)


# --------------------------------------------------------------------------------------------------
# blocking runner
# --------------------------------------------------------------------------------------------------


def run_crawl(
    spider_name: str,
    target_urls: Sequence[str],
    *,
    on_item: Callable[[PropertyItem], object],
    on_progress: Callable[[CrawlProgress], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_every: int = 10,
    settings: Mapping[str, Any] | None = None,
    spider_kwargs: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    grace_period: float = 10.0,
    poll_interval: float = 0.2,
) -> CrawlResult:
    """Crawl ``target_urls`` with spider ``spider_name`` in a child process; block until it ends.

    ``on_item(item)`` is called in this thread for every scraped item, ``on_progress(progress)`` every
    ``progress_every`` items and once at the end. ``should_stop()`` is polled every ``poll_interval``
    seconds; when it returns True the crawl is cancelled. ``settings`` (JSON-serialisable Scrapy
    settings) override the spider's defaults; ``spider_kwargs`` are extra spider arguments.
    ``timeout`` (seconds) fails the crawl if it runs longer. Never raises for crawl failures --
    inspect ``CrawlResult.reason`` / ``.error`` -- but re-raises exceptions from the callbacks.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_crawl blocks: inside an event loop, use 'await arun_crawl(...)'")
    return asyncio.run(
        arun_crawl(
            spider_name,
            target_urls,
            on_item=on_item,
            on_progress=on_progress,
            should_stop=should_stop,
            progress_every=progress_every,
            settings=settings,
            spider_kwargs=spider_kwargs,
            timeout=timeout,
            grace_period=grace_period,
            poll_interval=poll_interval,
        )
    )


def _log_result(spider_name: str, result: CrawlResult) -> None:
    level = logging.INFO if result.reason != "failed" else logging.WARNING
    logger.log(
        level,
        "Crawl %s %s: %d items, %d pages, %d skipped, %d errors in %.1f s%s",
        spider_name,
        result.reason,
        result.items_scraped,
        result.pages_crawled,
        len(result.skipped),
        len(result.errors),
        result.duration,
        f" ({result.error})" if result.error else "",
    )


# --------------------------------------------------------------------------------------------------
# asyncio runner
# --------------------------------------------------------------------------------------------------


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


async def _astop_process(proc: asyncio.subprocess.Process, grace_period: float) -> None:
    """SIGINT (graceful), then SIGKILL after ``grace_period`` seconds."""
    if proc.returncode is not None:
        return
    _ainterrupt(proc)
    try:
        await asyncio.wait_for(proc.wait(), grace_period)
    except TimeoutError:
        logger.warning("Crawl process %d did not stop within %g s; killing it", proc.pid, grace_period)
        with contextlib.suppress(ProcessLookupError, OSError):
            proc.kill()
        await proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(ValueError, OSError):
        while await stream.read(1 << 16):
            pass


def _ainterrupt(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        if os.name == "nt":
            proc.terminate()
        else:
            proc.send_signal(signal.SIGINT)


async def _drain_stderr(stream: asyncio.StreamReader, session: _Session) -> None:
    with contextlib.suppress(ValueError, OSError):
        while line := await stream.readline():
            _log_child_line(session, line.decode("utf-8", "replace"))


async def arun_crawl(
    spider_name: str,
    target_urls: Sequence[str],
    *,
    on_item: Callable[[PropertyItem], object],
    on_progress: Callable[[CrawlProgress], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_event: asyncio.Event | None = None,
    progress_every: int = 10,
    settings: Mapping[str, Any] | None = None,
    spider_kwargs: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    grace_period: float = 10.0,
    poll_interval: float = 0.2,
) -> CrawlResult:
    """Asyncio version of :func:`run_crawl`, for use inside an event loop.

    ``on_item`` / ``on_progress`` may be plain functions or coroutine functions (awaited in order).
    Cancel with ``stop_event.set()`` or ``should_stop()`` returning True -- the result's reason is then
    ``"cancelled"`` -- or by cancelling the task running this coroutine: the child is stopped
    (SIGINT, SIGKILL after ``grace_period``) before ``CancelledError`` propagates.
    """
    command = child_command(spider_name, target_urls, settings, spider_kwargs)
    session = _Session(progress_every)
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
        limit=_LINE_LIMIT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout
    stderr_task = asyncio.create_task(_drain_stderr(proc.stderr, session))
    event_task = asyncio.create_task(stop_event.wait()) if stop_event is not None else None
    read_task: asyncio.Task[bytes] | None = None
    stop = _StopState(should_stop, timeout, poll_interval, grace_period, stop_event)
    try:
        while True:
            now = time.monotonic()
            if stop.requested is None:
                if stop.check(now):
                    # Keep reading until EOF: the child reports its stats while shutting down.
                    _ainterrupt(proc)
            elif stop.kill_due(now) and proc.returncode is None:
                logger.warning("Crawl process %d did not stop within %g s; killing it", proc.pid, grace_period)
                with contextlib.suppress(ProcessLookupError, OSError):
                    proc.kill()
            if read_task is None:
                read_task = asyncio.create_task(stdout.readline())
            waiters: set[asyncio.Future[Any]] = {read_task}
            if event_task is not None and stop.requested is None:
                waiters.add(event_task)
            done, _ = await asyncio.wait(waiters, timeout=stop.wait_budget(now), return_when=asyncio.FIRST_COMPLETED)
            if read_task not in done:
                continue
            raw = read_task.result()
            read_task = None
            if not raw:
                break
            record = protocol.decode(raw)
            if record is None:
                if raw.strip():
                    child_logger.debug("non-protocol output: %r", raw[:200])
                continue
            item = session.handle(record)
            if item is not None and stop.requested is None:
                await _maybe_await(on_item(item))
                if session.delivered() and on_progress is not None:
                    await _maybe_await(on_progress(session.progress()))
    except BaseException:
        # Task cancellation or a failing callback: stop the child (draining its output), then propagate.
        if read_task is not None and not read_task.done():
            read_task.cancel()
        read_task = None
        drain = asyncio.create_task(_drain(stdout))
        try:
            await _astop_process(proc, grace_period)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    proc.kill()
            drain.cancel()
        raise
    finally:
        for task in (read_task, event_task):
            if task is not None and not task.done():
                task.cancel()
        if proc.returncode is None:
            # stdout reached EOF: the child is exiting; don't wait forever if it hangs.
            try:
                await asyncio.wait_for(proc.wait(), grace_period)
            except TimeoutError:
                await _astop_process(proc, grace_period)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(stderr_task, 5)
    result = session.result(exit_code=proc.returncode, cancelled=stop.cancelled, timed_out=stop.timed_out)
    if on_progress is not None:
        await _maybe_await(on_progress(session.progress()))
    _log_result(spider_name, result)
    return result
