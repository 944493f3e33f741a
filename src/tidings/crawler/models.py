"""The crawler platform's tables, on the core :class:`tidings.db.Base` (migration ``0002_crawler``).

* :class:`CrawlJob` -- one request to crawl ``target_urls`` with a spider, owned by a user; its ``status`` goes
  ``pending -> running -> completed | failed | cancelled`` (or ``pending -> cancelled``). A running job holds a
  lease (``lease_expires_at``) that its runner renews; a job whose lease ran out is marked failed
  ("worker lost") by the reaper.
* :class:`JobExecution` -- one attempt at running a job: items stored, start and end, error.
* :class:`Property` -- a listing, unique by URL, with first and last time seen.
* :class:`PriceHistory` -- every observed price change of a property.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tidings.db.models import Base, utcnow

__all__ = ["ACTIVE_STATUSES", "FINAL_STATUSES", "CrawlJob", "JobExecution", "JobStatus", "PriceHistory", "Property"]


class JobStatus(StrEnum):
    """Life of a crawl job."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
FINAL_STATUSES = (JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)

PRICE = Numeric(14, 2)


class CrawlJob(Base):
    """A crawl requested by a user."""

    __tablename__ = "crawl_jobs"
    __table_args__ = (Index("ix_crawl_jobs_status_lease", "status", "lease_expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    spider_name: Mapped[str] = mapped_column(String(64))
    target_urls: Mapped[list[str]] = mapped_column(JSON)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING.value)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    items_scraped: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: how many times a runner claimed the job; more than one: it was re-queued after an interruption
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: why the job was last re-queued ("interrupted: the server shut down", "worker lost"); None: never
    resume_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    executions: Mapped[list[JobExecution]] = relationship(
        back_populates="job", order_by="JobExecution.id", cascade="all, delete-orphan", lazy="selectin"
    )

    def to_dict(self) -> dict[str, Any]:
        """The job as the REST API shows it (``job_id`` as in the events)."""
        return {
            "job_id": self.id,
            "spider_name": self.spider_name,
            "target_urls": list(self.target_urls),
            "owner_id": self.owner_id,
            "status": self.status,
            "cancel_requested": self.cancel_requested,
            "items_scraped": self.items_scraped,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "attempts": self.attempts or 0,
            "resumed": self.resume_reason is not None,
            "resume_reason": self.resume_reason,
        }


class JobExecution(Base):
    """One run of a job by a runner (in-process or a Celery worker)."""

    __tablename__ = "job_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("crawl_jobs.id", ondelete="CASCADE"), index=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    items_scraped: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    job: Mapped[CrawlJob] = relationship(back_populates="executions")

    def to_dict(self) -> dict[str, Any]:
        """The execution as the REST API shows it."""
        return {
            "execution_id": self.id,
            "worker": self.worker,
            "items_scraped": self.items_scraped,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
        }


class Property(Base):
    """A property listing, identified by its URL."""

    __tablename__ = "properties"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(String(512))
    price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True, index=True)
    currency: Mapped[str | None] = mapped_column(String(8), nullable=True)
    location: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    bedrooms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    area_m2: Mapped[float | None] = mapped_column(Float, nullable=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    prices: Mapped[list[PriceHistory]] = relationship(
        back_populates="property", order_by="PriceHistory.id", cascade="all, delete-orphan", lazy="raise"
    )

    def to_dict(self) -> dict[str, Any]:
        """The property as the REST API shows it."""
        return {
            "property_id": self.id,
            "url": self.url,
            "title": self.title,
            "price": price_json(self.price),
            "currency": self.currency,
            "location": self.location,
            "bedrooms": self.bedrooms,
            "area_m2": self.area_m2,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
        }


class PriceHistory(Base):
    """A price change of a property, as observed by a crawl."""

    __tablename__ = "price_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), index=True)
    old_price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True)
    new_price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    property: Mapped[Property] = relationship(back_populates="prices")

    def to_dict(self) -> dict[str, Any]:
        """The change as the REST API shows it."""
        return {
            "old_price": price_json(self.old_price),
            "new_price": price_json(self.new_price),
            "changed_at": _iso(self.changed_at),
        }


def price_json(price: Decimal | None) -> int | float | None:
    """A price as a JSON number: an integer when whole (``1250000``), else a float (``99.5``)."""
    if price is None:
        return None
    return int(price) if price == price.to_integral_value() else float(price)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which are UTC here."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()
