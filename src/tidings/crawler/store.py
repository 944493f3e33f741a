"""Database operations of the crawler platform (jobs, leases, properties), on a :class:`tidings.db.Database`.

Every state change of a job is one conditional ``UPDATE ... WHERE status = ...``, so a server, a worker and the
reaper can race on the same row (in SQLite or PostgreSQL) and exactly one of them wins:

* :func:`claim_job` -- ``pending -> running`` (a redelivered Celery message finds the job taken and does nothing);
* :func:`renew_lease` -- keeps a running job's lease fresh and reports a cancel request;
* :func:`finish_job` -- ``running -> completed | failed | cancelled``;
* :func:`reap_expired` -- ``running`` with an expired lease ``-> pending`` (re-queued, up to a number of
  attempts) or ``-> failed`` ("worker lost");
* :func:`interrupt_job` / :func:`requeue_running` -- ``running -> pending`` after a shutdown or a crash of the
  embedded runner (``-> failed`` once the job has had its attempts);
* :func:`request_cancel` -- ``pending -> cancelled`` at once, or flags a running job for its runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.crawler.items import PropertyItem, is_http_url
from tidings.crawler.models import ACTIVE_STATUSES, CrawlJob, JobExecution, JobStatus, PriceHistory, Property
from tidings.db import Database
from tidings.db.models import utcnow

__all__ = [
    "Claim",
    "ReapedJob",
    "UpsertResult",
    "claim_job",
    "count_active_jobs",
    "count_properties",
    "create_job",
    "fail_pending",
    "finish_job",
    "get_job",
    "get_property",
    "interrupt_job",
    "job_owner",
    "list_jobs",
    "list_properties",
    "reap_expired",
    "record_progress",
    "renew_lease",
    "request_cancel",
    "requeue_running",
    "upsert_property",
]

CENT = Decimal("0.01")


def _rowcount(result: Any) -> int:
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


# ---- jobs ---------------------------------------------------------------------------------------------
async def create_job(db: Database, owner_id: int, spider_name: str, target_urls: list[str]) -> CrawlJob:
    """A new ``pending`` job."""
    job = CrawlJob(
        spider_name=spider_name,
        target_urls=target_urls,
        owner_id=owner_id,
        status=JobStatus.PENDING.value,
        cancel_requested=False,
        items_scraped=0,
        created_at=utcnow(),
    )
    async with db.session() as session:
        session.add(job)
        await session.flush()
        await session.refresh(job, ["executions"])
    return job


async def get_job(db: Database, job_id: int) -> CrawlJob | None:
    """The job with its executions, or None."""
    async with db.sessions() as session:
        return await session.get(CrawlJob, job_id)


async def job_owner(db: Database, job_id: int) -> int | None:
    """The owner's user id, or None when there is no such job."""
    async with db.sessions() as session:
        owner = (await session.execute(select(CrawlJob.owner_id).where(CrawlJob.id == job_id))).scalar_one_or_none()
        return None if owner is None else int(owner)


async def list_jobs(
    db: Database, owner_id: int | None, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[CrawlJob], int]:
    """Jobs (newest first) of ``owner_id`` (None: everybody's), and their total count."""
    query = select(CrawlJob)
    counter = select(func.count(CrawlJob.id))
    if owner_id is not None:
        query = query.where(CrawlJob.owner_id == owner_id)
        counter = counter.where(CrawlJob.owner_id == owner_id)
    if status is not None:
        query = query.where(CrawlJob.status == status)
        counter = counter.where(CrawlJob.status == status)
    async with db.sessions() as session:
        total = int((await session.execute(counter)).scalar_one())
        rows = (await session.execute(query.order_by(CrawlJob.id.desc()).limit(limit).offset(offset))).scalars()
        return list(rows), total


async def request_cancel(db: Database, job_id: int) -> tuple[CrawlJob | None, bool]:
    """Cancel a job: a pending one becomes ``cancelled`` now (returns True: the caller announces it); a running
    one is flagged ``cancel_requested`` and its runner stops the spider and announces it."""
    now = utcnow()
    async with db.session() as session:
        done = await session.execute(
            update(CrawlJob)
            .where(CrawlJob.id == job_id, CrawlJob.status == JobStatus.PENDING.value)
            .values(status=JobStatus.CANCELLED.value, cancel_requested=True, finished_at=now, error="cancelled")
        )
        cancelled_now = _rowcount(done) == 1
        if not cancelled_now:
            await session.execute(
                update(CrawlJob)
                .where(CrawlJob.id == job_id, CrawlJob.status == JobStatus.RUNNING.value)
                .values(cancel_requested=True)
            )
    return await get_job(db, job_id), cancelled_now


async def fail_pending(db: Database, job_id: int, error: str) -> CrawlJob | None:
    """``pending -> failed`` (the job could not be queued); the job, or None if it was not pending."""
    async with db.session() as session:
        done = await session.execute(
            update(CrawlJob)
            .where(CrawlJob.id == job_id, CrawlJob.status == JobStatus.PENDING.value)
            .values(status=JobStatus.FAILED.value, error=error, finished_at=utcnow())
        )
    return await get_job(db, job_id) if _rowcount(done) == 1 else None


@dataclass(frozen=True, slots=True)
class Claim:
    """A job taken by a runner, and the execution recording this attempt."""

    job_id: int
    owner_id: int
    spider_name: str
    target_urls: list[str]
    execution_id: int
    attempt: int = 1
    resume_reason: str | None = None


async def claim_job(db: Database, job_id: int, worker: str, lease_seconds: float) -> Claim | None:
    """Take a pending job (``pending -> running``) with a lease; None if it is not pending any more."""
    now = utcnow()
    async with db.session() as session:
        taken = await session.execute(
            update(CrawlJob)
            .where(CrawlJob.id == job_id, CrawlJob.status == JobStatus.PENDING.value)
            .values(
                status=JobStatus.RUNNING.value,
                started_at=now,
                worker=worker[:255],
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                items_scraped=0,
                error=None,
                attempts=CrawlJob.attempts + 1,
            )
        )
        if _rowcount(taken) != 1:
            return None
        job = (await session.execute(select(CrawlJob).where(CrawlJob.id == job_id))).scalar_one()
        execution = JobExecution(job_id=job_id, worker=worker[:255], items_scraped=0, started_at=now)
        session.add(execution)
        await session.flush()
        return Claim(
            job.id,
            job.owner_id,
            job.spider_name,
            list(job.target_urls),
            execution.id,
            attempt=job.attempts,
            resume_reason=job.resume_reason,
        )


async def renew_lease(db: Database, job_id: int, lease_seconds: float) -> bool | None:
    """Extend a running job's lease. Returns whether a cancel was requested, or None when the job is no longer
    running (reaped or finished elsewhere): its runner should stop."""
    async with db.session() as session:
        renewed = await session.execute(
            update(CrawlJob)
            .where(CrawlJob.id == job_id, CrawlJob.status == JobStatus.RUNNING.value)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        if _rowcount(renewed) != 1:
            return None
        flag = await session.execute(select(CrawlJob.cancel_requested).where(CrawlJob.id == job_id))
        return bool(flag.scalar_one())


async def record_progress(db: Database, job_id: int, execution_id: int, items: int) -> None:
    """Store the number of items stored so far."""
    async with db.session() as session:
        await session.execute(update(CrawlJob).where(CrawlJob.id == job_id).values(items_scraped=items))
        await session.execute(update(JobExecution).where(JobExecution.id == execution_id).values(items_scraped=items))


async def finish_job(
    db: Database, job_id: int, execution_id: int, status: JobStatus, items: int, error: str | None
) -> bool:
    """``running -> status``; False when the job was not running any more (the reaper got there first)."""
    now = utcnow()
    async with db.session() as session:
        done = await session.execute(
            update(CrawlJob)
            .where(CrawlJob.id == job_id, CrawlJob.status == JobStatus.RUNNING.value)
            .values(status=status.value, items_scraped=items, error=error, finished_at=now, lease_expires_at=None)
        )
        if _rowcount(done) != 1:
            return False
        await session.execute(
            update(JobExecution)
            .where(JobExecution.id == execution_id)
            .values(items_scraped=items, finished_at=now, error=error)
        )
        return True


@dataclass(frozen=True, slots=True)
class ReapedJob:
    """A running job taken from a runner that is gone: re-queued (``requeued``), or failed with ``error``."""

    job_id: int
    owner_id: int
    items_scraped: int
    requeued: bool = False
    error: str = ""
    attempts: int = 0


def gave_up(reason: str, attempts: int) -> str:
    """The error of a job that exhausted its attempts: the reason it was interrupted, and how often it tried."""
    return f"{reason} (gave up after {attempts} {'attempt' if attempts == 1 else 'attempts'})"


async def _take_back(
    db: Database, job_id: int, conditions: tuple[Any, ...], reason: str, max_attempts: int, now: datetime
) -> ReapedJob | None:
    """``running -> pending`` (attempts left) or ``-> failed`` for one job matching ``conditions``."""
    async with db.session() as session:
        job = (await session.execute(select(CrawlJob).where(CrawlJob.id == job_id, *conditions))).scalar_one_or_none()
        if job is None:
            return None
        attempts, owner, items = job.attempts or 0, job.owner_id, job.items_scraped
        requeue = attempts < max_attempts
        error = reason if requeue else gave_up(reason, attempts)
        values: dict[str, Any] = (
            {"status": JobStatus.PENDING.value, "resume_reason": reason, "error": None}
            if requeue
            else {"status": JobStatus.FAILED.value, "error": error, "finished_at": now}
        )
        done = await session.execute(
            update(CrawlJob)
            .where(CrawlJob.id == job_id, *conditions)
            .values(lease_expires_at=None, **values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(done) != 1:
            return None
        await session.execute(
            update(JobExecution)
            .where(JobExecution.job_id == job_id, JobExecution.finished_at.is_(None))
            .values(finished_at=now, error=reason)
        )
    return ReapedJob(job_id, owner, items, requeued=requeue, error=error, attempts=attempts)


async def reap_expired(
    db: Database, error: str, now: datetime | None = None, *, max_attempts: int = 1
) -> list[ReapedJob]:
    """Take back running jobs whose lease expired: re-queue those that have had fewer than ``max_attempts``
    runs, fail the others with ``error``; returns the jobs this call took (another reaper gets none of them)."""
    now = now or utcnow()
    expired = (
        CrawlJob.status == JobStatus.RUNNING.value,
        CrawlJob.lease_expires_at.is_not(None),
        CrawlJob.lease_expires_at < now,
    )
    async with db.sessions() as session:
        found = list((await session.execute(select(CrawlJob.id).where(*expired))).scalars())
    reaped: list[ReapedJob] = []
    for job_id in found:
        taken = await _take_back(db, job_id, expired, error, max_attempts, now)
        if taken is not None:
            reaped.append(taken)
    return reaped


async def interrupt_job(db: Database, job_id: int, reason: str, max_attempts: int) -> ReapedJob | None:
    """A runner stopped a running job it could not finish (the server shuts down): re-queue it for the next
    start, or fail it with ``reason`` once it has had ``max_attempts`` runs. None if it was not running."""
    return await _take_back(db, job_id, (CrawlJob.status == JobStatus.RUNNING.value,), reason, max_attempts, utcnow())


async def requeue_running(db: Database, reason: str, max_attempts: int) -> list[ReapedJob]:
    """At the start of an embedded server: every job still ``running`` was left by a runner that died with the
    previous process (a crash, a kill); re-queue (or fail) them all."""
    async with db.sessions() as session:
        running = select(CrawlJob.id).where(CrawlJob.status == JobStatus.RUNNING.value)
        found = list((await session.execute(running)).scalars())
    taken = [
        await _take_back(db, job_id, (CrawlJob.status == JobStatus.RUNNING.value,), reason, max_attempts, utcnow())
        for job_id in found
    ]
    return [job for job in taken if job is not None]


async def count_active_jobs(db: Database, owner_id: int | None = None) -> int:
    """Jobs pending or running (of ``owner_id``, or everybody's)."""
    query = select(func.count(CrawlJob.id)).where(CrawlJob.status.in_(ACTIVE_STATUSES))
    if owner_id is not None:
        query = query.where(CrawlJob.owner_id == owner_id)
    async with db.sessions() as session:
        return int((await session.execute(query)).scalar_one())


# ---- properties ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What storing one scraped item did."""

    property_id: int
    url: str
    location: str | None
    created: bool
    old_price: Decimal | None
    new_price: Decimal | None
    title: str = ""
    currency: str | None = None

    @property
    def price_changed(self) -> bool:
        """A known property whose price differs from the last one stored."""
        return not self.created and self.old_price != self.new_price


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


def _fields(item: PropertyItem) -> dict[str, Any]:
    return {
        "title": (item.title or "")[:512],
        "price": None if item.price is None else item.price.quantize(CENT),
        "currency": _clip(item.currency, 8),
        "location": _clip(item.location, 255),
        "bedrooms": item.bedrooms,
        "area_m2": item.area_m2,
    }


async def _by_url(session: AsyncSession, url: str) -> Property | None:
    query = select(Property).where(Property.url == url).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def upsert_property(db: Database, item: PropertyItem) -> UpsertResult:
    """Insert or update the property at ``item.url``; a changed price adds a :class:`PriceHistory` row.

    Only http(s) URLs are stored (ValueError otherwise): the URL is shown to every user as the listing's link."""
    if not is_http_url(item.url):
        raise ValueError(f"not an http(s) URL: {item.url[:100]!r}")
    fields = _fields(item)
    now = utcnow()
    async with db.session() as session:
        prop = await _by_url(session, item.url)
        if prop is None:
            try:
                async with session.begin_nested():
                    prop = Property(url=item.url, first_seen=now, last_seen=now, **fields)
                    session.add(prop)
                return UpsertResult(prop.id, prop.url, prop.location, True, None, prop.price, prop.title, prop.currency)
            except IntegrityError:  # another job stored the same URL a moment ago
                prop = await _by_url(session, item.url)
                if prop is None:
                    raise
        old_price = prop.price
        for name, value in fields.items():
            setattr(prop, name, value)
        prop.last_seen = now
        if old_price != prop.price:
            session.add(PriceHistory(property_id=prop.id, old_price=old_price, new_price=prop.price, changed_at=now))
        return UpsertResult(prop.id, prop.url, prop.location, False, old_price, prop.price, prop.title, prop.currency)


async def count_properties(db: Database) -> int:
    """How many properties are known."""
    async with db.sessions() as session:
        return int((await session.execute(select(func.count(Property.id)))).scalar_one())


async def list_properties(
    db: Database,
    *,
    location: str | None = None,
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Property], int]:
    """Properties matching the filters (``location``: case-insensitive substring), ordered by id, and the
    total number matching."""
    conditions: list[Any] = []
    if location:
        escaped = location.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(func.lower(Property.location).like(f"%{escaped}%", escape="\\"))
    if min_price is not None:
        conditions.append(Property.price >= min_price)
    if max_price is not None:
        conditions.append(Property.price <= max_price)
    async with db.sessions() as session:
        total = int((await session.execute(select(func.count(Property.id)).where(*conditions))).scalar_one())
        query = select(Property).where(*conditions).order_by(Property.id).limit(limit).offset(offset)
        return list((await session.execute(query)).scalars()), total


async def get_property(db: Database, property_id: int) -> tuple[Property, list[PriceHistory]] | None:
    """A property and its price history (oldest first), or None."""
    async with db.sessions() as session:
        prop = await session.get(Property, property_id)
        if prop is None:
            return None
        history = await session.execute(
            select(PriceHistory).where(PriceHistory.property_id == property_id).order_by(PriceHistory.id)
        )
        return prop, list(history.scalars())


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; they are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
