"""REST endpoints against a real server: admin broadcasts, admin notifications, publishing, stats, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, connected, recv_json, recv_until


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    server.create_user("ann")
    server.create_user("bob")
    server.create_user("root2", role="admin")
    return server


def bearer(srv: LiveServer, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.token(username)}"}


async def post(srv: LiveServer, path: str, body: Any = None, username: str | None = "admin", **kwargs: Any) -> Any:
    headers = {**(bearer(srv, username) if username else {}), **kwargs.pop("headers", {})}
    async with httpx.AsyncClient(base_url=srv.url) as http:
        if body is not None:
            kwargs["json"] = body
        return await http.post(path, headers=headers, **kwargs)


async def get(srv: LiveServer, path: str, username: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        return await http.get(path, headers=bearer(srv, username) if username else {})


@contextlib.asynccontextmanager
async def clients(srv: LiveServer, *usernames: str) -> AsyncIterator[list[ClientConnection]]:
    """Several connections at once (one per name, names may repeat)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(connected(srv, name)) for name in usernames]


async def wait_stats(srv: LiveServer, expected: dict[str, int]) -> None:
    stats: dict[str, int] = {}
    for _ in range(200):  # disconnects are processed asynchronously by the server
        stats = (await get(srv, "/api/stats")).json()
        if stats == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"stats stayed {stats}, expected {expected}")


# ---- authorization of the admin endpoints ----------------------------------------------------------------------

ADMIN_ENDPOINTS = [
    ("/admin/broadcast", {"message": "m"}),
    ("/admin/notify-admins", {"message": "m"}),
    ("/api/publish", {"channel": "system_alerts", "data": {}}),
]


@pytest.mark.parametrize(("path", "body"), ADMIN_ENDPOINTS)
async def test_admin_endpoints_need_a_token(srv: LiveServer, path: str, body: dict[str, Any]) -> None:
    resp = await post(srv, path, body, username=None)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    resp = await post(srv, path, body, username=None, headers={"Authorization": "Bearer not-a-token"})
    assert resp.status_code == 401 and resp.json()["detail"] == "Invalid token"


@pytest.mark.parametrize(("path", "body"), ADMIN_ENDPOINTS)
async def test_admin_endpoints_refuse_users(srv: LiveServer, path: str, body: dict[str, Any]) -> None:
    resp = await post(srv, path, body, username="ann")
    assert resp.status_code == 403
    assert resp.json()["detail"] == "Administrator role required"


@pytest.mark.parametrize("path", ["/admin/broadcast", "/admin/notify-admins"])
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": ""},
        {"message": 5},
        {"message": None},
        {"message": "m", "category": ""},
        {"message": "m", "category": 3},
        {"message": "m" * 10_001},
        {"category": "general"},
        ["message"],
    ],
)
async def test_broadcast_bodies_are_validated(srv: LiveServer, path: str, body: Any) -> None:
    resp = await post(srv, path, body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


@pytest.mark.parametrize("path", ["/admin/broadcast", "/admin/notify-admins", "/api/publish"])
async def test_non_json_bodies_are_refused(srv: LiveServer, path: str) -> None:
    resp = await post(srv, path, content=b"message=hello")
    assert resp.status_code == 422


# ---- broadcasts and admin notifications -----------------------------------------------------------------------


async def test_broadcast_reaches_every_connection(srv: LiveServer) -> None:
    async with clients(srv, "ann", "ann", "bob", "bob", "admin", "root2") as conns:
        before = time.time()
        resp = await post(srv, "/admin/broadcast", {"message": "maintenance at noon"})
        assert resp.status_code == 200 and resp.json() == {"message": "Broadcast sent successfully"}
        received = [await recv_json(ws) for ws in conns]
        for msg in received:
            assert msg.keys() == {
                "type",
                "category",
                "message",
                "start_time",
                "timestamp",
                "channel",
                "offset",
                "epoch",
            }
            assert msg["type"] == "system_notification"
            assert (msg["category"], msg["message"], msg["channel"]) == ("general", "maintenance at noon", "broadcast")
            assert msg["timestamp"] >= before - 1
            assert time.strptime(msg["start_time"], "%Y-%m-%dT%H:%M:%SZ")
        assert len({(m["offset"], m["epoch"]) for m in received}) == 1  # one publication, seen by all
        resp = await post(
            srv, "/admin/broadcast", {"message": "m2", "category": "maintenance", "start_time": "2026-12-01T12:00Z"}
        )
        assert resp.status_code == 200
        for ws in conns:
            msg = await recv_json(ws)
            assert (msg["category"], msg["message"], msg["start_time"]) == ("maintenance", "m2", "2026-12-01T12:00Z")
            assert msg["offset"] == received[0]["offset"] + 1


async def test_notify_admins_reaches_admins_only(srv: LiveServer) -> None:
    async with clients(srv, "admin", "root2", "admin", "ann", "bob") as conns:
        admins, users = conns[:3], conns[3:]
        resp = await post(srv, "/admin/notify-admins", {"message": "disk almost full", "category": "ops"})
        assert resp.status_code == 200 and resp.json() == {"message": "Notification sent successfully"}
        for ws in admins:
            msg = await recv_json(ws)
            assert msg["type"] == "admin_notification"
            assert (msg["message"], msg["category"], msg["channel"]) == ("disk almost full", "ops", "admins")
            assert {"timestamp", "offset", "epoch"} <= msg.keys()
        resp = await post(srv, "/admin/broadcast", {"message": "marker"})
        assert resp.status_code == 200
        for ws in conns:  # users' next message is the marker: the admin notification never reached them
            msg = await recv_json(ws)
            assert (msg["type"], msg["message"]) == ("system_notification", "marker")
        assert users


async def test_notify_admins_default_category(srv: LiveServer) -> None:
    async with connected(srv, "admin") as ws:
        assert (await post(srv, "/admin/notify-admins", {"message": "hello admins"})).status_code == 200
        msg = await recv_until(ws, "admin_notification")
        assert msg["category"] == "general"


# ---- publishing ------------------------------------------------------------------------------------------------


async def test_publish_reaches_subscribers_only(srv: LiveServer) -> None:
    async with clients(srv, "ann", "bob", "admin") as (sub1, sub2, outsider):
        for ws in (sub1, sub2):
            await ws.send('{"type": "subscribe", "subscription": "property:7"}')
            assert (await recv_json(ws))["type"] == "subscription_confirmed"
        data = {"price": 350_000, "nested": {"list": [1, "two", None]}, "text": "café"}
        resp = await post(srv, "/api/publish", {"channel": "property:7", "data": data})
        assert resp.status_code == 200, resp.text
        result = resp.json()
        assert result.keys() == {"channel", "offset", "epoch", "duplicate"} and result["channel"] == "property:7"
        assert result["duplicate"] is False
        for ws in (sub1, sub2):
            msg = await recv_until(ws, "publication")
            assert isinstance(msg.pop("timestamp"), float)  # the server's time of publication
            assert msg == {
                "type": "publication",
                "channel": "property:7",
                "data": data,
                "offset": result["offset"],
                "epoch": result["epoch"],
            }
        second = (await post(srv, "/api/publish", {"channel": "property:7", "data": None})).json()
        assert second["offset"] == result["offset"] + 1 and second["epoch"] == result["epoch"]
        assert (await post(srv, "/admin/broadcast", {"message": "marker"})).status_code == 200
        msg = await recv_json(outsider)  # the marker: no publication reached the non-subscriber
        assert (msg["type"], msg["message"]) == ("system_notification", "marker")


@pytest.mark.parametrize("channel", ["nope", "bad channel!", "room", "room:", "x" * 129, "", "property_updates:1"])
async def test_publish_to_an_invalid_channel(srv: LiveServer, channel: str) -> None:
    resp = await post(srv, "/api/publish", {"channel": channel, "data": {}})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail
    if isinstance(detail, str):
        assert detail == f"Invalid channel: {channel}"


@pytest.mark.parametrize("body", [{"channel": "system_alerts"}, {"data": {}}, {"channel": 5, "data": {}}, []])
async def test_publish_body_is_validated(srv: LiveServer, body: Any) -> None:
    assert (await post(srv, "/api/publish", body)).status_code == 422


# ---- stats, presence, health, metrics ----------------------------------------------------------------------------


async def test_stats_count_real_users_and_connections(srv: LiveServer) -> None:
    await wait_stats(srv, {"users": 0, "connections": 0})
    async with connected(srv, "ann"):
        async with connected(srv, "bob"):
            async with connected(srv, "ann"):
                assert (await get(srv, "/api/stats")).json() == {"users": 2, "connections": 3}
            await wait_stats(srv, {"users": 2, "connections": 2})
        await wait_stats(srv, {"users": 1, "connections": 1})
    await wait_stats(srv, {"users": 0, "connections": 0})


async def test_presence_endpoint(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        await ws.send('{"type": "subscribe", "subscription": "room:rest"}')
        await recv_until(ws, "subscription_confirmed")
        resp = await get(srv, "/api/presence/room:rest", "admin")
        assert resp.status_code == 200
        body = resp.json()
        assert body["channel"] == "room:rest" and [u["username"] for u in body["users"]] == ["ann"]
    assert (await get(srv, "/api/presence/room:rest", "ann")).status_code == 403
    assert (await get(srv, "/api/presence/nope", "admin")).status_code == 404


async def test_me(srv: LiveServer) -> None:
    resp = await get(srv, "/api/me", "root2")
    assert resp.status_code == 200
    assert resp.json()["username"] == "root2" and resp.json()["role"] == "admin"
    assert (await get(srv, "/api/me")).status_code == 401


async def test_healthz(srv: LiveServer) -> None:
    resp = await get(srv, "/healthz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["broker"]["healthy"] is True and body["broker"]["kind"] == "memory"
    assert isinstance(body["connections"], int)


def metric_values(text: str) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


async def test_metrics(srv: LiveServer) -> None:
    await wait_stats(srv, {"users": 0, "connections": 0})
    async with clients(srv, "ann", "bob", "bob") as conns:
        assert (await post(srv, "/admin/broadcast", {"message": "counted"})).status_code == 200
        for ws in conns:
            await recv_until(ws, "system_notification")
        resp = await get(srv, "/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        values = metric_values(resp.text)
        assert values["tidings_connections"] == 3
        assert values["tidings_users"] == 2
        assert values["tidings_publications_total"] >= 1
        assert values["tidings_deliveries_total"] >= 3
        assert values["tidings_broker_up"] == 1
        for name in ("tidings_slow_consumer_disconnects_total", "tidings_messages_received_total"):
            assert name in values
        assert "# TYPE tidings_connections gauge" in resp.text
