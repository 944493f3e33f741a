"""Job state changes in the database (SQLite and PostgreSQL): exactly one of several racing parties wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tidings.crawler import store
from tidings.crawler.items import PropertyItem
from tidings.crawler.models import JobStatus
from tidings.db import Database
from tidings.db.models import utcnow


@pytest.fixture
async def db(database_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database (SQLite file or a fresh PostgreSQL database)."""
    database = Database(database_env.get("TIDINGS_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await database.migrate()  # the users branch
    await database.migrate("platform@head")  # the crawler tables are the platform branch
    try:
        yield database
    finally:
        await database.dispose()


async def _job(db: Database) -> int:
    user = await db.create_user(f"u{utcnow().timestamp()}", "pw")
    job = await store.create_job(db, user.id, "listings", ["http://example.com/"])
    return job.id


async def test_claim_is_taken_once(db: Database) -> None:
    job_id = await _job(db)
    claims = await asyncio.gather(*(store.claim_job(db, job_id, f"w{i}", 30) for i in range(4)))
    assert len([c for c in claims if c is not None]) == 1
    assert await store.claim_job(db, job_id, "late", 30) is None
    job = await store.get_job(db, job_id)
    assert job is not None and job.status == "running" and len(job.executions) == 1


async def test_expired_lease_is_reaped_once_and_the_runner_notices(db: Database) -> None:
    job_id = await _job(db)
    claim = await store.claim_job(db, job_id, "w", 30)
    assert claim is not None
    assert await store.reap_expired(db, "worker lost") == []
    assert await store.renew_lease(db, job_id, 30) is False  # renewed, no cancel request

    later = utcnow() + timedelta(seconds=60)
    reaped = await asyncio.gather(
        store.reap_expired(db, "worker lost", later), store.reap_expired(db, "worker lost", later)
    )
    assert [r.job_id for batch in reaped for r in batch] == [job_id]
    assert await store.renew_lease(db, job_id, 30) is None  # the runner learns it lost the job
    assert not await store.finish_job(db, job_id, claim.execution_id, JobStatus.COMPLETED, 5, None)
    job = await store.get_job(db, job_id)
    assert job is not None and (job.status, job.error) == ("failed", "worker lost (gave up after 1 attempt)")
    assert job.executions[0].error == "worker lost"
    assert await store.count_active_jobs(db) == 0


async def test_expired_lease_requeues_until_the_attempts_are_spent(db: Database) -> None:
    job_id = await _job(db)
    later = utcnow() + timedelta(seconds=60)
    for attempt in (1, 2):
        claim = await store.claim_job(db, job_id, f"w{attempt}", 30)
        assert claim is not None and claim.attempt == attempt
        assert claim.resume_reason == (None if attempt == 1 else "worker lost")
        (taken,) = await store.reap_expired(db, "worker lost", later, max_attempts=2)
        assert taken.requeued is (attempt == 1)
        job = await store.get_job(db, job_id)
        assert job is not None
        assert job.status == ("pending" if attempt == 1 else "failed")
        later += timedelta(seconds=60)
    assert job.error == "worker lost (gave up after 2 attempts)"
    assert [e.error for e in job.executions] == ["worker lost", "worker lost"]


async def test_interrupted_job_goes_back_to_pending(db: Database) -> None:
    job_id = await _job(db)
    assert await store.interrupt_job(db, job_id, "interrupted: the server shut down", 3) is None  # not running
    assert await store.claim_job(db, job_id, "w", 30) is not None
    taken = await store.interrupt_job(db, job_id, "interrupted: the server shut down", 3)
    assert taken is not None and taken.requeued
    assert [j.job_id for j in await store.requeue_running(db, "x", 3)] == []
    assert await store.claim_job(db, job_id, "w", 30) is not None
    (left,) = await store.requeue_running(db, "interrupted: the server stopped unexpectedly", 3)
    assert left.requeued and left.attempts == 2
    job = await store.get_job(db, job_id)
    assert job is not None and job.status == "pending" and job.resume_reason.startswith("interrupted: the server st")


async def test_cancel_pending_now_running_by_flag(db: Database) -> None:
    pending = await _job(db)
    job, now = await store.request_cancel(db, pending)
    assert now and job is not None and job.status == "cancelled"
    assert await store.claim_job(db, pending, "w", 30) is None

    running = await _job(db)
    claim = await store.claim_job(db, running, "w", 30)
    assert claim is not None
    job, now = await store.request_cancel(db, running)
    assert not now and job is not None and job.status == "running" and job.cancel_requested
    assert await store.renew_lease(db, running, 30) is True
    assert await store.finish_job(db, running, claim.execution_id, JobStatus.CANCELLED, 3, "cancelled")
    job = await store.get_job(db, running)
    assert job is not None and (job.status, job.items_scraped) == ("cancelled", 3)


async def test_upsert_by_url_records_price_changes(db: Database) -> None:
    item = PropertyItem(url="http://example.com/1", title="Flat", price=Decimal("250000"), currency="EUR")
    results = await asyncio.gather(*(store.upsert_property(db, item) for _ in range(3)))
    assert sum(r.created for r in results) == 1 and len({r.property_id for r in results}) == 1
    assert not any(r.price_changed for r in results)
    item.price = Decimal("240000.50")
    changed = await store.upsert_property(db, item)
    assert changed.price_changed and changed.new_price == Decimal("240000.50")
    found = await store.get_property(db, changed.property_id)
    assert found is not None
    prop, history = found
    assert prop.price == Decimal("240000.50")
    assert [(h.old_price, h.new_price) for h in history] == [(Decimal("250000.00"), Decimal("240000.50"))]
    assert await store.count_properties(db) == 1
