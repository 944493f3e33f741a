"""The Celery application that carries crawl jobs from the server to ``tidings worker`` processes.

Celery's broker is Redis (``TIDINGS_CELERY_BROKER_URL``, default ``TIDINGS_BROKER_URL``); a message is just a
job id -- the job itself lives in the database. Delivery settings:

* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a worker that dies before it has claimed the job leaves
  the message unacknowledged, so Redis redelivers it (after ``visibility_timeout``) and the job still runs;
* a job that was already claimed is not run twice: :func:`tidings.crawler.store.claim_job` only takes pending
  jobs, and a worker that died mid-job is detected by its expired lease (the server's reaper fails the job);
* no result backend: outcomes are in the database and in the events.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from tidings.crawler.config import PlatformSettings
from tidings.settings import Settings

__all__ = ["RUN_JOB_TASK", "create_celery", "send_job"]

RUN_JOB_TASK = "tidings.crawler.run_job"


def create_celery(settings: Settings | None = None, platform: PlatformSettings | None = None) -> Any:
    """A configured Celery app (without tasks: the worker registers them, the server only sends)."""
    settings = settings or Settings()
    platform = platform or PlatformSettings()
    url = platform.celery_url(settings)
    if url is None:
        raise ValueError("Celery needs a Redis URL: set TIDINGS_BROKER_URL (or TIDINGS_CELERY_BROKER_URL)")
    app = Celery("tidings", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=platform.queue_name(settings),
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, **platform.celery_transport_options(settings)},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


def send_job(app: Any, job_id: int, queue: str, egress: dict[str, Any] | None = None) -> None:
    """Queue ``job_id`` for a worker (blocking: call it from a thread in async code).

    ``egress`` is the server's crawl egress policy (:meth:`tidings.crawler.egress.EgressPolicy.to_setting`), so a
    worker lets jobs reach what the server allowed them (its own sample site) and nothing more."""
    kwargs = {} if egress is None else {"egress": egress}
    app.send_task(RUN_JOB_TASK, args=[job_id], kwargs=kwargs, queue=queue)
