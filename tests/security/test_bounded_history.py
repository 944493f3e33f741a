"""Issue 9, item 1: one user cannot exhaust a node's memory through chat rooms (memory broker).

History is bounded in bytes per channel and per node (least recently used channel first, with a new epoch so
recovering clients hear ``recovered: false``); who may create rooms, how many exist, how fast one user may create
them and how many bytes per second one user may publish are settings. Real ``tidings serve`` processes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, connected, recv_json, ws_connect

BIG = "x" * 60_000  # a 60 KB chat message, under the 64 KiB inbound frame limit


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def broker_info(server: LiveServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/healthz", timeout=10).json()
    return body["broker"]  # type: ignore[no-any-return]


async def request(
    ws: ClientConnection, msg: dict[str, Any], timeout: float = 10.0, skipped: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Send ``msg`` with a fresh id and return the reply carrying that id (other messages go to ``skipped``)."""
    msg_id = next(_ids)
    await ws.send(json.dumps({**msg, "id": msg_id}))
    deadline = time.monotonic() + timeout
    while True:
        reply = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if reply.get("id") == msg_id:
            return reply
        if skipped is not None:
            skipped.append(reply)


_ids = itertools.count(1)


def admin_publish(server: LiveServer, channel: str, data: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/api/publish", json={"channel": channel, "data": data}, headers=server.admin_headers(), timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.slow
async def test_flooding_new_rooms_is_bounded_by_the_users_byte_rate(server_factory: Any) -> None:
    """5 sockets of one user publishing 60 KB into ever-new rooms: most are refused, RSS stays put."""
    server = server_factory()
    server.create_user("mallory")
    assert server.proc is not None
    before = rss_bytes(server.proc.pid)
    acked = refused = 0
    sockets = [await ws_connect(server.ws_url(), server.token("mallory")) for _ in range(5)]
    try:
        for ws in sockets:
            assert (await recv_json(ws))["type"] == "connection_established"
        counter = itertools.count()

        async def flood(ws: ClientConnection) -> None:
            nonlocal acked, refused
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                reply = await request(ws, {"type": "publish", "channel": f"room:flood-{next(counter)}", "data": BIG})
                if reply["type"] == "publish_ack":
                    acked += 1
                else:
                    assert reply["type"] == "error" and reply["code"] == "rate_limited", reply
                    refused += 1

        await asyncio.gather(*(flood(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    grown = rss_bytes(server.proc.pid) - before
    info = broker_info(server)
    # Defaults: 30 new rooms a minute and 128 KiB/s after a 1 MiB burst for one user.
    assert acked <= 40, (acked, refused)
    assert refused > acked
    assert info["history_bytes"] <= 4 << 20, info
    assert grown < 64 << 20, grown


def test_history_is_bounded_in_bytes_per_channel(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_HISTORY_MAX_BYTES": str(100_000)})
    # a channel whose history lives in the broker only (chat rooms are also stored in the platform database)
    for n in range(5):
        admin_publish(server, "property_updates", {"n": n, "text": "y" * 40_000})
    server.create_user("ann")
    auth = {"Authorization": f"Bearer {server.token('ann')}"}
    response = httpx.get(f"{server.url}/api/history/property_updates", headers=auth, timeout=10)
    body = response.json()
    kept = [m["data"]["n"] for m in body["messages"]]
    assert kept == [3, 4], body["offset"]
    assert broker_info(server)["history_bytes"] <= 100_000


async def test_node_budget_evicts_the_least_recently_used_channel_with_a_new_epoch(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_HISTORY_BUDGET_BYTES": str(300_000)})
    server.create_user("ann")
    first = admin_publish(server, "room:old", {"text": "a" * 50_000})
    admin_publish(server, "room:recent", {"text": "warm-up"})
    for n in range(8):  # 8 x 50 KB into other channels: more than the 300 KB budget
        admin_publish(server, f"room:filler-{n}", {"text": "b" * 50_000})
    recent = admin_publish(server, "room:recent", {"text": "still here"})
    assert broker_info(server)["history_bytes"] <= 300_000
    async with connected(server, "ann") as ws:
        since = {"offset": first["offset"] - 1, "epoch": first["epoch"]}
        old = await request(ws, {"type": "subscribe", "channel": "room:old", "since": since})
        assert old["type"] == "subscription_confirmed" and old["recovered"] is False, old
        assert old["epoch"] != first["epoch"]
        since = {"offset": recent["offset"] - 1, "epoch": recent["epoch"]}
        recovered: list[dict[str, Any]] = []
        kept = await request(ws, {"type": "subscribe", "channel": "room:recent", "since": since}, skipped=recovered)
        assert kept["recovered"] is True, kept
        pubs = [(m["channel"], m["data"]) for m in recovered if m["type"] == "publication"]
        assert pubs == [("room:recent", {"text": "still here"})], recovered


def test_channel_state_of_unused_channels_does_not_accumulate(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_MAX_CHANNELS": "50"})
    for n in range(200):
        admin_publish(server, f"property:{n}", {"n": n})
    assert broker_info(server)["channels"] <= 50


async def test_only_admins_create_rooms_when_configured(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_ROOM_CREATORS": "admin"})
    server.create_user("ann")
    async with connected(server, "ann") as ann:
        refused = await request(ann, {"type": "subscribe", "channel": "room:new"})
        assert refused["type"] == "subscription_error" and refused["code"] == "forbidden", refused
        error = await request(ann, {"type": "publish", "channel": "room:new2", "data": "hi"})
        assert error["type"] == "error" and error["code"] == "forbidden", error
        async with connected(server, "admin") as admin:
            made = await request(admin, {"type": "subscribe", "channel": "room:new"})
            assert made["type"] == "subscription_confirmed", made
            joined = await request(ann, {"type": "subscribe", "channel": "room:new"})
            assert joined["type"] == "subscription_confirmed", joined


async def test_room_count_is_capped_and_idle_rooms_are_forgotten(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_MAX_ROOMS": "3"})
    server.create_user("ann")
    async with connected(server, "ann") as ann:
        for name in ("a", "b", "c"):
            reply = await request(ann, {"type": "subscribe", "channel": f"room:{name}"})
            assert reply["type"] == "subscription_confirmed", reply
        ack = await request(ann, {"type": "publish", "channel": "room:a", "data": "kept?"})
        full = await request(ann, {"type": "subscribe", "channel": "room:d"})
        assert full["type"] == "subscription_error" and full["code"] == "unavailable", full
        assert "Too many rooms" in full["message"]
        await request(ann, {"type": "unsubscribe", "channel": "room:a"})
        made = await request(ann, {"type": "subscribe", "channel": "room:d"})
        assert made["type"] == "subscription_confirmed", made
        since = {"offset": ack["offset"] - 1, "epoch": ack["epoch"]}
        back = await request(ann, {"type": "subscribe", "channel": "room:a", "since": since})
        # room:a was forgotten to make space for room:d, and now room:b (least recently used) goes
        assert back["type"] == "subscription_error", back


async def test_room_creation_rate_per_user(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_ROOM_CREATE_PER_MINUTE": "5"})
    server.create_user("ann")
    async with connected(server, "ann") as ann:
        codes = []
        for n in range(8):
            reply = await request(ann, {"type": "publish", "channel": f"room:r{n}", "data": "hi"})
            codes.append(reply.get("code", reply["type"]))
        assert codes == ["publish_ack"] * 5 + ["rate_limited"] * 3, codes
        again = await request(ann, {"type": "publish", "channel": "room:r0", "data": "existing rooms are fine"})
        assert again["type"] == "publish_ack", again


async def test_publish_byte_rate_per_user(server_factory: Any) -> None:
    server = server_factory(env={"TIDINGS_PUBLISH_BYTES_PER_SECOND": "1024", "TIDINGS_PUBLISH_BURST_BYTES": "200000"})
    server.create_user("ann")
    async with connected(server, "ann") as one, connected(server, "ann") as two:
        replies = []
        for n in range(6):  # 3 x 60 KB fit the 200 KB burst, shared by the user's two sockets
            ws = one if n % 2 else two
            replies.append((await request(ws, {"type": "publish", "channel": "room:bytes", "data": BIG}))["type"])
        assert replies == ["publish_ack"] * 3 + ["error"] * 3, replies
        small = await request(one, {"type": "publish", "channel": "room:bytes", "data": "hi"})
        assert small["type"] == "publish_ack", small
