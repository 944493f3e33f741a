"""Dashboard figures pushed on a channel instead of polled: ``stats_update`` events on ``dashboard_stats``.

Each node computes its figures once per ``TIDINGS_STATS_INTERVAL`` seconds, however many dashboards watch, and
publishes one event through the broker, so every viewer on every node gets every node's figures:

``{"type": "stats_update", "channel": "dashboard_stats", "node": "<id>", "time", "interval", "connections",
"users"`` (cluster totals), ``"node_connections", "node_users", "channels", "publications", "deliveries",
"messages_received"`` (this node's cumulative counters: two events of one node give its rates) ``}``.

Nothing is published while no connection is open anywhere. ``GET /api/stats`` and ``GET /api/dashboard/rates``
stay for scripts and for the first figures of a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from pydantic import Field

from tidings.channels import Namespace
from tidings.messages import ChannelEvent, register_event
from tidings.node import Node

__all__ = ["STATS_CHANNEL", "StatsPusher", "StatsUpdate", "node_counters"]

logger = logging.getLogger("tidings.web.stats")

STATS_CHANNEL = "dashboard_stats"


@register_event
class StatsUpdate(ChannelEvent):
    """One node's figures for the dashboard, on ``dashboard_stats`` every ``TIDINGS_STATS_INTERVAL`` seconds."""

    type: Literal["stats_update"] = "stats_update"
    node: str = Field(description="the publishing node (rates: two events of the same node)")
    interval: float
    time: float
    connections: int = Field(description="cluster total")
    users: int = Field(description="cluster total")
    node_connections: int
    node_users: int
    channels: int
    publications: int = Field(description="this node's cumulative count")
    deliveries: int = Field(description="this node's cumulative count")
    messages_received: int = Field(description="this node's cumulative count")
    timestamp: float


def node_counters(node: Node) -> dict[str, Any]:
    """This node's cumulative counters (also ``GET /api/dashboard/rates``)."""
    hub = node.hub
    return {
        "time": time.time(),
        "connections": len(hub.connections),
        "users": len(hub.by_user),
        "channels": len(hub.subscribers),
        "publications": hub.publications_delivered,
        "deliveries": hub.deliveries,
        "messages_received": node.messages_received,
    }


class StatsPusher:
    """Publishes one ``stats_update`` per interval for one node."""

    def __init__(self, node: Node, interval: float) -> None:
        self.node = node
        self.interval = max(0.2, interval)
        self.node_id = secrets.token_hex(4)
        self.computations = 0

    @staticmethod
    def register(node: Node) -> None:
        """Let any signed-in user subscribe to ``dashboard_stats`` (only the server publishes there)."""
        node.rules.declare(STATS_CHANNEL, Namespace(subscribe="any", argument=False, history=10))

    async def push_once(self) -> bool:
        """Compute and publish this node's figures; False when nobody is connected (nothing published)."""
        totals = await self.node.stats()
        if not totals.get("connections"):
            return False
        self.computations += 1
        counters = node_counters(self.node)
        event = {
            "type": "stats_update",
            "node": self.node_id,
            "interval": self.interval,
            "time": counters["time"],
            "connections": totals["connections"],
            "users": totals["users"],
            "node_connections": counters["connections"],
            "node_users": counters["users"],
            "channels": counters["channels"],
            "publications": counters["publications"],
            "deliveries": counters["deliveries"],
            "messages_received": counters["messages_received"],
        }
        await self.node.publish_event(STATS_CHANNEL, event)
        return True

    async def run_forever(self) -> None:
        """Push every ``interval`` seconds until cancelled; a failed round is logged and skipped."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.push_once()
            except Exception:
                logger.debug("stats push failed", exc_info=True)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[StatsPusher]:
        """Push in the background for the duration of the block (enter it after the node has started)."""
        task = asyncio.get_running_loop().create_task(self.run_forever(), name="dashboard-stats")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
