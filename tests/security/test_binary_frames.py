"""Inbound frames: binary frames count against the rate limit, and a flood of them ends in 4002."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
import websockets

from tests.conftest import LiveServer, connected, recv_json


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    server.create_user("ann")
    return server


@pytest.mark.parametrize("kind", ["binary", "mixed"])
async def test_a_binary_flood_is_closed_with_4002(srv: LiveServer, kind: str) -> None:
    async with connected(srv, "ann") as ws:
        replies: list[dict[str, Any]] = []

        async def drain() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    replies.append(await recv_json(ws, timeout=30))

        reader = asyncio.create_task(drain())
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while time.monotonic() - started < 10 and not reader.done():
                frame: str | bytes = b"\x00\x01" if kind == "binary" or sent % 2 else '{"type": "ping"}'
                await ws.send(frame)
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)
        await asyncio.wait_for(reader, 15)
        assert ws.close_code == 4002, (ws.close_code, ws.close_reason, sent, len(replies))
        assert ws.close_reason == "Rate limit exceeded"
        codes = {reply.get("code") for reply in replies if reply["type"] == "error"}
        assert "rate_limited" in codes
        print(f"{kind}: closed with 4002 after {sent} frames sent, {len(replies)} replies")


async def test_a_single_binary_frame_still_gets_an_error_reply(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        await ws.send(b"\x00")
        reply = await recv_json(ws)
        assert reply["type"] == "error" and reply["code"] == "bad_request"
