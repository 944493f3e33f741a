"""Redis Cluster and Sentinel: channels spread over the shards, and what a master's ``kill -9`` does to clients.

The private deployments come from :mod:`tests.redis_topologies`. What the failover tests check is what
docs/scaling.md ("What a failover does") promises:

* nodes reconnect by themselves (``/healthz`` back to 200, ``broker.reconnects`` counted) and keep delivering;
* channels whose master did not fail keep their epoch: the client gets every publication, once, in order;
* channels whose master failed start a new epoch once the replica is promoted: the client gets the old epoch's
  publications without gap or duplicate up to some offset, then the new epoch from offset 1, without gap or
  duplicate; every publication acknowledged after the promotion reaches it; a client resuming with its last old
  position is told ``recovered: false`` (never an exact-looking replay with holes);
* while the failed shard has no master, publishing there answers 503 (never a silent drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import LiveServer, connected, recv_json, recv_until
from tests.redis_topologies import ClusterDeployment, SentinelDeployment
from tests.test_redis_cluster import cluster_env, eventually, send, start_node
from tidings.broker.keys import Keys
from tidings.publisher import Publisher

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _evalsha_calls(deployment: ClusterDeployment, port: int) -> int:
    stats = deployment.info(port, "commandstats")
    entry = stats.get("cmdstat_evalsha")
    if not isinstance(entry, dict):
        return 0
    return int(entry["calls"]) - int(entry.get("failed_calls", 0))  # minus the first NOSCRIPT per master


async def test_channels_spread_over_the_three_masters(redis_cluster: ClusterDeployment) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    before = {port: _evalsha_calls(redis_cluster, port) for port in masters}
    prefix = "spread"
    async with Publisher(redis_cluster.url, prefix=prefix) as publisher:
        for i in range(1000):
            await publisher.publish(f"room:spread{i}", {"n": i})
    shares = {port: _evalsha_calls(redis_cluster, port) - before[port] for port in masters}
    assert sum(shares.values()) == 1000, shares
    for port, calls in shares.items():
        assert calls > 200, f"master {port} ran only {calls} of 1000 publications: {shares}"
    # and each channel's keys live on its own master: the slot of the hash tag
    keys = Keys(prefix)
    owner = redis_cluster.master_of(keys.meta("room:spread7"))
    assert owner == redis_cluster.master_of(keys.pub("room:spread7")) == redis_cluster.master_of("{room:spread7}")
    client = redis.Redis(port=owner)
    try:
        assert client.exists(keys.meta("room:spread7"), keys.hist("room:spread7")) == 2
        stats = client.info("commandstats")
        assert stats.get("cmdstat_spublish", {}).get("calls", 0) > 0  # sharded pub/sub, not PUBLISH
    finally:
        client.close()


# ---- kill -9 of a master mid-stream ---------------------------------------------------------------------------


async def _publish_numbered(node: LiveServer, channel: str, total: int, acked: list[dict[str, Any]]) -> None:
    """Publish ``{"n": 0..total-1}`` on ``channel`` through node's REST API, retrying each one through 503s.

    A retry after a timeout or a 503 cannot know whether the first try was published, so, as a real client must,
    each publication carries its own Idempotency-Key: a retry of one already made returns its original position.
    """
    run = secrets.token_hex(4)
    async with httpx.AsyncClient(base_url=node.url, headers=node.admin_headers(), timeout=10) as http:
        for n in range(total):
            key = {"Idempotency-Key": f"{run}-{channel}-{n}"}
            while True:
                try:
                    resp = await http.post("/api/publish", json={"channel": channel, "data": {"n": n}}, headers=key)
                except httpx.HTTPError:
                    resp = None
                if resp is not None and resp.status_code == 200:
                    acked.append({"n": n, **resp.json()})
                    break
                assert resp is None or resp.status_code == 503, resp.text
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.01)


def _runs(received: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
    """Offsets received, grouped by epoch in arrival order."""
    runs: list[tuple[str, list[int]]] = []
    for msg in received:
        if not runs or runs[-1][0] != msg["epoch"]:
            runs.append((msg["epoch"], []))
        runs[-1][1].append(msg["offset"])
    return runs


async def _healthy(node: LiveServer) -> dict[str, Any] | None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{node.url}/healthz")
    return dict(resp.json()) if resp.status_code == 200 else None


def _two_channels(deployment: Any, prefix: str) -> tuple[str, str, int]:
    """A channel on the master that will be killed, one on another master, and the victim's port."""
    if isinstance(deployment, SentinelDeployment):
        return "room:victim", "room:victim", deployment.current_master()
    keys = Keys(prefix)
    victim_port = deployment.master_of(keys.meta("room:victim"))
    other = next(
        f"room:other{i}" for i in range(100) if deployment.master_of(keys.meta(f"room:other{i}")) != victim_port
    )
    return "room:victim", other, victim_port


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
async def test_a_master_killed_mid_stream(
    kind: str, request: pytest.FixtureRequest, server_factory: Any, tmp_path: Path
) -> None:
    deployment = request.getfixturevalue("redis_cluster" if kind == "cluster" else "redis_sentinel")
    env = cluster_env(tmp_path, deployment.url)
    node_a, node_b = start_node(server_factory, env), start_node(server_factory, env)
    node_a.create_user("ann")
    victim, other, victim_port = _two_channels(deployment, env["TIDINGS_BROKER_PREFIX"])
    channels = [victim] if victim == other else [victim, other]
    total = 200
    acked: dict[str, list[dict[str, Any]]] = {ch: [] for ch in channels}
    received: dict[str, list[dict[str, Any]]] = {ch: [] for ch in channels}
    async with connected(node_a, "ann") as ws:
        for channel in channels:
            await send(ws, {"type": "subscribe", "subscription": channel})
            while (msg := await recv_json(ws, 10)).get("type") != "subscription_confirmed":
                if msg.get("channel") in received and "offset" in msg:  # the other channel's join
                    received[msg["channel"]].append(msg)
        publishers = [asyncio.create_task(_publish_numbered(node_b, ch, total, acked[ch])) for ch in channels]

        async def read_until_done() -> None:
            while not all(received[ch] and received[ch][-1].get("data", {}).get("n") == total - 1 for ch in channels):
                msg = await recv_json(ws, 60)
                if msg.get("channel") in received and "offset" in msg:  # publications, and ann's own join (offset 1)
                    received[msg["channel"]].append(msg)

        reader = asyncio.create_task(read_until_done())
        await eventually(lambda: len(acked[victim]) >= 50, timeout=60)
        deployment.kill(victim_port)
        try:
            await asyncio.wait_for(asyncio.gather(*publishers), 120)
            await asyncio.wait_for(reader, 60)
        finally:
            for task in (*publishers, reader):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for node in (node_a, node_b):
            health = await eventually(lambda node=node: _healthy(node), timeout=60)
            assert health["broker"]["reconnects"] >= 1, health

        # the victim channel: old epoch without gap or duplicate, then (after the promotion) a new epoch
        runs = _runs(received[victim])
        for _, offsets in runs:
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), runs
        assert runs[0][1][0] == 1 and len(runs) in (1, 2), runs
        if len(runs) == 2:
            assert runs[1][1][0] == 1, "a new epoch starts at offset 1"
        new_epoch = runs[-1][0]
        assert runs[0][0] != new_epoch, "a promoted replica starts a new epoch"
        # every publication acknowledged in the epoch now current reached the client, once, in order
        current = [a for a in acked[victim] if a["epoch"] == new_epoch]
        got = [m for m in received[victim] if m["epoch"] == new_epoch and m["type"] == "publication"]
        assert [m["offset"] for m in got] == [a["offset"] for a in current]
        assert [m["data"]["n"] for m in got] == [a["n"] for a in current]
        # nothing acknowledged is silently missing: what the client did not get was acknowledged before the kill,
        # in the old epoch, and resuming from there is answered recovered: false
        got_ns = {m["data"]["n"] for m in received[victim] if m["type"] == "publication"}
        missing = [a for a in acked[victim] if a["n"] not in got_ns]
        assert all(a["epoch"] == runs[0][0] for a in missing), missing
        last_old = received[victim][len(runs[0][1]) - 1]
        since = {"offset": last_old["offset"], "epoch": last_old["epoch"]}
        await send(ws, {"type": "subscribe", "subscription": victim, "since": since})
        confirmed = await recv_until(ws, "subscription_confirmed", 10)
        assert confirmed["recovered"] is False and confirmed["epoch"] == new_epoch

        if other != victim:  # a shard that did not fail: exact continuity in one epoch
            runs = _runs(received[other])
            assert len(runs) == 1 and runs[0][1] == list(range(1, total + 2)), runs  # the join, then 200
    deployment.restart(victim_port)  # it comes back as a replica
    deployment.wait_healthy()
