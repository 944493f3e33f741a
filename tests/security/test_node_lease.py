"""Issue 9, dead-node lockout: after ``kill -9`` of a node, its users' connection slots come back within 10 s.

Before the node-liveness lease, a user who had 5 sockets on a killed node was refused on the survivors with 1008
"Too many connections" until the node's presence entries expired (~27 s with the default 30 s TTL). Real
``tidings serve`` processes, default settings (``TIDINGS_PRESENCE_TTL`` 30 s, ``TIDINGS_NODE_LEASE_TTL`` 6 s),
the machine's Redis under a random prefix.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import recv_json, ws_connect
from tests.test_redis_cluster import cluster_env, start_node, subscribe

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_a_killed_nodes_connections_are_released_within_10s(server_factory: Any, tmp_path: Path) -> None:
    env = cluster_env(tmp_path, TIDINGS_PRESENCE_TTL="30")  # the default TTL: the lease alone must free them
    survivor, doomed = start_node(server_factory, env), start_node(server_factory, env)
    survivor.create_user("ann")
    observer = await ws_connect(survivor.ws_url(), survivor.token("admin"))
    await recv_json(observer)
    await subscribe(observer, "room:lease")
    sockets = []
    for _ in range(5):  # the per-user limit
        ws = await ws_connect(doomed.ws_url(), doomed.token("ann"))
        assert (await recv_json(ws))["type"] == "connection_established"
        sockets.append(ws)
    await subscribe(sockets[0], "room:lease")
    refused = await ws_connect(survivor.ws_url(), survivor.token("ann"))
    with pytest.raises(websockets.ConnectionClosed):
        await recv_json(refused)
    assert (refused.close_code, refused.close_reason) == (1008, "Too many connections")

    doomed.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    accepted_after = None
    while time.monotonic() - killed_at < 12:
        ws = await ws_connect(survivor.ws_url(), survivor.token("ann"))
        try:
            hello = await recv_json(ws)
        except websockets.ConnectionClosed:
            assert (ws.close_code, ws.close_reason) == (1008, "Too many connections")
            await asyncio.sleep(0.25)
            continue
        assert hello["type"] == "connection_established"
        accepted_after = time.monotonic() - killed_at
        await ws.close()
        break
    assert accepted_after is not None and accepted_after <= 10, (
        f"still locked out 12 s after the kill: {accepted_after}"
    )

    # exactly one survivor handled the dead node's connections: ann's presence is gone, with one leave event
    leaves = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            msg = await recv_json(observer, max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        if msg.get("type") == "leave":
            leaves.append(msg)
            break
    assert [m["user"]["username"] for m in leaves] == ["ann"] and leaves[0]["channel"] == "room:lease"
    async with httpx.AsyncClient(base_url=survivor.url, headers=survivor.admin_headers()) as http:
        users = (await http.get("/api/presence/room:lease")).json()["users"]
        stats = (await http.get("/api/stats")).json()
    assert [u["username"] for u in users] == ["admin"]
    assert stats == {"users": 1, "connections": 1}
    await observer.close()
