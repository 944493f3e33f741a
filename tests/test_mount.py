"""The hub mounted into someone else's FastAPI app, served by a plain uvicorn (the portable ASGI transport)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.conftest import _run_in_thread, expect_close, free_port, recv_json, recv_until, ws_connect
from tests.test_fanout_isolation import StalledClient
from tidings import Namespace, Settings, Tidings
from tidings.auth import create_access_token
from tidings.db import Database

SECRET = "mount-secret-" + "k" * 32


def build_app(settings: Settings) -> tuple[FastAPI, Tidings]:
    """An application of its own that mounts the hub in three lines and publishes from its own routes."""
    hub = Tidings(settings)
    hub.namespace("room", Namespace(publish="clients", presence=True))
    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(hub.router)

    @app.post("/orders/{order_id}/ship")
    async def ship(order_id: int) -> dict[str, Any]:
        pub = await hub.node.publish("room:orders", {"order": order_id, "status": "shipped"})
        return {"order": order_id, "offset": pub.offset}

    @app.post("/blast")
    async def blast(count: int, size: int) -> dict[str, int]:
        for n in range(count):
            await hub.node.publish("room:blast", {"n": n, "pad": "b" * size})
            await asyncio.sleep(0)  # let the connections' writers run between publications
        return {"published": count}

    return app, hub


@dataclass
class Mounted:
    url: str
    port: int
    hub: Tidings
    ids: dict[str, int]

    def token(self, username: str) -> str:
        return create_access_token(username, SECRET, 600)

    def ws_url(self, path: str = "/ws/authenticated") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module", params=["websockets-sansio", "wsproto"])
def mounted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    data_dir: Path = tmp_path_factory.mktemp("mounted")
    settings = Settings(data_dir=data_dir, secret_key=SECRET, send_queue_max=16, fast_transport=False)
    app, hub = build_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, ws=request.param, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)

    async def create_users() -> dict[str, int]:
        db = Database(settings.resolved_database_url)
        try:
            return {name: (await db.create_user(name, "pw")).id for name in ("ann", "bob", "stall")}
        finally:
            await db.dispose()

    ids: dict[str, int] = _run_in_thread(create_users)
    yield Mounted(f"http://127.0.0.1:{port}", port, hub, ids)
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive()


async def test_subscribe_and_receive_a_publication_from_the_apps_own_route(mounted: Mounted) -> None:
    ws = await ws_connect(mounted.ws_url(), mounted.token("ann"))
    try:
        assert ws.subprotocol == "bearer"
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established" and hello["user_id"] == mounted.ids["ann"]
        await ws.send(json.dumps({"type": "subscribe", "subscription": "room:orders", "id": 1}))
        confirmed = await recv_until(ws, "subscription_confirmed")
        async with httpx.AsyncClient(base_url=mounted.url) as http:
            resp = await http.post("/orders/7/ship")
        assert resp.status_code == 200
        msg = await recv_until(ws, "publication")
        assert isinstance(msg.pop("timestamp"), float)  # the server's time of publication
        assert msg == {
            "type": "publication",
            "channel": "room:orders",
            "data": {"order": 7, "status": "shipped"},
            "offset": resp.json()["offset"],
            "epoch": confirmed["epoch"],
        }
    finally:
        await ws.close()


async def test_mounted_routes_work_alongside_the_apps(mounted: Mounted) -> None:
    async with httpx.AsyncClient(base_url=mounted.url) as http:
        assert (await http.get("/healthz")).json()["status"] == "ok"
        resp = await http.post("/auth/token", data={"username": "bob", "password": "pw"})
        assert resp.status_code == 200
        token = resp.json()["access_token"]
        assert (await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()["username"] == "bob"
        assert "tidings_connections" in (await http.get("/metrics")).text
    ws = await ws_connect(mounted.ws_url(f"/ws/{mounted.ids['ann']}"), token)
    try:
        assert await expect_close(ws) == (1008, "User id mismatch")
    finally:
        await ws.close()


async def test_a_stalled_client_is_forgotten_on_the_asgi_transport(mounted: Mounted) -> None:
    """Without a raw socket to abort, a slow consumer's ASGI app returns: the hub forgets it, readers go on."""
    node = mounted.hub.node
    stalled = StalledClient(mounted.port, mounted.token("stall"))
    reader = await ws_connect(mounted.ws_url(), mounted.token("ann"))
    try:
        await asyncio.to_thread(stalled.open)
        stalled.send({"type": "subscribe", "subscription": "room:blast"})
        await asyncio.to_thread(
            stalled.read_until, lambda: any(m.get("type") == "subscription_confirmed" for m in stalled.messages)
        )
        assert (await recv_json(reader))["type"] == "connection_established"
        await reader.send(json.dumps({"type": "subscribe", "subscription": "room:blast"}))
        await recv_until(reader, "subscription_confirmed")
        slow_before = node.hub.slow_consumers
        count, size = 400, 32_000  # ~13 MB: more than the stalled socket's kernel buffers hold
        async with httpx.AsyncClient(base_url=mounted.url, timeout=60) as http:
            blasting = asyncio.create_task(http.post("/blast", params={"count": count, "size": size}))
            seen: list[int] = []
            while len(seen) < count:
                msg = json.loads(await asyncio.wait_for(reader.recv(), 30))
                if msg["type"] == "publication":
                    seen.append(msg["data"]["n"])
            assert (await blasting).status_code == 200
        assert seen == list(range(count))
        assert node.hub.slow_consumers == slow_before + 1
        for _ in range(200):  # the stalled connection's app returns and the hub forgets it
            if mounted.ids["stall"] not in node.hub.by_user:
                break
            await asyncio.sleep(0.05)
        assert mounted.ids["stall"] not in node.hub.by_user
        assert await node.presence("room:blast") == [{"user_id": mounted.ids["ann"], "username": "ann"}]
        await asyncio.to_thread(stalled.drain)
        got = [m["data"]["n"] for m in stalled.messages if m["type"] == "publication"]
        assert got == list(range(len(got))) and len(got) < count
    finally:
        stalled.close()
        await reader.close()
