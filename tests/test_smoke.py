"""A first end-to-end check: a real server, a real client, a broadcast."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer, connected, recv_until


async def test_admin_broadcast_reaches_a_client(server: LiveServer) -> None:
    async with connected(server, "ann") as ws:
        async with httpx.AsyncClient(base_url=server.url) as http:
            resp = await http.post(
                "/admin/broadcast", json={"message": "maintenance at noon"}, headers=server.admin_headers()
            )
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"message": "Broadcast sent successfully"}
        msg = await recv_until(ws, "system_notification")
        assert msg["message"] == "maintenance at noon"
        assert msg["category"] == "general"
        assert {"start_time", "timestamp", "offset", "epoch"} <= msg.keys()
