"""Cross-node fan-out through Redis: two ``tidings serve`` nodes, a private ``redis-server``, subscribers.

    .venv/bin/python -m bench.redis_fanout [--per-node 100] [--paced 200] [--rate 100] [--messages 2000]
                                           [--concurrency 8] [--size 64] [--redis-url redis://...]

What runs: a private ``redis-server`` on a free port (its CPU and command counts are ours alone; or
``--redis-url``), nodes A and B sharing it (same database, secret and key prefix), ``--per-node``
subscribers on each node (``websockets`` clients in this process), all on ``property_updates``.
Publications come from :class:`tidings.publisher.Publisher` (the worker path: straight into Redis, no
HTTP hop), in this process for the latency phase and in a separate process for the throughput phase.

Phases and figures:
  * latency: ``--paced`` publications at ``--rate``/s, each stamped with the publisher's clock;
    p50/p99 over all deliveries of publish -> receipt (same clock, same process);
  * throughput: ``--messages`` publications from ``--concurrency`` concurrent publishers (one process);
    publications/s accepted by Redis, and deliveries/s from the first publish to the last receipt;
  * Redis cost per publication: ``INFO commandstats`` calls and ``used_cpu_sys+user`` over that phase;
  * node CPU per delivery: utime+stime of both node processes (``/proc/<pid>/stat``) over that phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
import websockets
from websockets.typing import Subprotocol

from tidings.auth import create_access_token
from tidings.db import Database
from tidings.publisher import Publisher

CHANNEL = "property_updates"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """An ephemeral TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Node:
    """One ``tidings serve`` process."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_node(env: dict[str, str], workdir: Path, name: str) -> Node:
    """Start a node and wait for its health check."""
    port = free_port()
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env, "TIDINGS_DATA_DIR": str(workdir / name)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(workdir / f'{name}.log').read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return Node(port, proc)
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not become healthy")


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A private redis-server without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found; pass --redis-url")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--daemonize", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"redis://127.0.0.1:{port}/0", proc


@dataclass
class Subscribers:
    """WebSocket subscribers; each records receipt times of publications by sequence number."""

    expected: int = 0
    received: int = 0
    latencies: list[float] = field(default_factory=list)
    last_receipt: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def reader(self, ws: Any) -> None:
        async for text in ws:
            if '"publication"' not in text:
                continue
            now = time.perf_counter()
            data = orjson.loads(text)["data"]
            if data.get("paced"):
                self.latencies.append(now - data["t"])
            self.received += 1
            self.last_receipt = now
            if self.received >= self.expected:
                self.done.set()

    def expect(self, count: int) -> None:
        self.expected = self.received + count
        self.done.clear()
        if count == 0:
            self.done.set()


async def connect_all(nodes: list[Node], per_node: int, token: str, subs: Subscribers) -> list[Any]:
    """Open ``per_node`` subscribers on each node, subscribed to the bench channel."""
    sockets = []
    for node in nodes:
        for _ in range(per_node):
            ws = await websockets.connect(
                f"ws://127.0.0.1:{node.port}/ws/authenticated",
                subprotocols=[Subprotocol("bearer"), Subprotocol(token)],
                max_size=None,
            )
            await ws.recv()
            await ws.send(orjson.dumps({"type": "subscribe", "subscription": CHANNEL}).decode())
            while '"subscription_confirmed"' not in await ws.recv():
                pass
            sockets.append(ws)
    for ws in sockets:
        asyncio.get_running_loop().create_task(subs.reader(ws))
    return sockets


async def publish_burst(url: str, prefix: str, per_task: int, concurrency: int, pad: str) -> tuple[float, float]:
    """The throughput phase's publisher (run with ``--burst``): start and end, on ``time.perf_counter``."""
    async with Publisher(url, prefix=prefix) as publisher:
        await publisher.publish("bench:warmup", {})

        async def one(task: int) -> None:
            for seq in range(per_task):
                await publisher.publish(CHANNEL, {"seq": task * per_task + seq, "pad": pad})

        start = time.perf_counter()
        await asyncio.gather(*(one(t) for t in range(concurrency)))
        return start, time.perf_counter()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tidings-redis-bench-"))
    redis_proc = None
    url = args.redis_url
    if url is None:
        url, redis_proc = start_redis(workdir)
    secret = secrets.token_urlsafe(32)
    env = {
        "TIDINGS_BROKER_URL": url,
        "TIDINGS_BROKER_PREFIX": f"bench-{secrets.token_hex(4)}",
        "TIDINGS_SECRET_KEY": secret,
        "TIDINGS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'shared.db'}",
        "TIDINGS_MAX_CONNECTIONS_PER_USER": "100000",
        "TIDINGS_SEND_QUEUE_MAX": "100000",
        "TIDINGS_LOG_LEVEL": "warning",
    }
    nodes: list[Node] = []
    redis = aioredis.Redis.from_url(url)
    try:
        await asyncio.sleep(0.3)
        nodes.append(start_node(env, workdir, "node-a"))
        db = Database(env["TIDINGS_DATABASE_URL"])
        await db.create_user("bench", "pw", "user")
        await db.dispose()
        nodes.append(start_node(env, workdir, "node-b"))
        token = create_access_token("bench", secret, 3600)
        subs = Subscribers()
        sockets = await connect_all(nodes, args.per_node, token, subs)
        n_subs = len(sockets)
        pad = "x" * max(0, args.size - 40)
        async with Publisher(url, prefix=env["TIDINGS_BROKER_PREFIX"]) as publisher:
            # latency: paced publications
            subs.expect(args.paced * n_subs)
            for seq in range(args.paced):
                await publisher.publish(CHANNEL, {"paced": 1, "seq": seq, "t": time.perf_counter(), "pad": pad})
                await asyncio.sleep(1 / args.rate)
            await asyncio.wait_for(subs.done.wait(), 120)
            latencies = subs.latencies[:]

            # throughput: concurrent publishers, back to back, in their own process
            await redis.config_resetstat()
            info0 = await redis.info("cpu")
            cpu0 = [cpu_seconds(n.proc.pid) for n in nodes]
            per_task = args.messages // args.concurrency
            messages = per_task * args.concurrency
            subs.expect(messages * n_subs)
            burst = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.redis_fanout",
                "--burst",
                url,
                env["TIDINGS_BROKER_PREFIX"],
                str(per_task),
                str(args.concurrency),
                pad,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await burst.communicate()
            start, published_at = map(float, out.split())
            await asyncio.wait_for(subs.done.wait(), 300)
            end = subs.last_receipt if n_subs else published_at
            cpu1 = [cpu_seconds(n.proc.pid) for n in nodes]
            info1 = await redis.info("cpu")
            stats = await redis.info("commandstats")
        redis_cpu = (info1["used_cpu_sys"] + info1["used_cpu_user"]) - (info0["used_cpu_sys"] + info0["used_cpu_user"])
        commands = {
            name.removeprefix("cmdstat_"): value["calls"]
            for name, value in stats.items()
            if name.startswith("cmdstat_") and name not in ("cmdstat_config", "cmdstat_info")
        }
        for ws in sockets:
            await ws.close()
        return {
            "nodes": len(nodes),
            "subscribers": n_subs,
            "paced": args.paced,
            "rate": args.rate,
            "messages": messages,
            "concurrency": args.concurrency,
            "size": args.size,
            "latency_p50_ms": statistics.median(latencies) * 1000,
            "latency_p99_ms": percentile(latencies, 0.99) * 1000,
            "publications_per_s": messages / (published_at - start),
            "deliveries_per_s": messages * n_subs / (end - start),
            "redis_cpu_us_per_publication": redis_cpu / messages * 1e6,
            "redis_commands_per_publication": {k: round(v / messages, 3) for k, v in sorted(commands.items())},
            "node_cpu_us_per_delivery": (sum(cpu1) - sum(cpu0)) / (messages * n_subs) * 1e6,
        }
    finally:
        await redis.aclose()
        for node in nodes:
            node.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(20)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--burst"]:
        url, prefix, per_task, concurrency, pad = argv[1:6]
        start, end = asyncio.run(publish_burst(url, prefix, int(per_task), int(concurrency), pad))
        print(start, end)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-node", type=int, default=100, help="subscribers on each node (default 100)")
    parser.add_argument("--paced", type=int, default=200, help="publications of the latency phase (default 200)")
    parser.add_argument("--rate", type=float, default=100.0, help="their rate per second (default 100)")
    parser.add_argument("--messages", type=int, default=2000, help="publications of the throughput phase")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent publishers (default 8)")
    parser.add_argument("--size", type=int, default=64, help="approximate data size in bytes (default 64)")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a private redis-server")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:,.1f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
