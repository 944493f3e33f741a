"""The live dashboard: its pages and static files, and two small JSON endpoints it reads.

- ``GET /login`` and ``GET /dashboard``: the pages (plain HTML, CSS and ES modules, no build step), the files under
  ``/dashboard/static/`` (``src/tidings/web/dashboard/``). ``GET /`` redirects to the dashboard when the
  application has no page of its own there.
- ``GET /api/dashboard/rates``: this node's cumulative message counters, for messages-per-second charts.
- ``GET /api/history/{channel}``: the latest publications of a channel, for a view that opens (a chat room's
  backlog) or must reload after a failed recovery (``since_epoch`` + ``since_offset``: what came after that
  position, and whether that could be replayed in full). Durable channels (``room:*``) are read from the
  database (:mod:`tidings.durable_history`), every other channel from the broker's history.
"""

from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

from tidings.api.deps import user_dependency
from tidings.api.errors import TidingsRoute
from tidings.connection import UserInfo
from tidings.durable_history import DurableHistoryBroker, Replay
from tidings.node import Node
from tidings.web.stats import node_counters

__all__ = ["DASHBOARD_DIR", "build_dashboard_router", "mount_dashboard"]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

#: Pages are never cached: a deploy must not leave browsers on stale module graphs.
_NO_STORE = {"Cache-Control": "no-store"}


def build_dashboard_router(node: Node) -> APIRouter:
    """The dashboard's pages and JSON endpoints, bound to ``node``."""
    router = APIRouter(route_class=TidingsRoute)
    viewer = Annotated[UserInfo, Depends(user_dependency(node))]

    @router.get("/login", include_in_schema=False)
    async def login_page() -> FileResponse:
        """The sign-in page (``POST /auth/token``; the token is kept in ``sessionStorage``)."""
        return FileResponse(DASHBOARD_DIR / "login.html", headers=_NO_STORE)

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        """The single-page dashboard."""
        return FileResponse(DASHBOARD_DIR / "index.html", headers=_NO_STORE)

    @router.get("/api/dashboard/rates", tags=["dashboard"])
    async def rates(_: viewer) -> dict[str, Any]:
        """This node's cumulative counters; the difference of two samples over their ``time`` gives rates (the
        dashboard gets the same figures pushed as ``stats_update`` events on ``dashboard_stats``)."""
        return node_counters(node)

    @router.get("/api/history/{channel}", tags=["dashboard"])
    async def history(
        channel: str,
        user: viewer,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since_epoch: Annotated[str | None, Query(max_length=64)] = None,
        since_offset: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        """The last ``limit`` messages of ``channel``, oldest first, with its position; with ``since_epoch`` and
        ``since_offset``, the messages after that position instead (up to ``limit``).

        ``durable`` tells whether the channel's history is kept in the database (it survives restarts);
        ``complete`` whether the messages after ``since`` could all be replayed; ``missing`` how many in the range
        returned were never stored. Only for channels the user may subscribe to and whose every message they may
        see (not ``job_updates`` for non-administrators, whose subscription is an alias of their own
        ``user:<id>``).
        """
        policy = node.rules.policy(channel)
        if policy is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Unknown channel: {channel}")
        if not await node.rules.may_subscribe(user, channel) or (policy.own_events_alias and not user.is_admin):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"History of {channel} is not available")
        if (since_epoch is None) != (since_offset is None):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Give both since_epoch and since_offset")
        broker = node.broker
        stored = broker.history if isinstance(broker, DurableHistoryBroker) else None
        # BrokerUnavailable: 503 (TidingsRoute)
        offset, epoch = await broker.position(channel)
        if stored is not None and stored.durable(channel):
            if since_epoch is not None and since_offset is not None:
                replay = await stored.after(channel, since_epoch, since_offset, limit)
            else:
                replay = await stored.latest(channel, limit)
            return _history(channel, offset, epoch, replay, durable=True)
        if since_epoch is not None and since_offset is not None:
            result = await broker.recover(channel, since_offset, since_epoch)
            messages = [orjson.loads(pub.frame.payload) for pub in result.publications[-limit:]]
            complete = result.recovered and len(result.publications) <= limit
            return _history(channel, result.offset, result.epoch, Replay(messages, complete), durable=False)
        result = await broker.recover(channel, max(0, offset - limit), epoch)
        messages = [orjson.loads(pub.frame.payload) for pub in result.publications]
        return _history(channel, result.offset, result.epoch, Replay(messages, True), durable=False)

    return router


def _history(channel: str, offset: int, epoch: str, replay: Replay, *, durable: bool) -> dict[str, Any]:
    return {
        "channel": channel,
        "offset": offset,
        "epoch": epoch,
        "durable": durable,
        "complete": replay.complete,
        "missing": replay.missing,
        "messages": replay.messages,
    }


def mount_dashboard(app: FastAPI, node: Node) -> None:
    """Add the dashboard to ``app``: pages, JSON endpoints, ``/dashboard/static`` and a ``/`` redirect."""
    has_root = any(isinstance(r, Route) and r.path == "/" for r in app.router.routes)
    app.include_router(build_dashboard_router(node))
    app.mount("/dashboard/static", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")
    if not has_root:

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            """Send visitors to the dashboard."""
            return RedirectResponse("/dashboard")
