"""The platform's WebSocket events as message models, registered with the hub's protocol.

:mod:`tidings.crawler.notify` builds these events as dicts (one orjson encode per channel, no model per event);
these models describe them for ``GET /asyncapi.json`` and the tests check the real events against them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tidings.messages import ChannelEvent, register_event

__all__ = ["JobUpdate", "PropertyNotification"]


@register_event
class JobUpdate(ChannelEvent):
    """A crawl job's progress, on its owner's ``user:<id>``, on ``job:<id>`` and on ``job_updates``."""

    type: Literal["job_update"] = "job_update"
    event: Literal["job_started", "job_progress", "job_completed", "job_failed"]
    job_id: int
    status: str = Field(description="pending, running, completed, failed or cancelled")
    items_scraped: int | None = None
    total_items: int | None = None
    error: str | None = None
    spider_name: str | None = None
    target_urls: list[str] | None = None
    attempt: int | None = Field(None, description="job_started: the run's number (above 1 after a re-queue)")
    resumed: bool | None = Field(None, description="job_started: the job was re-queued after an interruption")
    requeued: bool | None = Field(None, description="job_progress with status pending: interrupted, re-queued")
    resume_reason: str | None = Field(None, description="why it was re-queued (shutdown, crash, worker lost)")
    timestamp: float


@register_event
class PropertyNotification(ChannelEvent):
    """New listings (``property_updates``) or a price change (``property:<id>`` and ``property_updates``)."""

    type: Literal["property_notification"] = "property_notification"
    event: Literal["new_properties", "price_change"]
    count: int | None = Field(None, description="new_properties: how many")
    location: str | None = Field(None, description="new_properties: where")
    property_id: int | None = Field(None, description="price_change: which property")
    url: str | None = None
    title: str | None = Field(None, description="price_change: the property's title")
    currency: str | None = Field(None, description="price_change: the listing's currency")
    old_price: int | float | None = None
    new_price: int | float | None = None
    timestamp: float
