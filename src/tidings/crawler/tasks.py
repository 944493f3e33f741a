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
from tidings.crawler.egress import EgressPolicy
from tidings.crawler.jobs import JobRunner, worker_name
from tidings.db import Database
from tidings.settings import Settings

__all__ = ["register_tasks", "run_job", "run_worker"]

logger = logging.getLogger("tidings.crawler.worker")


async def run_job(
    job_id: int, settings: Settings, platform: PlatformSettings, egress: dict[str, Any] | None = None
) -> str | None:
    """Run one job in this process; returns its final status (None when it was not pending).

    ``egress``: the policy the server sent with the job; default, this worker's ``TIDINGS_CRAWL_ALLOWED_HOSTS``."""
    from tidings.publisher import Publisher

    db = Database(settings.resolved_database_url)
    publisher = Publisher.from_settings(settings)
    try:
        policy = None if egress is None else EgressPolicy.from_setting(egress)
        runner = JobRunner(
            db,
            publisher,
            platform,
            progress_every=platform.job_progress_every,
            worker=worker_name("celery"),
            egress=None if policy is None else (lambda: policy),
        )
        status = await runner.run(job_id)
        return None if status is None else status.value
    finally:
        await publisher.close()
        await db.dispose()


def register_tasks(app: Any, settings: Settings, platform: PlatformSettings) -> None:
    """Register the ``run_job`` task on a Celery app."""

    @app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_job_task(job_id: int, egress: dict[str, Any] | None = None) -> str | None:
        return asyncio.run(run_job(int(job_id), settings, platform, egress if isinstance(egress, dict) else None))


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
