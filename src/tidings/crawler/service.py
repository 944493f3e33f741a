"""The crawler platform on top of a :class:`~tidings.service.Tidings` hub: ``install_platform(app, hub)``.

It is an application of the hub's public API only: it declares its channels (:mod:`tidings.crawler.channels`)
with ``hub.namespace``, adds the ``request_status`` counts with ``hub.status_provider``, migrates its own Alembic
branch (``platform``), includes its REST API (:mod:`tidings.crawler.api`), mounts the sample site at
``/sample-site``, and runs jobs:

* embedded default (``TIDINGS_BROKER_URL=memory://``): in this process, as asyncio tasks (nothing else to start);
* with Redis (``TIDINGS_BROKER_URL=redis://...``): jobs are sent to Celery workers (``tidings worker``), whose
  events reach the browsers through the Redis broker.

Either way a :class:`~tidings.crawler.jobs.Reaper` in the server fails running jobs whose lease expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from tidings.connection import UserInfo
from tidings.crawler import events as _events  # noqa: F401  (registers the platform events)
from tidings.crawler import store
from tidings.crawler.api import DispatchError, build_platform_router
from tidings.crawler.channels import platform_namespaces
from tidings.crawler.config import PlatformSettings
from tidings.crawler.egress import LOOPBACK_NAMES, SAMPLE_SITE_PREFIX, EgressPolicy, SelfOrigin
from tidings.crawler.jobs import SERVER_LOST_ERROR, JobRunner, Reaper, worker_name
from tidings.crawler.models import CrawlJob, JobStatus
from tidings.crawler.notify import CANCELLED_ERROR, JobNotifier
from tidings.service import Tidings

__all__ = ["DispatchError", "Platform", "install_platform"]

logger = logging.getLogger("tidings.crawler")


class Platform:
    """Jobs, properties and workers of one server."""

    def __init__(self, hub: Tidings, config: PlatformSettings | None = None) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.config = config or PlatformSettings()
        self.db = hub.db
        self.node = hub.node
        self.celery_url = self.config.celery_url(self.settings)
        self.runner = JobRunner(
            self.db,
            self.node,
            self.config,
            progress_every=self.config.job_progress_every,
            worker=worker_name("server"),
            egress=self.egress_policy,
        )
        self.app: FastAPI | None = None
        self._origins: set[tuple[str, int]] = set()
        self.reaper = Reaper(self.db, self.node, self.config, on_requeue=self._redispatch)
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._celery: Any = None
        self._reaper_task: asyncio.Task[None] | None = None
        self.router = build_platform_router(self)

    @property
    def mode(self) -> str:
        """``"celery"`` when jobs go to workers, ``"embedded"`` when they run in this process."""
        return "celery" if self.celery_url else "embedded"

    # ---- where crawls may go -------------------------------------------------------------------------------
    def learn_origin(self, server: object) -> None:
        """Remember an address this server answers on (an ASGI scope's ``server``: the socket's own address)."""
        if isinstance(server, tuple | list) and len(server) >= 2 and isinstance(server[1], int):
            self._origins.add((str(server[0]), server[1]))

    def egress_policy(self) -> EgressPolicy:
        """The crawl egress policy: ``TIDINGS_CRAWL_ALLOWED_HOSTS``, plus this server's own sample site (its ports
        on loopback and on the address it listens on, paths under ``/sample-site/``)."""
        policy = EgressPolicy.build(self.config.crawl_allowed_hosts)
        state = getattr(self.app, "state", None)
        for host, port in sorted(self._origins | set(getattr(state, "listen_addresses", ()))):
            hosts = LOOPBACK_NAMES if host in ("", "0.0.0.0", "::") else LOOPBACK_NAMES | {host.lower()}
            policy = policy.with_self_origin(SelfOrigin(port, frozenset(hosts), SAMPLE_SITE_PREFIX))
        return policy

    # ---- hooks into the hub ------------------------------------------------------------------------------
    async def owns_job(self, user: UserInfo, job_id: str) -> bool:
        """Owner check of ``job:<id>``: the job's owner (admins pass before this is asked)."""
        if not job_id.isdigit() or len(job_id) > 18:
            return False
        return await store.job_owner(self.db, int(job_id)) == user.id

    async def status(self, user: UserInfo) -> dict[str, Any]:
        """``request_status`` counts, from the database."""
        return {
            "active_jobs": await store.count_active_jobs(self.db),
            "total_properties": await store.count_properties(self.db),
        }

    def install(self, app: FastAPI) -> None:
        """Declare the channels and the status provider on the hub; add the routes and the sample site."""
        from tidings.crawler.sample_site import create_sample_site_app, price_version_from_file

        self.app = app
        for name, namespace in platform_namespaces(self.owns_job).items():
            self.hub.namespace(name, namespace)
        self.hub.status_provider(self.status)
        app.include_router(self.router)
        version_file = self.config.price_version_path(self.settings)
        site = create_sample_site_app(price_version_from_file(version_file))
        app.mount(SAMPLE_SITE_PREFIX.rstrip("/"), site, name="sample-site")

    # ---- jobs --------------------------------------------------------------------------------------------
    async def dispatch(self, job_id: int) -> None:
        """Run a pending job: on a Celery worker, or here as an asyncio task."""
        if self._celery is not None:
            from tidings.crawler.celery_app import send_job

            try:
                egress = self.egress_policy().to_setting()
                queue = self.config.queue_name(self.settings)
                await asyncio.to_thread(send_job, self._celery, job_id, queue, egress)
            except Exception as exc:
                error = f"could not queue the job: {type(exc).__name__}: {exc}"
                logger.error("job %s: %s", job_id, error)
                await self._fail_pending(job_id, error)
                raise DispatchError(error) from exc
            return
        task = asyncio.get_running_loop().create_task(self._run_here(job_id), name=f"crawl-job-{job_id}")
        self._tasks[job_id] = task

    async def _redispatch(self, job_id: int) -> None:
        """A re-queued job (its worker was lost): send it to a runner again."""
        with contextlib.suppress(DispatchError):  # dispatch() has then failed the job and told its owner
            await self.dispatch(job_id)

    async def _fail_pending(self, job_id: int, error: str) -> None:
        job = await store.fail_pending(self.db, job_id, error)
        if job is not None:
            with contextlib.suppress(Exception):
                await JobNotifier(self.node, job.id, job.owner_id).failed(error, 0)

    async def _run_here(self, job_id: int) -> None:
        try:
            await self.runner.run(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("job %s: the in-process runner failed", job_id)
        finally:
            self._tasks.pop(job_id, None)

    async def cancel(self, job_id: int) -> CrawlJob | None:
        """Cancel a job: pending ones end now; running ones are stopped by their runner (here or on a worker,
        which sees the request at its next heartbeat)."""
        job, cancelled_now = await store.request_cancel(self.db, job_id)
        if job is None:
            return None
        if cancelled_now:
            notifier = JobNotifier(self.node, job.id, job.owner_id)
            await notifier.failed(CANCELLED_ERROR, 0, status=JobStatus.CANCELLED.value)
        else:
            self.runner.request_stop(job_id)
        return job

    # ---- lifecycle ---------------------------------------------------------------------------------------
    @asynccontextmanager
    async def run(self) -> AsyncIterator[Platform]:
        """Connect Celery (if configured), start the reaper, resume pending in-process jobs; stop on exit.

        Enter it inside the hub's ``run()`` (the users' tables exist and the node started)."""
        await self.db.migrate("platform@head")
        if self.celery_url:
            from tidings.crawler.celery_app import create_celery

            self._celery = create_celery(self.settings, self.config)
        self._reaper_task = asyncio.get_running_loop().create_task(self.reaper.run_forever(), name="job-reaper")
        if self._celery is None:
            # Embedded: nothing else runs jobs, so a job still "running" was left by a previous process that died.
            for left in await store.requeue_running(self.db, SERVER_LOST_ERROR, self.config.max_attempts):
                notifier = JobNotifier(self.node, left.job_id, left.owner_id)
                with contextlib.suppress(Exception):
                    if left.requeued:
                        await notifier.requeued(SERVER_LOST_ERROR, left.items_scraped)
                    else:
                        await notifier.failed(left.error, left.items_scraped)
            pending, _ = await store.list_jobs(self.db, None, status=JobStatus.PENDING.value, limit=1000)
            for job in reversed(pending):
                await self.dispatch(job.id)
        logger.info("crawler platform started (%s mode)", self.mode)
        try:
            yield self
        finally:
            await self._stop()

    async def _stop(self) -> None:
        tasks = [self._reaper_task, *self._tasks.values()]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._celery is not None:
            with contextlib.suppress(Exception):
                self._celery.close()


def install_platform(app: FastAPI, hub: Tidings, config: PlatformSettings | None = None) -> Platform:
    """Add the crawler platform to ``app`` (routes, channel rule, status, sample site); run it with
    ``async with platform.run():`` inside the hub's ``run()``. Also stored as ``app.state.platform``."""
    platform = Platform(hub, config)
    platform.install(app)
    app.state.platform = platform
    return platform
