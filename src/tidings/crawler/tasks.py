"""The worker side: the ``run_job`` Celery task and the ``tidings worker`` command's implementation.

The task runs the same :class:`~tidings.crawler.jobs.JobRunner` as the server's embedded mode, in a fresh
event loop, with a database handle of its own and the broker-backed :class:`tidings.publisher.Publisher` as its
event sink -- so its events travel through Redis to whichever server holds the owner's WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from tidings.crawler.celery_app import RUN_JOB_TASK, create_celery
from tidings.crawler.config import PlatformSettings
from tidings.crawler.jobs import JobRunner, worker_name
from tidings.db import Database
from tidings.settings import Settings

__all__ = ["register_tasks", "run_job", "run_worker"]

logger = logging.getLogger("tidings.crawler.worker")


async def run_job(job_id: int, settings: Settings, platform: PlatformSettings) -> str | None:
    """Run one job in this process; returns its final status (None when it was not pending)."""
    from tidings.publisher import Publisher

    db = Database(settings.resolved_database_url)
    publisher = Publisher.from_settings(settings)
    try:
        runner = JobRunner(
            db, publisher, platform, progress_every=settings.job_progress_every, worker=worker_name("celery")
        )
        status = await runner.run(job_id)
        return None if status is None else status.value
    finally:
        await publisher.close()
        await db.dispose()


def register_tasks(app: Any, settings: Settings, platform: PlatformSettings) -> None:
    """Register the ``run_job`` task on a Celery app."""

    @app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_job_task(job_id: int) -> str | None:
        return asyncio.run(run_job(int(job_id), settings, platform))


def run_worker(
    settings: Settings,
    platform: PlatformSettings,
    *,
    queue: str | None = None,
    pool: str = "solo",
    concurrency: int = 1,
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> None:
    """Start a Celery worker consuming crawl jobs (blocks until the worker stops)."""
    platform = platform.model_copy(update={"job_queue": queue or platform.queue_name(settings)})
    app = create_celery(settings, platform)
    register_tasks(app, settings, platform)
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={platform.job_queue}",
        f"--loglevel={loglevel}",
        f"--hostname=tidings-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]
    logger.info("tidings worker: queue %s, pool %s x%d", platform.job_queue, pool, concurrency)
    app.worker_main(argv)
