"""Scale-out: several ``tidings serve`` processes sharing one Redis (the machine's, under a random key prefix).

Every test runs three times (``broker_url``): on the machine's Redis, on a private 3-master Redis Cluster
(``redis+cluster://``) and behind a private Sentinel set-up (``redis+sentinel://``).

Publications made on one node, or by a worker's :mod:`tidings.publisher`, reach clients on every node; presence,
connection limits and stats are cluster-wide; a killed node's users drop out of presence on their own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, connected, expect_close, recv_json, recv_until, ws_connect
from tidings.publisher import Publisher, SyncPublisher
from tidings.settings import Settings

pytestmark = [pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"


def cluster_env(base: Path, redis_url: str = REDIS_URL, **extra: str) -> dict[str, str]:
    """Environment shared by the nodes of one cluster: broker, prefix, secret key and database."""
    return {
        "TIDINGS_BROKER_URL": redis_url,
        "TIDINGS_BROKER_PREFIX": f"test-{secrets.token_hex(6)}",
        "TIDINGS_SECRET_KEY": secrets.token_urlsafe(32),
        "TIDINGS_DATABASE_URL": f"sqlite+aiosqlite:///{(base / 'shared.db').resolve()}",
        "TIDINGS_PRESENCE_TTL": "3",
        **extra,
    }


def start_node(factory: Any, env: dict[str, str]) -> LiveServer:
    """One node of the cluster (its tokens signed with the shared key)."""
    srv: LiveServer = factory(env=env, start=False)
    srv.secret = env["TIDINGS_SECRET_KEY"]
    return srv.start()


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def subscribe(ws: ClientConnection, channel: str, **extra: Any) -> dict[str, Any]:
    """Subscribe and return the confirmation (publications arriving first are skipped)."""
    await send(ws, {"type": "subscribe", "subscription": channel, **extra})
    reply = await recv_until(ws, "subscription_confirmed")
    assert reply["subscription"] == channel, reply
    return reply


async def recv_presence_event(ws: ClientConnection, kind: str, username: str) -> dict[str, Any]:
    """The next ``join``/``leave`` of ``username`` (a client also sees its own join)."""
    while True:
        event = await recv_until(ws, kind)
        if event["user"]["username"] == username:
            return event


async def eventually(check: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` (sync or async) until it returns a truthy value; fail with its last value after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or asyncio.get_running_loop().time() > deadline:
            assert value, f"condition not met in {timeout}s: {value!r}"
            return value
        await asyncio.sleep(interval)


# ---- the shared two-node cluster ---------------------------------------------------------------------------


class Cluster:
    """Two nodes, A and B, with users ann, bob, carl (carl has a two-connection limit's worth of tests)."""

    def __init__(self, factory: Any, base: Path, url: str = REDIS_URL) -> None:
        self.env = cluster_env(base, url, TIDINGS_MAX_CONNECTIONS_PER_USER="2")
        self.a = start_node(factory, self.env)
        self.b = start_node(factory, self.env)
        self.ids = {name: self.a.create_user(name) for name in ("ann", "bob", "carl")}
        self.factory = factory

    @property
    def settings(self) -> Settings:
        """Settings a worker process would read from the same environment."""
        return Settings(broker_url=self.env["TIDINGS_BROKER_URL"], broker_prefix=self.env["TIDINGS_BROKER_PREFIX"])


@pytest.fixture(scope="module")
def cluster(module_server_factory: Any, tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Cluster]:
    nodes = Cluster(module_server_factory, tmp_path_factory.mktemp("cluster"), broker_url)
    yield nodes
    nodes.a.stop()  # before the next deployment's nodes start
    nodes.b.stop()


async def test_rest_publish_and_broadcast_on_b_reach_a_client_on_a(cluster: Cluster) -> None:
    async with connected(cluster.a, "ann") as ws:
        await subscribe(ws, "room:lobby")
        async with httpx.AsyncClient(base_url=cluster.b.url, headers=cluster.b.admin_headers()) as http:
            resp = await http.post("/api/publish", json={"channel": "room:lobby", "data": {"n": 1}})
            assert resp.status_code == 200, resp.text
            published = resp.json()
            msg = await recv_until(ws, "publication")
            assert isinstance(msg.pop("timestamp"), float)  # the server's time of publication
            assert msg == {
                "type": "publication",
                "channel": "room:lobby",
                "data": {"n": 1},
                "offset": published["offset"],
                "epoch": published["epoch"],
            }
            resp = await http.post("/admin/broadcast", json={"message": "from B", "category": "ops"})
            assert resp.status_code == 200, resp.text
        note = await recv_until(ws, "system_notification")
        assert (note["message"], note["category"], note["channel"]) == ("from B", "ops", "broadcast")


async def test_admin_notification_on_a_reaches_an_admin_on_b(cluster: Cluster) -> None:
    async with connected(cluster.b, "admin") as ws:
        async with httpx.AsyncClient(base_url=cluster.a.url, headers=cluster.a.admin_headers()) as http:
            resp = await http.post("/admin/notify-admins", json={"message": "disk full", "category": "alert"})
        assert resp.status_code == 200, resp.text
        note = await recv_until(ws, "admin_notification")
        assert (note["message"], note["channel"]) == ("disk full", "admins")


async def recv_each(ws: ClientConnection, *types: str, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The first message of each of ``types``, in whatever order they arrive (other messages are skipped)."""
    deadline = time.monotonic() + timeout
    got: dict[str, dict[str, Any]] = {}
    while len(got) < len(types):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {sorted(got)} of {list(types)} within {timeout} s")
        msg = await recv_json(ws, left)
        if msg.get("type") in types and msg["type"] not in got:
            got[msg["type"]] = msg
    return got


async def test_worker_publishers_reach_clients_on_both_nodes(cluster: Cluster) -> None:
    ann = cluster.ids["ann"]
    async with connected(cluster.a, "ann") as on_a, connected(cluster.b, "admin") as on_b:
        await subscribe(on_a, "room:workers")
        await subscribe(on_b, "job_updates")
        sync = SyncPublisher.from_settings(cluster.settings)
        try:
            results = await asyncio.to_thread(
                sync.publish_event,
                [f"user:{ann}", "job_updates"],
                {"type": "job_update", "event": "job_started", "job_id": 5, "status": "running"},
            )
            assert [r["channel"] for r in results] == [f"user:{ann}", "job_updates"]
            await asyncio.to_thread(sync.publish, "room:workers", {"from": "sync"})
        finally:
            sync.close()
        got_a = await recv_each(on_a, "job_update", "publication")  # user:<ann> and room:workers: two shards
        event = got_a["job_update"]
        assert (event["channel"], event["job_id"], event["event"]) == (f"user:{ann}", 5, "job_started")
        assert {"timestamp", "offset", "epoch"} <= event.keys()
        event = await recv_until(on_b, "job_update")
        assert (event["channel"], event["job_id"]) == ("job_updates", 5)
        assert got_a["publication"]["data"] == {"from": "sync"}

        async with Publisher.from_settings(cluster.settings) as publisher:
            first = await publisher.publish("room:workers", {"from": "async"})
            await publisher.broadcast("workers say hi", "info")
            await publisher.send_to_user(ann, {"type": "direct", "text": "hello ann"})
            await publisher.notify_admins("worker alert")
        # four channels, possibly on four shards: each channel's events are in order, different channels' are not
        got_a = await recv_each(on_a, "publication", "system_notification", "direct")
        pub = got_a["publication"]
        assert (pub["data"], pub["offset"], pub["epoch"]) == ({"from": "async"}, first["offset"], first["epoch"])
        got_b = await recv_each(on_b, "system_notification", "admin_notification")
        for note in (got_a["system_notification"], got_b["system_notification"]):
            assert note["message"] == "workers say hi"
        direct = got_a["direct"]
        assert direct == {**direct, "text": "hello ann", "channel": f"user:{ann}"}
        assert got_b["admin_notification"]["message"] == "worker alert"


async def test_offsets_are_shared_by_nodes_and_workers(cluster: Cluster) -> None:
    offsets = []
    async with httpx.AsyncClient(headers=cluster.a.admin_headers()) as http:
        for node in (cluster.a, cluster.b, cluster.a):
            resp = await http.post(f"{node.url}/api/publish", json={"channel": "room:seq", "data": 1})
            offsets.append(resp.json()["offset"])
    async with Publisher.from_settings(cluster.settings) as publisher:
        offsets.append((await publisher.publish("room:seq", 2))["offset"])
    assert offsets == [1, 2, 3, 4]


async def test_presence_and_join_leave_across_nodes(cluster: Cluster) -> None:
    async with connected(cluster.a, "ann") as on_a:
        await subscribe(on_a, "room:presence")
        async with connected(cluster.b, "bob") as on_b:
            await subscribe(on_b, "room:presence")
            join = await recv_presence_event(on_a, "join", "bob")
            assert join["channel"] == "room:presence"
            await send(on_a, {"type": "presence", "subscription": "room:presence"})
            users = (await recv_until(on_a, "presence"))["users"]
            assert sorted(u["username"] for u in users) == ["ann", "bob"]
        leave = await recv_presence_event(on_a, "leave", "bob")
        assert leave["channel"] == "room:presence"
        await send(on_a, {"type": "presence", "subscription": "room:presence"})
        users = (await recv_until(on_a, "presence"))["users"]
        assert [u["username"] for u in users] == ["ann"]


async def test_a_killed_nodes_users_leave_presence_after_the_ttl(cluster: Cluster) -> None:
    node_c = start_node(cluster.factory, cluster.env)
    async with connected(cluster.a, "ann") as on_a:
        await subscribe(on_a, "room:kill")
        on_c = await ws_connect(node_c.ws_url(), node_c.token("bob"))
        await recv_json(on_c)
        await subscribe(on_c, "room:kill")
        await recv_presence_event(on_a, "join", "bob")

        async def names() -> list[str]:
            async with httpx.AsyncClient(base_url=cluster.b.url, headers=cluster.b.admin_headers()) as http:
                resp = await http.get("/api/presence/room:kill")
            return sorted(u["username"] for u in resp.json()["users"])

        assert await names() == ["ann", "bob"]
        node_c.stop(signal.SIGKILL)
        await eventually(lambda: _equals(names(), ["ann"]))
        stats = await eventually(lambda: _stats_without_node_c(cluster))
        assert stats["connections"] >= 1


async def test_a_stopped_node_removes_its_entries_at_once(cluster: Cluster) -> None:
    node_c = start_node(cluster.factory, cluster.env)
    async with connected(cluster.a, "ann") as on_a, connected(node_c, "bob") as on_c:
        await subscribe(on_a, "room:stop")
        await subscribe(on_c, "room:stop")
        await recv_presence_event(on_a, "join", "bob")
        await eventually(lambda: _equals(_presence_names(cluster.a, "room:stop"), ["ann", "bob"]))
        node_c.stop(signal.SIGTERM)  # returns once the process has exited
        assert await expect_close(on_c) == (1001, "Server shutting down")
        assert await _presence_names(cluster.a, "room:stop") == ["ann"]
        leave = await recv_presence_event(on_a, "leave", "bob")
        assert leave["channel"] == "room:stop"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{cluster.a.url}/api/stats")).json() == {"users": 1, "connections": 1}


async def _presence_names(node: LiveServer, channel: str) -> list[str]:
    async with httpx.AsyncClient(base_url=node.url, headers=node.admin_headers()) as http:
        resp = await http.get(f"/api/presence/{channel}")
    return sorted(u["username"] for u in resp.json()["users"])


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _stats_without_node_c(cluster: Cluster) -> dict[str, int] | None:
    """Stats once the killed node's connection (bob's) is no longer counted: only ann's remains."""
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{cluster.a.url}/api/stats")).json()
    return stats if stats == {"users": 1, "connections": 1} else None


async def test_connection_limit_and_stats_hold_across_nodes(cluster: Cluster) -> None:
    async def stats(node: LiveServer) -> dict[str, int]:
        async with httpx.AsyncClient() as http:
            return dict((await http.get(f"{node.url}/api/stats")).json())

    await eventually(lambda: _same_stats(cluster, {"users": 0, "connections": 0}))
    async with connected(cluster.a, "carl") as first, connected(cluster.b, "carl"):
        third = await ws_connect(cluster.a.ws_url(), cluster.a.token("carl"))
        assert await expect_close(third) == (1008, "Too many connections")
        fourth = await ws_connect(cluster.b.ws_url(), cluster.b.token("carl"))
        assert await expect_close(fourth) == (1008, "Too many connections")
        async with connected(cluster.b, "ann"):
            assert await stats(cluster.a) == await stats(cluster.b) == {"users": 2, "connections": 3}
            await send(first, {"type": "request_status"})
            status = await recv_until(first, "status_update")
            assert (status["users"], status["user_connections"], status["my_connections"]) == (2, 3, 1)
    await eventually(lambda: _same_stats(cluster, {"users": 0, "connections": 0}))
    async with connected(cluster.b, "carl"), connected(cluster.b, "carl"):
        assert await stats(cluster.a) == {"users": 1, "connections": 2}


async def _same_stats(cluster: Cluster, expected: dict[str, int]) -> bool:
    async with httpx.AsyncClient() as http:
        got = [(await http.get(f"{node.url}/api/stats")).json() for node in (cluster.a, cluster.b)]
    return got == [expected, expected]


async def test_healthz_and_metrics_describe_the_redis_broker(cluster: Cluster) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{cluster.a.url}/healthz")
        assert resp.status_code == 200, resp.text
        broker = resp.json()["broker"]
        assert broker["kind"] == "redis" and broker["healthy"] is True
        assert (
            broker["mode"]
            == {"redis": "redis", "redis+cluster": "cluster", "redis+sentinel": "sentinel"}[
                cluster.env["TIDINGS_BROKER_URL"].split("://")[0]
            ]
        )
        assert broker["prefix"] == cluster.env["TIDINGS_BROKER_PREFIX"]
        metrics = (await http.get(f"{cluster.a.url}/metrics")).text
    assert "tidings_broker_up 1.0" in metrics
    assert "tidings_broker_reconnects_total 0.0" in metrics


async def test_big_room_presence_pages_and_no_join_events_above_the_size(server_factory: Any, tmp_path: Path) -> None:
    env = cluster_env(tmp_path, TIDINGS_PRESENCE_EVENTS_MAX_MEMBERS="2")
    node = start_node(server_factory, env)
    names = ["ann", "bob", "carl"]
    ids = sorted(node.create_user(name) for name in names)
    async with connected(node, "ann") as ann, connected(node, "bob") as bob, connected(node, "carl") as carl:
        await subscribe(ann, "room:big")
        await subscribe(bob, "room:big")
        assert (await recv_presence_event(ann, "join", "bob"))["channel"] == "room:big"  # 2 members: events
        await subscribe(carl, "room:big")  # 3 members: above the setting, no join event
        await eventually(lambda: _equals(_presence_names(node, "room:big"), names))
        await send(ann, {"type": "presence", "subscription": "room:big", "limit": 2, "id": 1})
        page = await recv_until(ann, "presence")  # a join of carl would have come first
        assert (page["count"], [u["user_id"] for u in page["users"]], page["cursor"]) == (3, ids[:2], ids[1])
        await send(ann, {"type": "presence", "subscription": "room:big", "limit": 2, "cursor": page["cursor"]})
        page = await recv_until(ann, "presence")
        assert (page["count"], [u["user_id"] for u in page["users"]], page["cursor"]) == (3, ids[2:], None)
        await send(ann, {"type": "presence", "subscription": "room:big", "limit": 0})
        assert (await recv_until(ann, "error"))["code"] == "bad_request"
        async with httpx.AsyncClient(base_url=node.url, headers=node.admin_headers()) as http:
            body = (await http.get("/api/presence/room:big", params={"limit": 1, "cursor": ids[0]})).json()
            assert (body["count"], [u["user_id"] for u in body["users"]], body["cursor"]) == (3, [ids[1]], ids[1])
            assert (await http.get("/api/presence/room:big", params={"limit": 5000})).status_code == 422
