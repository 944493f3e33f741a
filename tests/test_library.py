"""The hub as a library: a host app's own ``authenticate`` (cookie or header), string ids, namespaces with
predicates and models, lifecycle hooks for every kind of ending, status providers. A real uvicorn serves it;
real WebSocket clients talk to it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from tests.conftest import expect_close, free_port, recv_json, recv_until
from tidings import ConnInfo, Namespace, Settings, Tidings, UserInfo
from tidings.channels import InvalidPublication

USERS = {
    "cookie-ann": UserInfo(id="7f1c2a9e-ann", username="ann"),
    "cookie-bob": UserInfo(id="0b4d-bob", username="bob"),
    "cookie-boss": UserInfo(id="b055", username="boss", role="manager"),
}
API_KEYS = {"key-svc": UserInfo(id=42, username="service")}


async def authenticate(conn: HTTPConnection) -> UserInfo | None:
    """The host's login: a session cookie (browsers) or an ``X-Api-Key`` header (services)."""
    session = conn.cookies.get("session")
    if session is not None:
        return USERS.get(session)
    return API_KEYS.get(conn.headers.get("x-api-key", ""))


class OrderEvent(BaseModel):
    order_id: int
    status: Literal["placed", "shipped"]


@dataclass
class Recorder:
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.events if e[0] == kind]


@dataclass
class Host:
    url: str
    port: int
    hub: Tidings
    seen: Recorder

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/authenticated"


def build(settings: Settings, seen: Recorder) -> tuple[FastAPI, Tidings]:
    hub = Tidings(settings, authenticate=authenticate, is_admin=lambda user: user.role == "manager")

    async def may_see(user: UserInfo, order_id: str) -> bool:
        return order_id.startswith(f"{user.username}-")

    hub.namespace("orders", Namespace(subscribe=may_see, model=OrderEvent))
    hub.namespace("chat", Namespace(publish="clients", presence=True, model=OrderEvent))
    hub.namespace("quiet", Namespace(subscribe=lambda user, arg: False, argument=False))

    @hub.on_connect
    async def connected(user: UserInfo, conn: ConnInfo) -> None:
        seen.events.append(("connect", user.id, conn.id))

    @hub.on_disconnect
    async def disconnected(user: UserInfo, conn: ConnInfo, code: int) -> None:
        seen.events.append(("disconnect", user.id, conn.id, code))

    @hub.on_subscribe
    async def subscribed(user: UserInfo, conn: ConnInfo, channel: str) -> None:
        seen.events.append(("subscribe", user.id, channel))

    @hub.on_join
    async def joined(user: UserInfo, channel: str) -> None:
        seen.events.append(("join", user.id, channel))

    @hub.on_leave
    async def left(user: UserInfo, channel: str) -> None:
        seen.events.append(("leave", user.id, channel))

    @hub.status_provider
    async def open_orders(user: UserInfo) -> dict[str, Any]:
        return {"open_orders": 3, "asked_by": user.username}

    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(hub.router)

    @app.post("/orders/{order_id}")
    async def update(order_id: str, status: str) -> dict[str, Any]:
        try:
            pub = await hub.publish(f"orders:{order_id}", {"order_id": 1, "status": status})
        except ValueError as exc:
            return {"error": str(exc)}
        return {"offset": pub.offset}

    return app, hub


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    data_dir = tmp_path_factory.mktemp("host")
    settings = Settings(data_dir=data_dir, fast_transport=False, idle_timeout=300, max_connections_per_user=2)
    seen = Recorder()
    app, hub = build(settings, seen)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield Host(f"http://127.0.0.1:{port}", port, hub, seen)
    server.should_exit = True
    thread.join(30)
    assert list(data_dir.iterdir()) == []  # no database, no secret key file: nothing written


async def open_ws(host: Host, **headers: str) -> Any:
    import websockets

    return await websockets.connect(host.ws_url(), additional_headers=headers, open_timeout=10)


async def send(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_cookie_and_header_authentication_with_string_and_int_ids(host: Host) -> None:
    ws = await open_ws(host, Cookie="session=cookie-ann")
    hello = await recv_json(ws)
    assert (hello["user_id"], hello["username"]) == ("7f1c2a9e-ann", "ann")
    assert hello["channels"] == ["broadcast", "user:7f1c2a9e-ann"]
    svc = await open_ws(host, **{"X-Api-Key": "key-svc"})
    assert (await recv_json(svc))["user_id"] == 42
    await host.hub.send_to_user("7f1c2a9e-ann", {"type": "order_note", "text": "hi"})
    note = await recv_until(ws, "order_note")
    assert note["channel"] == "user:7f1c2a9e-ann"
    await send(ws, {"type": "subscribe", "subscription": "user:0b4d-bob", "id": 1})
    assert (await recv_json(ws))["type"] == "subscription_error"  # another user's channel
    for sock in (ws, svc):
        await sock.close()
    nobody = await open_ws(host)
    assert await expect_close(nobody) == (1008, "Authentication required")
    stranger = await open_ws(host, Cookie="session=forged")
    assert await expect_close(stranger) == (1008, "Authentication required")


async def test_rest_uses_the_hosts_authenticate_and_admin_predicate(host: Host) -> None:
    async with httpx.AsyncClient(base_url=host.url) as http:
        assert (await http.get("/api/me")).status_code == 401
        me = (await http.get("/api/me", headers={"Cookie": "session=cookie-ann"})).json()
        assert me == {"user_id": "7f1c2a9e-ann", "username": "ann", "role": "user"}
        body = {"message": "hello"}
        ann, boss = {"Cookie": "session=cookie-ann"}, {"Cookie": "session=cookie-boss"}
        assert (await http.post("/admin/broadcast", json=body, headers=ann)).status_code == 403
        assert (await http.post("/admin/broadcast", json=body, headers=boss)).status_code == 200
        assert (await http.post("/auth/token", data={"username": "a", "password": "b"})).status_code == 404


async def test_per_user_limit_and_presence_with_string_ids(host: Host) -> None:
    first = await open_ws(host, Cookie="session=cookie-bob")
    second = await open_ws(host, Cookie="session=cookie-bob")
    for ws in (first, second):
        await recv_json(ws)
    third = await open_ws(host, Cookie="session=cookie-bob")
    assert await expect_close(third) == (1008, "Too many connections")
    for ws in (first, second):
        await send(ws, {"type": "subscribe", "subscription": "chat:lobby"})
        await recv_until(ws, "subscription_confirmed")
    assert await host.hub.node.presence("chat:lobby") == [{"user_id": "0b4d-bob", "username": "bob"}]
    await first.close()
    await second.close()


async def test_a_namespace_predicate_denies_a_subscription(host: Host) -> None:
    ws = await open_ws(host, Cookie="session=cookie-ann")
    await recv_json(ws)
    await send(ws, {"type": "subscribe", "subscription": "orders:ann-1", "id": 1})
    assert (await recv_json(ws))["type"] == "subscription_confirmed"
    await send(ws, {"type": "subscribe", "subscription": "orders:bob-1", "id": 2})
    denied = await recv_json(ws)
    assert (denied["type"], denied["code"]) == ("subscription_error", "forbidden")
    await send(ws, {"type": "subscribe", "subscription": "quiet", "id": 3})
    assert (await recv_json(ws))["code"] == "forbidden"
    await send(ws, {"type": "subscribe", "subscription": "orders", "id": 4})  # a namespace, not a channel
    assert (await recv_json(ws))["code"] == "invalid_subscription"
    await ws.close()


async def test_model_validation_on_rest_websocket_and_python(host: Host) -> None:
    async with httpx.AsyncClient(base_url=host.url, cookies={"session": "cookie-boss"}) as http:
        resp = await http.post("/api/publish", json={"channel": "orders:x-1", "data": {"order_id": "seven"}})
        assert resp.status_code == 422
        locs = [tuple(err["loc"]) for err in resp.json()["detail"]]
        assert ("body", "data", "order_id") in locs and ("body", "data", "status") in locs
        good = {"channel": "orders:x-1", "data": {"order_id": 1, "status": "placed"}}
        ok = await http.post("/api/publish", json=good)
        assert ok.status_code == 200
        assert "status" in (await http.post("/orders/x-1", params={"status": "lost"})).json()["error"]
    with pytest.raises(ValueError, match="order_id") as info:
        await host.hub.publish("orders:x-1", {"order_id": "x", "status": "placed"})
    assert isinstance(info.value, InvalidPublication) and info.value.field == "order_id"
    ws = await open_ws(host, Cookie="session=cookie-ann")
    await recv_json(ws)
    await send(ws, {"type": "subscribe", "subscription": "chat:m"})
    await recv_until(ws, "subscription_confirmed")
    await send(ws, {"type": "publish", "channel": "chat:m", "data": {"order_id": 1, "status": "nope"}, "id": 9})
    err = await recv_until(ws, "error")
    assert err["code"] == "bad_request" and "status" in err["message"] and err["id"] == 9
    await send(ws, {"type": "publish", "channel": "chat:m", "data": {"order_id": 1, "status": "shipped"}, "id": 10})
    assert (await recv_until(ws, "publish_ack"))["id"] == 10
    await ws.close()


async def test_status_providers_add_fields(host: Host) -> None:
    ws = await open_ws(host, Cookie="session=cookie-ann")
    await recv_json(ws)
    await send(ws, {"type": "request_status"})
    status = await recv_until(ws, "status_update")
    assert (status["open_orders"], status["asked_by"]) == (3, "ann")
    assert "active_jobs" not in status  # the hub knows nothing of the crawler platform
    await ws.close()


async def test_hooks_fire_for_client_close_revocation_and_presence(host: Host) -> None:
    seen = host.seen
    seen.events.clear()
    ws = await open_ws(host, Cookie="session=cookie-ann")
    await recv_json(ws)
    await send(ws, {"type": "subscribe", "subscription": "chat:hooks"})
    await recv_until(ws, "subscription_confirmed")
    await eventually(lambda: seen.of("join"))
    assert seen.of("join") == [("7f1c2a9e-ann", "chat:hooks")]
    assert ("7f1c2a9e-ann", "chat:hooks") in seen.of("subscribe")
    (conn_id,) = [c for _, c in seen.of("connect")]
    await ws.close(1000)
    await eventually(lambda: seen.of("disconnect"))
    assert seen.of("disconnect") == [("7f1c2a9e-ann", conn_id, 1000)]
    assert seen.of("leave") == [("7f1c2a9e-ann", "chat:hooks")]

    seen.events.clear()
    ws = await open_ws(host, Cookie="session=cookie-ann")
    await recv_json(ws)
    await host.hub.disconnect_user("7f1c2a9e-ann", 4004, "Permissions changed")
    assert await expect_close(ws) == (4004, "Permissions changed")
    await eventually(lambda: seen.of("disconnect"))
    assert [code for *_, code in seen.of("disconnect")] == [4004]


async def test_hooks_fire_on_idle_timeout_and_shutdown(tmp_path: Any) -> None:
    seen = Recorder()
    settings = Settings(data_dir=tmp_path, fast_transport=False, idle_timeout=0.5)
    app, hub = build(settings, seen)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        await asyncio.sleep(0.05)
    host = Host(f"http://127.0.0.1:{port}", port, hub, seen)
    idle = await open_ws(host, Cookie="session=cookie-ann")
    await recv_json(idle)
    assert (await expect_close(idle))[0] == 4001
    await eventually(lambda: seen.of("disconnect"))
    assert [code for *_, code in seen.of("disconnect")] == [4001]
    seen.events.clear()
    busy = await open_ws(host, Cookie="session=cookie-bob")
    await recv_json(busy)
    await send(busy, {"type": "subscribe", "subscription": "chat:last"})
    await recv_until(busy, "subscription_confirmed")
    server.should_exit = True
    code = (await expect_close(busy))[0]
    assert code in (1001, 1012)  # plain uvicorn closes its WebSockets with 1012 before the lifespan ends
    await asyncio.to_thread(thread.join, 30)
    assert [code for *_, code in seen.of("disconnect")] == [code]
    assert seen.of("leave") == [("0b4d-bob", "chat:last")]
