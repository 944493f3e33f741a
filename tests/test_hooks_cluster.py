"""Redis mode with a host app's own users: string ids across nodes (presence, the cluster-wide per-user limit),
and a SIGKILLed node's connections firing ``on_disconnect`` / ``on_leave`` once in the cluster (not once per
survivor) when its lease expires. Three real uvicorn processes on the local Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import ROOT, free_port, recv_json, recv_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def start(log: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.hostapp.app:app", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env={**env, "HOOK_NODE": name},
        stdout=open(log.parent / f"{name}.out", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (log.parent / f"{name}.out").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[subprocess.Popen[bytes], int]]]]:
    log = tmp_path / "hooks.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        {
            "HOOK_LOG": str(log),
            "TIDINGS_BROKER_URL": "redis://127.0.0.1:6379/0",
            "TIDINGS_BROKER_PREFIX": f"test-hooks-{secrets.token_hex(6)}",
            "TIDINGS_NODE_LEASE_TTL": "2",
            "TIDINGS_FAST_TRANSPORT": "false",
            "TIDINGS_MAX_CONNECTIONS_PER_USER": "2",
            "PYTHONPATH": str(ROOT),
        }
    )
    procs = [start(log, name, env) for name in ("a", "b", "c")]
    yield log, procs
    for proc, _ in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def hooks(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_a_killed_nodes_connections_fire_their_hooks_once(nodes: Any) -> None:
    log, [(a, port_a), (_, port_b), _] = nodes
    url = "ws://127.0.0.1:{}/ws/authenticated"
    victim = await websockets.connect(url.format(port_a), additional_headers={"X-User": "7:ann"})
    watcher = await websockets.connect(url.format(port_b), additional_headers={"X-User": "8:bob"})
    for ws in (victim, watcher):
        await recv_json(ws)
        await ws.send(json.dumps({"type": "subscribe", "subscription": "room:vigil"}))
        await recv_until(ws, "subscription_confirmed")
    (conn,) = [h["conn"] for h in hooks(log) if h["hook"] == "connect" and h["user"] == 7]
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    leave = await recv_until(watcher, "leave", timeout=30)  # the survivors announce ann's leave once
    assert leave["user"]["user_id"] == 7
    await asyncio.sleep(3)  # a second survivor would have fired by now, too
    gone = [h for h in hooks(log) if h["hook"] == "disconnect" and h["conn"] == conn]
    assert len(gone) == 1 and gone[0]["code"] == 1006 and gone[0]["node"] in ("b", "c"), hooks(log)
    left = [h for h in hooks(log) if h["hook"] == "leave" and h["user"] == 7]
    assert left == [{"node": gone[0]["node"], "hook": "leave", "user": 7, "channel": "room:vigil"}], hooks(log)
    await watcher.close()


async def test_string_ids_across_nodes(nodes: Any) -> None:
    """Presence and the per-user connection limit with UUID-like ids, cluster-wide on Redis."""
    _, [(_, port_a), (_, port_b), (_, port_c)] = nodes
    url = "ws://127.0.0.1:{}/ws/authenticated"
    mine = [
        await websockets.connect(url.format(port), additional_headers={"X-User": "9f3e-ann:ann"})
        for port in (port_a, port_b)
    ]
    other = await websockets.connect(url.format(port_c), additional_headers={"X-User": "5:bob"})
    for ws in (*mine, other):
        hello = await recv_json(ws)
        await ws.send(json.dumps({"type": "subscribe", "subscription": "room:uuid"}))
        await recv_until(ws, "subscription_confirmed")
    assert hello["user_id"] == 5 and hello["channels"][1] == "user:5"
    await other.send(json.dumps({"type": "presence", "channel": "room:uuid", "id": 1}))
    reply = await recv_until(other, "presence")
    assert sorted((u["user_id"] for u in reply["users"]), key=str) == [5, "9f3e-ann"], reply
    third = await websockets.connect(url.format(port_c), additional_headers={"X-User": "9f3e-ann:ann"})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(third.recv(), 10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "Too many connections")
    for ws in (*mine, other):
        await ws.close()
