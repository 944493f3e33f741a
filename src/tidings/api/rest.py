"""REST endpoints of the hub: admin broadcasts, publishing, presence, stats, health."""

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tidings.api.bodies import json_body_openapi, read_json
from tidings.api.deps import admin_dependency, user_dependency
from tidings.api.errors import TidingsRoute
from tidings.channels import InvalidPublication
from tidings.connection import UserInfo
from tidings.messages import PresenceUser
from tidings.node import Node

__all__ = ["build_rest_router"]


class BroadcastIn(BaseModel):
    """Body of the admin broadcast endpoints."""

    message: str = Field(min_length=1, max_length=10_000)
    category: str = Field("general", min_length=1, max_length=64)
    start_time: str | None = Field(None, max_length=64)


class PublishIn(BaseModel):
    """Body of ``POST /api/publish``."""

    channel: str = Field(min_length=1, max_length=128)
    data: Any


class Sent(BaseModel):
    """Answer of the notification endpoints."""

    message: str


class Published(BaseModel):
    """Where a publication was stored."""

    channel: str
    offset: int = Field(description="Position in the channel's stream")
    epoch: str
    duplicate: bool = Field(
        False, description="True when the Idempotency-Key was seen before: the original position, nothing delivered"
    )


class PresenceOut(BaseModel):
    """One page of the users present on a channel."""

    channel: str
    users: list[PresenceUser]
    count: int = Field(description="Members in all")
    cursor: int | None = Field(description="The ``cursor`` of the next page; null on the last")


class Stats(BaseModel):
    """Cluster totals."""

    users: int
    connections: int


class Me(BaseModel):
    """The user a token belongs to."""

    user_id: int | str  # the host's ids may be strings (UUIDs)
    username: str
    role: str


class Health(BaseModel):
    """Liveness and broker health (status 503 while degraded)."""

    status: Literal["ok", "degraded"]
    broker: dict[str, Any]
    connections: int = Field(description="Connections on this node")


def build_rest_router(node: Node) -> APIRouter:
    """The hub's REST routes, bound to ``node``; a broker outage answers 503 (:class:`TidingsRoute`)."""
    router = APIRouter(route_class=TidingsRoute)
    admin = Annotated[UserInfo, Depends(admin_dependency(node))]
    user_dep = Annotated[UserInfo, Depends(user_dependency(node))]
    unavailable: dict[int | str, dict[str, Any]] = {503: {"description": "The broker is unavailable"}}

    limit = node.settings.max_body_bytes

    # Bodies are read after the dependencies (authentication first: 401/403 before 413/422), see api/bodies.py.
    @router.post(
        "/admin/broadcast", tags=["admin"], openapi_extra=json_body_openapi(BroadcastIn), responses=unavailable
    )
    async def broadcast(request: Request, _: admin) -> Sent:
        """Send a ``system_notification`` to every connected client on every node."""
        body = await read_json(request, BroadcastIn, limit)
        await node.broadcast(body.message, body.category, body.start_time)
        return Sent(message="Broadcast sent successfully")

    @router.post(
        "/admin/notify-admins", tags=["admin"], openapi_extra=json_body_openapi(BroadcastIn), responses=unavailable
    )
    async def notify_admins(request: Request, _: admin) -> Sent:
        """Send an ``admin_notification`` to administrators' connections only."""
        body = await read_json(request, BroadcastIn, limit)
        await node.notify_admins(body.message, body.category)
        return Sent(message="Notification sent successfully")

    @router.post("/api/publish", tags=["hub"], openapi_extra=json_body_openapi(PublishIn), responses=unavailable)
    async def publish(
        request: Request,
        _: admin,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=200,
                description="Makes a retry safe: a repeat of the key on the channel within TIDINGS_IDEMPOTENCY_TTL "
                "returns the original offset (`duplicate: true`) and delivers nothing, cluster-wide.",
            ),
        ] = None,
    ) -> Published:
        """Publish ``data`` on ``channel``; its subscribers receive a ``publication``."""
        body = await read_json(request, PublishIn, limit)
        if node.rules.policy(body.channel) is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"Invalid channel: {body.channel}")
        try:
            pub = await node.publish(body.channel, body.data, idempotency_key=idempotency_key)
        except InvalidPublication as exc:
            errors = [{"loc": ["body", "data", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors]
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from None
        except orjson.JSONEncodeError as exc:
            detail = f"Data cannot be encoded as JSON: {exc}"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from None
        return Published(channel=pub.channel, offset=pub.offset, epoch=pub.epoch, duplicate=pub.duplicate)

    @router.get("/api/presence/{channel}", tags=["hub"], responses=unavailable)
    async def presence(
        channel: str,
        _: admin,
        cursor: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> PresenceOut:
        """Users present on ``channel`` across the cluster (admins), one page after ``cursor`` (a user id).

        ``count`` is the exact number of members; ``cursor`` is the value for the next page (null on the last).
        """
        if node.rules.policy(channel) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Unknown channel: {channel}")
        page = await node.presence_page(channel, cursor, limit)
        users = [PresenceUser.model_validate(u) for u in page["users"]]
        return PresenceOut(channel=channel, users=users, count=page["count"], cursor=page["cursor"])

    @router.get("/api/stats", tags=["hub"], responses=unavailable)
    async def stats() -> Stats:
        """Connected users and connections (cluster totals)."""
        return Stats.model_validate(await node.stats())

    @router.get("/api/me", tags=["auth"])
    async def me(user: user_dep) -> Me:
        """The user the bearer token belongs to."""
        return Me(user_id=user.id, username=user.username, role=user.role)

    @router.get(
        "/healthz", tags=["ops"], response_model=Health, responses={503: {"model": Health, "description": "Degraded"}}
    )
    async def healthz() -> JSONResponse:
        """Liveness and broker health; 503 while the broker is down (local connections are still served)."""
        healthy = node.broker.healthy
        body = Health(
            status="ok" if healthy else "degraded", broker=node.broker.info(), connections=len(node.hub.connections)
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if healthy else 503)

    return router
