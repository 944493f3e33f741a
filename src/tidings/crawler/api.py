"""REST API of the crawler platform: jobs and properties (documented in OpenAPI).

* ``POST /api/jobs``, ``GET /api/jobs``, ``GET /api/jobs/{id}``, ``POST /api/jobs/{id}/cancel`` -- users see
  their own jobs only (another user's job is a 404); administrators see every job.
* ``GET /api/properties`` (``location``, ``min_price``, ``max_price``, ``limit``, ``offset``; with ``total``) and
  ``GET /api/properties/{id}`` (with its price history).

Account administration is the built-in users' (:mod:`tidings.users.api`). The router needs only what
:class:`PlatformApi` describes, so this module does not import :mod:`tidings.crawler.service`.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AnyHttpUrl, BaseModel, Field

from tidings.api.deps import user_dependency
from tidings.connection import UserInfo
from tidings.crawler import store
from tidings.crawler.config import PlatformSettings
from tidings.crawler.egress import EgressPolicy, check_target
from tidings.crawler.models import FINAL_STATUSES, CrawlJob, JobStatus
from tidings.db import Database
from tidings.errors import TidingsError
from tidings.node import Node


class PlatformApi(Protocol):
    """What the routes need from the platform (:class:`tidings.crawler.service.Platform` has it)."""

    db: Database
    node: Node
    config: PlatformSettings

    async def dispatch(self, job_id: int) -> None:
        """Run a pending job."""

    async def cancel(self, job_id: int) -> CrawlJob | None:
        """Cancel a job."""

    def learn_origin(self, server: object) -> None:
        """Remember an address this server answers on."""

    def egress_policy(self) -> EgressPolicy:
        """The crawl egress policy."""


class DispatchError(TidingsError):
    """A job could not be handed to a worker (Celery's broker unreachable); the job is marked failed."""


__all__ = ["DispatchError", "PlatformApi", "build_platform_router"]


# ---- bodies and responses -------------------------------------------------------------------------------
class JobIn(BaseModel):
    """Body of ``POST /api/jobs``."""

    spider_name: str = Field(min_length=1, max_length=64, examples=["listings"])
    target_urls: list[AnyHttpUrl] = Field(min_length=1, examples=[["http://127.0.0.1:8000/sample-site/"]])


class ExecutionOut(BaseModel):
    """One run of a job."""

    execution_id: int
    worker: str | None
    items_scraped: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class JobOut(BaseModel):
    """A crawl job."""

    job_id: int
    spider_name: str
    target_urls: list[str]
    owner_id: int
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    cancel_requested: bool
    items_scraped: int
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(0, description="Runs so far (claims by a runner); above 1 after a resume")
    resumed: bool = Field(False, description="Re-queued after a restart or a lost worker")
    resume_reason: str | None = Field(None, description="Why it was last re-queued")
    executions: list[ExecutionOut] = []


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class PriceChangeOut(BaseModel):
    """A recorded price change."""

    old_price: float | None
    new_price: float | None
    changed_at: datetime | None


class PropertyOut(BaseModel):
    """A property listing."""

    property_id: int
    url: str
    title: str
    price: float | None
    currency: str | None
    location: str | None
    bedrooms: int | None
    area_m2: float | None
    first_seen: datetime | None
    last_seen: datetime | None


class PropertyDetail(PropertyOut):
    """A property with its price history (oldest first)."""

    price_history: list[PriceChangeOut]


class PropertyList(BaseModel):
    """A page of properties and the total number matching the filters."""

    properties: list[PropertyOut]
    total: int
    limit: int
    offset: int


def _job_out(job: CrawlJob, *, executions: bool = False) -> JobOut:
    data: dict[str, Any] = job.to_dict()
    if executions:
        data["executions"] = [execution.to_dict() for execution in job.executions]
    return JobOut.model_validate(data)


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


# ---- router ---------------------------------------------------------------------------------------------
def build_platform_router(platform: PlatformApi) -> APIRouter:
    """The platform's REST routes, bound to one :class:`~tidings.crawler.service.Platform`."""
    router = APIRouter()
    db = platform.db
    node = platform.node
    current_user: Callable[..., Awaitable[UserInfo]] = user_dependency(node)
    ViewerT = Annotated[UserInfo, Depends(current_user)]  # noqa: N806

    async def visible_job(job_id: int, user: UserInfo) -> CrawlJob:
        job = await store.get_job(db, job_id)
        if job is None or (job.owner_id != user.id and not node.is_admin(user)):
            raise _not_found("Job")
        return job

    @router.post("/api/jobs", tags=["jobs"], status_code=status.HTTP_201_CREATED, response_model=JobOut)
    async def create_job(body: JobIn, user: ViewerT, request: Request) -> JobOut:
        """Start a crawl of ``target_urls`` with spider ``spider_name``; events follow on ``job:<job_id>``.

        Targets the crawl egress policy refuses (internal, loopback, metadata addresses...) answer 422
        ``{"detail": "target not allowed: <reason>"}``; see ``docs/security.md``."""
        spiders = platform.config.spiders
        if body.spider_name not in spiders:
            detail = f"Unknown spider {body.spider_name!r} (available: {', '.join(spiders) or 'none'})"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
        if len(body.target_urls) > platform.config.max_target_urls:
            detail = f"At most {platform.config.max_target_urls} target URLs per job"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
        urls = list(dict.fromkeys(str(url) for url in body.target_urls))
        platform.learn_origin(request.scope.get("server"))
        policy = platform.egress_policy()
        for url in urls:
            refused = await check_target(policy, url)
            if refused is not None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"target not allowed: {refused}")
        job = await store.create_job(db, int(user.id), body.spider_name, urls)
        try:
            await platform.dispatch(job.id)
        except DispatchError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        return _job_out(job)

    @router.get("/api/jobs", tags=["jobs"], response_model=JobList)
    async def list_jobs(
        user: ViewerT,
        job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobList:
        """Your jobs (administrators: everybody's), newest first."""
        owner = None if node.is_admin(user) else int(user.id)
        value = None if job_status is None else job_status.value
        jobs, total = await store.list_jobs(db, owner, status=value, limit=limit, offset=offset)
        return JobList(jobs=[_job_out(job) for job in jobs], total=total, limit=limit, offset=offset)

    @router.get("/api/jobs/{job_id}", tags=["jobs"], response_model=JobOut)
    async def get_job(job_id: int, user: ViewerT) -> JobOut:
        """One job with its executions (404 for another user's job)."""
        return _job_out(await visible_job(job_id, user), executions=True)

    @router.post("/api/jobs/{job_id}/cancel", tags=["jobs"], response_model=JobOut)
    async def cancel_job(job_id: int, user: ViewerT) -> JobOut:
        """Cancel a pending or running job; the spider is stopped and ``job_failed`` (error ``cancelled``,
        status ``cancelled``) follows. 409 when the job has already ended."""
        job = await visible_job(job_id, user)
        if job.status in FINAL_STATUSES:
            raise HTTPException(status.HTTP_409_CONFLICT, f"Job {job_id} has already ended ({job.status})")
        updated = await platform.cancel(job_id)
        if updated is None:
            raise _not_found("Job")
        return _job_out(updated, executions=True)

    @router.get("/api/properties", tags=["properties"], response_model=PropertyList)
    async def list_properties(
        _: ViewerT,
        location: Annotated[str | None, Query(max_length=255, description="Substring, case-insensitive")] = None,
        min_price: Annotated[Decimal | None, Query(ge=0)] = None,
        max_price: Annotated[Decimal | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> PropertyList:
        """Properties matching the filters, by id, with the total number matching."""
        rows, total = await store.list_properties(
            db, location=location, min_price=min_price, max_price=max_price, limit=limit, offset=offset
        )
        items = [PropertyOut.model_validate(prop.to_dict()) for prop in rows]
        return PropertyList(properties=items, total=total, limit=limit, offset=offset)

    @router.get("/api/properties/{property_id}", tags=["properties"], response_model=PropertyDetail)
    async def get_property(property_id: int, _: ViewerT) -> PropertyDetail:
        """One property with its price history."""
        found = await store.get_property(db, property_id)
        if found is None:
            raise _not_found("Property")
        prop, history = found
        return PropertyDetail.model_validate({**prop.to_dict(), "price_history": [h.to_dict() for h in history]})

    return router
