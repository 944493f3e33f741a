"""REST endpoints of the hub: admin broadcasts, publishing, presence, stats, health."""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tidings.api.bodies import json_body_openapi, read_json
from tidings.api.deps import admin_dependency, user_dependency
from tidings.broker import BrokerUnavailable
from tidings.channels import InvalidPublication
from tidings.connection import UserInfo
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


def _unavailable() -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Broker unavailable; nothing was published")


def build_rest_router(node: Node) -> APIRouter:
    """The hub's REST routes, bound to ``node``."""
    router = APIRouter()
    admin = Annotated[UserInfo, Depends(admin_dependency(node))]
    user_dep = Annotated[UserInfo, Depends(user_dependency(node))]

    limit = node.settings.max_body_bytes

    # Bodies are read after the dependencies (authentication first: 401/403 before 413/422), see api/bodies.py.
    @router.post("/admin/broadcast", tags=["admin"], openapi_extra=json_body_openapi(BroadcastIn))
    async def broadcast(request: Request, _: admin) -> dict[str, str]:
        """Send a ``system_notification`` to every connected client on every node."""
        body = await read_json(request, BroadcastIn, limit)
        try:
            await node.broadcast(body.message, body.category, body.start_time)
        except BrokerUnavailable:
            raise _unavailable() from None
        return {"message": "Broadcast sent successfully"}

    @router.post("/admin/notify-admins", tags=["admin"], openapi_extra=json_body_openapi(BroadcastIn))
    async def notify_admins(request: Request, _: admin) -> dict[str, str]:
        """Send an ``admin_notification`` to administrators' connections only."""
        body = await read_json(request, BroadcastIn, limit)
        try:
            await node.notify_admins(body.message, body.category)
        except BrokerUnavailable:
            raise _unavailable() from None
        return {"message": "Notification sent successfully"}

    @router.post("/api/publish", tags=["hub"], openapi_extra=json_body_openapi(PublishIn))
    async def publish(request: Request, _: admin) -> dict[str, Any]:
        """Publish ``data`` on ``channel``; its subscribers receive a ``publication``."""
        body = await read_json(request, PublishIn, limit)
        if node.rules.policy(body.channel) is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"Invalid channel: {body.channel}")
        try:
            pub = await node.publish(body.channel, body.data)
        except InvalidPublication as exc:
            errors = [{"loc": ["body", "data", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors]
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from None
        except BrokerUnavailable:
            raise _unavailable() from None
        except orjson.JSONEncodeError as exc:
            detail = f"Data cannot be encoded as JSON: {exc}"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from None
        return {"channel": pub.channel, "offset": pub.offset, "epoch": pub.epoch}

    @router.get("/api/presence/{channel}", tags=["hub"])
    async def presence(
        channel: str,
        _: admin,
        cursor: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> dict[str, Any]:
        """Users present on ``channel`` across the cluster (admins), one page after ``cursor`` (a user id).

        ``count`` is the exact number of members; ``cursor`` is the value for the next page (null on the last).
        """
        if node.rules.policy(channel) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Unknown channel: {channel}")
        try:
            return {"channel": channel, **await node.presence_page(channel, cursor, limit)}
        except BrokerUnavailable:
            raise _unavailable() from None

    @router.get("/api/stats", tags=["hub"])
    async def stats() -> dict[str, int]:
        """Connected users and connections (cluster totals)."""
        try:
            return await node.stats()
        except BrokerUnavailable:
            raise _unavailable() from None

    @router.get("/api/me", tags=["auth"])
    async def me(user: user_dep) -> dict[str, Any]:
        """The user the bearer token belongs to."""
        return {"user_id": user.id, "username": user.username, "role": user.role}

    @router.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        """Liveness and broker health; 503 while the broker is down (local connections are still served)."""
        broker = node.broker.info()
        healthy = node.broker.healthy
        body = {
            "status": "ok" if healthy else "degraded",
            "broker": broker,
            "connections": len(node.hub.connections),
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    return router
