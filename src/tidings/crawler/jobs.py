"""Running a crawl job: one code path for the in-process runner and the Celery worker.

:class:`JobRunner` claims a pending job, crawls with :func:`tidings.crawler.runner.arun_crawl` (Scrapy in a child
process), stores every item as it arrives (upsert by URL), and tells the owner what happens through an
:class:`~tidings.crawler.notify.EventSink` -- the server's :class:`~tidings.node.Node`, or in a worker the
broker-backed :class:`tidings.publisher.Publisher`. While it runs it renews the job's lease every
``heartbeat_interval`` seconds and picks up cancel requests; if the runner dies, the lease runs out and the
:class:`Reaper` re-queues the job ("worker lost"; up to ``TIDINGS_JOB_MAX_RETRIES`` times, then it fails) and tells
the owner. A job stopped by a shutdown of the server is re-queued the same way and resumed at the next start: it
is crawled again from the start, which is idempotent (items are upserted by URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from tidings.crawler import store
from tidings.crawler.config import PlatformSettings
from tidings.crawler.egress import POLICY_SETTING, EgressPolicy
from tidings.crawler.items import PropertyItem
from tidings.crawler.models import JobStatus
from tidings.crawler.notify import (
    CANCELLED_ERROR,
    WORKER_LOST_ERROR,
    EventSink,
    JobNotifier,
    location_group,
)
from tidings.crawler.runner import CrawlResult, arun_crawl
from tidings.db import Database

__all__ = ["SERVER_LOST_ERROR", "SHUTDOWN_ERROR", "JobRunner", "Reaper", "worker_name"]

logger = logging.getLogger("tidings.crawler.jobs")

SHUTDOWN_ERROR = "interrupted: the server shut down"
SERVER_LOST_ERROR = "interrupted: the server stopped unexpectedly"


def worker_name(kind: str) -> str:
    """``kind@host:pid``: who runs a job (stored on the job and its execution)."""
    return f"{kind}@{socket.gethostname()}:{os.getpid()}"


class JobRunner:
    """Runs crawl jobs against one database, publishing through one sink."""

    def __init__(
        self,
        db: Database,
        sink: EventSink,
        platform: PlatformSettings,
        *,
        progress_every: int = 10,
        worker: str | None = None,
        egress: Callable[[], EgressPolicy] | None = None,
    ) -> None:
        self.db = db
        self.sink = sink
        self.platform = platform
        self.progress_every = max(1, progress_every)
        self.worker = worker or worker_name("runner")
        self._stops: dict[int, asyncio.Event] = {}
        self.egress = egress or (lambda: EgressPolicy.build(platform.crawl_allowed_hosts))

    def request_stop(self, job_id: int) -> bool:
        """Stop a job this runner is running now (in-process cancel); False if it is not running here."""
        event = self._stops.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    async def run(self, job_id: int) -> JobStatus | None:
        """Run a pending job to its end; returns its final status, or None if it was not pending."""
        claim = await store.claim_job(self.db, job_id, self.worker, self.platform.job_lease_seconds)
        if claim is None:
            logger.info("job %s is not pending; nothing to do", job_id)
            return None
        stop = self._stops[job_id] = asyncio.Event()
        run = _Run(self, claim, stop)
        try:
            return await run.execute()
        finally:
            self._stops.pop(job_id, None)


class _Run:
    """One execution of one job."""

    def __init__(self, runner: JobRunner, claim: store.Claim, stop: asyncio.Event) -> None:
        self.runner = runner
        self.db = runner.db
        self.claim = claim
        self.stop = stop
        self.notifier = JobNotifier(runner.sink, claim.job_id, claim.owner_id)
        self.stored = 0
        self.new_by_location: Counter[str] = Counter()
        self.cancelled = False
        self.lost = False

    async def execute(self) -> JobStatus | None:
        claim = self.claim
        logger.info("job %s: %s on %s (%s)", claim.job_id, claim.spider_name, claim.target_urls, self.runner.worker)
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            with _logged("job_started"):
                await self.notifier.started(
                    claim.spider_name, claim.target_urls, attempt=claim.attempt, resume_reason=claim.resume_reason
                )
            result = await arun_crawl(
                claim.spider_name,
                claim.target_urls,
                on_item=self._store,
                stop_event=self.stop,
                settings={**self.runner.platform.crawl_settings, POLICY_SETTING: self.runner.egress().to_setting()},
                progress_every=self.runner.progress_every,
                timeout=self.runner.platform.job_timeout or None,
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupt(SHUTDOWN_ERROR))
            raise
        except Exception as exc:
            logger.exception("job %s failed", claim.job_id)
            return await self._finish(JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return await self._conclude(result)

    async def _conclude(self, result: CrawlResult) -> JobStatus | None:
        if self.lost:
            logger.warning("job %s: lease lost while running; its final state was decided elsewhere", self.claim.job_id)
            return None
        if result.reason == "cancelled":
            return await self._finish(JobStatus.CANCELLED, CANCELLED_ERROR)
        if result.reason == "failed":
            return await self._finish(JobStatus.FAILED, result.error or "crawl failed")
        return await self._finish(JobStatus.COMPLETED, None)

    async def _store(self, item: PropertyItem) -> None:
        """``on_item``: upsert, announce a price change, report progress every N stored items."""
        saved = await store.upsert_property(self.db, item)
        self.stored += 1
        if saved.created:
            self.new_by_location[location_group(saved.location)] += 1
        elif saved.price_changed:
            with _logged("price_change"):
                await self.notifier.price_change(
                    saved.property_id,
                    saved.url,
                    saved.old_price,
                    saved.new_price,
                    title=saved.title,
                    currency=saved.currency,
                    location=saved.location,
                )
        if self.stored % self.runner.progress_every == 0:
            await store.record_progress(self.db, self.claim.job_id, self.claim.execution_id, self.stored)
            with _logged("job_progress"):
                await self.notifier.progress(self.stored)

    async def _heartbeat(self) -> None:
        """Renew the lease; turn a cancel request (from any process) into a stop; notice a lost lease."""
        interval = self.runner.platform.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                state = await store.renew_lease(self.db, self.claim.job_id, self.runner.platform.job_lease_seconds)
            except Exception:
                logger.warning("job %s: could not renew the lease", self.claim.job_id, exc_info=True)
                continue
            if state is None:
                self.lost = True
                self.stop.set()
                return
            if state:
                self.stop.set()

    async def _interrupt(self, reason: str) -> None:
        """Stopped before the end (the server shuts down): re-queue the job for the next start, or fail it once it
        has had its attempts."""
        claim = self.claim
        if self.new_by_location:
            with _logged("new_properties"):
                await self.notifier.new_properties(dict(self.new_by_location))
        taken = await store.interrupt_job(self.db, claim.job_id, reason, self.runner.platform.max_attempts)
        if taken is None:
            return
        with _logged(f"the interruption of job {claim.job_id}"):
            if taken.requeued:
                await self.notifier.requeued(reason, self.stored)
            else:
                await self.notifier.failed(taken.error, self.stored)
        logger.warning(
            "job %s %s after %d items (attempt %d)",
            claim.job_id,
            "re-queued" if taken.requeued else f"failed: {taken.error}",
            self.stored,
            taken.attempts,
        )

    async def _finish(self, status: JobStatus, error: str | None) -> JobStatus | None:
        claim = self.claim
        if self.new_by_location:
            with _logged("new_properties"):
                await self.notifier.new_properties(dict(self.new_by_location))
        finished = await store.finish_job(self.db, claim.job_id, claim.execution_id, status, self.stored, error)
        if not finished:
            return None
        with _logged(f"the end of job {claim.job_id}"):
            if status is JobStatus.COMPLETED:
                await self.notifier.completed(self.stored)
            else:
                await self.notifier.failed(error or "failed", self.stored, status=status.value)
        logger.info("job %s %s: %d items stored%s", claim.job_id, status, self.stored, f" ({error})" if error else "")
        return status


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Events are told, data is kept: a broker outage is logged but neither fails a crawl nor loses its items."""
    try:
        yield
    except Exception:
        logger.warning("could not publish %s", what, exc_info=True)


class Reaper:
    """Takes back running jobs whose lease expired (their runner died): re-queues them (``on_requeue`` dispatches
    them again) until they have had their attempts, then fails them; tells their owners either way."""

    def __init__(
        self,
        db: Database,
        sink: EventSink,
        platform: PlatformSettings,
        on_requeue: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.sink = sink
        self.platform = platform
        self.on_requeue = on_requeue

    async def reap_once(self) -> list[int]:
        """One pass; returns the ids of the jobs it took back (re-queued or failed)."""
        max_attempts = self.platform.max_attempts if self.on_requeue is not None else 1
        reaped = await store.reap_expired(self.db, WORKER_LOST_ERROR, max_attempts=max_attempts)
        for job in reaped:
            notifier = JobNotifier(self.sink, job.job_id, job.owner_id)
            if job.requeued:
                logger.warning("job %s: lease expired, its worker is gone; re-queued", job.job_id)
                with _logged("a re-queued job"):
                    await notifier.requeued(WORKER_LOST_ERROR, job.items_scraped)
                if self.on_requeue is not None:
                    await self.on_requeue(job.job_id)
            else:
                logger.warning("job %s: lease expired, its worker is gone; failed: %s", job.job_id, job.error)
                await notifier.failed(job.error, job.items_scraped)
        return [job.job_id for job in reaped]

    async def run_forever(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Reap every ``reaper_period`` seconds until cancelled."""
        while True:
            try:
                await self.reap_once()
            except Exception as exc:
                logger.warning("reaper pass failed", exc_info=True)
                if on_error is not None:
                    on_error(exc)
            await asyncio.sleep(self.platform.reaper_period)
