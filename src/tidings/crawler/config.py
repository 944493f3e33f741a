"""Settings of the crawler platform: ``TIDINGS_*`` variables next to the hub's :class:`tidings.settings.Settings`.

The hub's settings give the database (``TIDINGS_DATABASE_URL``) and the broker (``TIDINGS_BROKER_URL``); these
add what only the platform needs (``TIDINGS_JOB_PROGRESS_EVERY`` among them: the hub knows nothing of jobs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tidings.broker.urls import celery_broker, is_redis_url
from tidings.settings import Settings

__all__ = ["PlatformSettings", "uses_workers"]


class PlatformSettings(BaseSettings):
    """Configuration of crawl jobs, workers and the sample site, read from ``TIDINGS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    spiders: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["listings"], description="Spider names jobs may use (comma-separated)."
    )
    celery_broker_url: str = Field(
        "", description="Celery's broker; default: TIDINGS_BROKER_URL when that is redis://, else no workers."
    )
    job_queue: str = Field(
        "", description="Celery queue the crawl jobs go to; default '<TIDINGS_BROKER_PREFIX>.jobs' (tidings.jobs)."
    )
    job_lease_seconds: float = Field(
        30.0, gt=0, description="A running job whose runner has not renewed its lease for this long is failed."
    )
    job_max_retries: int = Field(
        2,
        ge=0,
        description="Times a job interrupted by a shutdown or a lost worker is re-queued before it fails.",
    )
    reaper_interval: float = Field(0.0, ge=0, description="Seconds between reaper passes; 0: a third of the lease.")
    crawl_settings: dict[str, Any] = Field(
        default_factory=dict, description='Scrapy settings for every crawl, as JSON (e.g. {"DOWNLOAD_DELAY": 0}).'
    )
    job_timeout: float = Field(3600.0, ge=0, description="Seconds a crawl may run before it is failed; 0: no limit.")
    max_target_urls: int = Field(20, ge=1, description="Most target URLs one job may have.")
    job_progress_every: int = Field(10, ge=1, description="Emit job_progress every this many items.")
    crawl_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts crawls may reach although the egress policy refuses them (host, host:port, *.suffix).",
    )
    sample_site_price_version_file: str = Field(
        "", description="File holding the sample site's price version; default data_dir/sample-site-price-version."
    )

    @field_validator("spiders", "crawl_allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def heartbeat_interval(self) -> float:
        """How often a runner renews its lease and looks for a cancel request."""
        return max(0.2, min(self.job_lease_seconds / 3, 2.0))

    @property
    def max_attempts(self) -> int:
        """Runs a job may have: the first one and ``job_max_retries`` resumptions."""
        return self.job_max_retries + 1

    @property
    def reaper_period(self) -> float:
        """Seconds between reaper passes."""
        return self.reaper_interval or max(0.5, self.job_lease_seconds / 3)

    def price_version_path(self, settings: Settings) -> Path:
        """Where the sample site reads its price version (re-read on every request)."""
        if self.sample_site_price_version_file:
            return Path(self.sample_site_price_version_file)
        return settings.data_dir / "sample-site-price-version"

    def queue_name(self, settings: Settings) -> str:
        """The Celery queue of crawl jobs: ``job_queue``, else derived from the broker prefix (``tidings.jobs``),
        so installations with different ``TIDINGS_BROKER_PREFIX`` values never take each other's jobs."""
        return self.job_queue or f"{settings.broker_prefix}.jobs"

    def celery_url(self, settings: Settings) -> str | None:
        """Celery's broker URL, or None when jobs run in-process (the embedded default)."""
        if self.celery_broker_url:
            return self.celery_broker_url
        if is_redis_url(settings.broker_url):  # redis://, redis+sentinel:// (not redis+cluster://: kombu can't)
            target = celery_broker(settings.broker_url)
            return target[0] if target is not None else None
        return None

    def celery_transport_options(self, settings: Settings) -> dict[str, Any]:
        """Kombu transport options the broker URL needs (``master_name`` behind Sentinel)."""
        if self.celery_broker_url or not is_redis_url(settings.broker_url):
            return {}
        target = celery_broker(settings.broker_url)
        return target[1] if target is not None else {}


def uses_workers(settings: Settings, platform: PlatformSettings) -> bool:
    """Whether jobs go to Celery workers (True) or run inside the server (False)."""
    return platform.celery_url(settings) is not None
