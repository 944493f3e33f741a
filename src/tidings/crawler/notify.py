"""The platform's events, built in one place and sent through any :class:`EventSink`.

In the server the sink is the :class:`~tidings.node.Node` itself; in a Celery worker it is the broker-backed
:class:`tidings.publisher.Publisher` -- both have ``publish_event(channels, event)``, so the job runner does not
know where it runs.

Events (see ``docs/protocol.md`` and ``docs/platform.md``):

* ``job_update`` on ``user:<owner>``, ``job:<id>`` and ``job_updates`` with ``event``:
  ``job_started``; ``job_progress`` (``items_scraped``, ``status``); ``job_completed`` (``total_items``: items
  actually stored); ``job_failed`` (``error``; a cancelled job reports ``error: "cancelled"`` and
  ``status: "cancelled"``; a job whose worker died reports ``error: "worker lost"``).
* ``property_notification`` on ``property_updates`` with ``event: new_properties`` (``count``, ``location``),
  and on ``property:<id>`` and ``property_updates`` with ``event: price_change`` (``property_id``, ``url``,
  ``old_price``, ``new_price``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

from tidings.crawler.models import price_json

__all__ = [
    "CANCELLED_ERROR",
    "WORKER_LOST_ERROR",
    "EventSink",
    "JobNotifier",
    "job_channels",
    "location_group",
    "new_properties_event",
    "price_change_event",
]

CANCELLED_ERROR = "cancelled"
WORKER_LOST_ERROR = "worker lost"


class EventSink(Protocol):
    """Anything that publishes typed events on channels (a Node, a Publisher)."""

    async def publish_event(self, channels: str | Iterable[str], event: dict[str, Any]) -> Any:
        """Publish ``event`` on each of ``channels``."""


def job_channels(job_id: int, owner_id: int) -> list[str]:
    """Where a job's events go: its owner, the job's own channel, and the admins' feed."""
    return [f"user:{owner_id}", f"job:{job_id}", "job_updates"]


def _job_event(event: str, job_id: int, **fields: Any) -> dict[str, Any]:
    return {"type": "job_update", "event": event, "job_id": job_id, **fields, "timestamp": time.time()}


def location_group(location: str | None) -> str:
    """The place a ``new_properties`` notification names: the last part of ``"De Pijp, Amsterdam"``."""
    if not location:
        return "unknown"
    return location.rsplit(",", 1)[-1].strip() or location.strip()


def new_properties_event(count: int, location: str) -> dict[str, Any]:
    """``property_notification`` / ``new_properties``."""
    return {
        "type": "property_notification",
        "event": "new_properties",
        "count": count,
        "location": location,
        "timestamp": time.time(),
    }


def price_change_event(
    property_id: int,
    url: str,
    old: Decimal | None,
    new: Decimal | None,
    *,
    title: str | None = None,
    currency: str | None = None,
    location: str | None = None,
) -> dict[str, Any]:
    """``property_notification`` / ``price_change`` (with the property's ``title``, ``currency`` and ``location``,
    so a notification can name it)."""
    return {
        "type": "property_notification",
        "event": "price_change",
        "property_id": property_id,
        "url": url,
        "title": title,
        "currency": currency,
        "location": location,
        "old_price": price_json(old),
        "new_price": price_json(new),
        "timestamp": time.time(),
    }


class JobNotifier:
    """Publishes one job's events to its owner, its channel and the admins' feed."""

    def __init__(self, sink: EventSink, job_id: int, owner_id: int) -> None:
        self.sink = sink
        self.job_id = job_id
        self.channels = job_channels(job_id, owner_id)

    async def _send(self, event: dict[str, Any]) -> None:
        await self.sink.publish_event(self.channels, event)

    async def started(
        self, spider_name: str, target_urls: list[str], *, attempt: int = 1, resume_reason: str | None = None
    ) -> None:
        """``job_started`` (``attempt`` > 1 and ``resumed: true`` when it was re-queued after ``resume_reason``)."""
        extra: dict[str, Any] = {"attempt": attempt}
        if resume_reason is not None:
            extra.update(resumed=True, resume_reason=resume_reason)
        await self._send(
            _job_event(
                "job_started",
                self.job_id,
                status="running",
                spider_name=spider_name,
                target_urls=target_urls,
                **extra,
            )
        )

    async def requeued(self, reason: str, items_scraped: int = 0) -> None:
        """``job_progress`` with ``status: "pending"``: the job was interrupted and waits to be resumed."""
        await self._send(
            _job_event(
                "job_progress",
                self.job_id,
                items_scraped=items_scraped,
                status="pending",
                requeued=True,
                resume_reason=reason,
            )
        )

    async def progress(self, items_scraped: int) -> None:
        """``job_progress`` with the number of items stored so far."""
        await self._send(_job_event("job_progress", self.job_id, items_scraped=items_scraped, status="running"))

    async def completed(self, total_items: int) -> None:
        """``job_completed`` with the number of items actually stored."""
        await self._send(
            _job_event(
                "job_completed", self.job_id, total_items=total_items, items_scraped=total_items, status="completed"
            )
        )

    async def failed(self, error: str, items_scraped: int = 0, *, status: str = "failed") -> None:
        """``job_failed`` (``status`` is ``cancelled`` for a cancelled job)."""
        await self._send(_job_event("job_failed", self.job_id, error=error, items_scraped=items_scraped, status=status))

    async def new_properties(self, counts: dict[str, int]) -> None:
        """One ``new_properties`` notification per location with new listings."""
        for location, count in sorted(counts.items()):
            if count:
                await self.sink.publish_event("property_updates", new_properties_event(count, location))

    async def price_change(
        self,
        property_id: int,
        url: str,
        old: Decimal | None,
        new: Decimal | None,
        *,
        title: str | None = None,
        currency: str | None = None,
        location: str | None = None,
    ) -> None:
        """``price_change`` on the property's channel and on ``property_updates``."""
        event = price_change_event(property_id, url, old, new, title=title, currency=currency, location=location)
        await self.sink.publish_event([f"property:{property_id}", "property_updates"], event)
