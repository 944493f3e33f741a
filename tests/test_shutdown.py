"""Stopping a server: every client is closed with 1001 (going away: reconnect elsewhere and recover)."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from tests.conftest import LiveServer, expect_close, recv_json, recv_until, ws_connect


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_closes_clients_with_1001(server_factory: Any, sig: signal.Signals) -> None:
    srv: LiveServer = server_factory()
    srv.create_user("ann")
    srv.create_user("bob")
    users = ["ann", "ann", "bob", "admin"]
    conns = [await ws_connect(srv.ws_url(), srv.token(name)) for name in users]
    try:
        for ws in conns:
            assert (await recv_json(ws))["type"] == "connection_established"
        await conns[0].send(json.dumps({"type": "subscribe", "subscription": "room:a", "id": 1}))
        await recv_until(conns[0], "subscription_confirmed")
        assert srv.proc is not None
        stopped = asyncio.create_task(asyncio.to_thread(srv.stop, sig))
        closes = await asyncio.gather(*(expect_close(ws, timeout=30) for ws in conns))
        assert closes == [(1001, "Server shutting down")] * len(conns)
        # uvicorn re-raises SIGTERM once it has shut down gracefully (the conventional exit for process managers)
        assert await stopped in ((0, -signal.SIGTERM) if sig == signal.SIGTERM else (0,))
    finally:
        for ws in conns:
            await ws.close()
    log = srv.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log, log
