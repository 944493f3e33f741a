"""Redis Cluster against one Redis, same run: publication throughput, Redis CPU per shard, big-room presence.

    .venv/bin/python -m bench.redis_shards [--channels 48] [--messages 6000] [--publishers 2] [--concurrency 8]
                                           [--members 10000] [--only single|cluster] [--presence-only]

Part of ``make bench-redis`` (after :mod:`bench.redis_fanout`). For each deployment -- a private
``redis-server`` ("single") and a private Redis Cluster of 3 masters + 3 replicas ("cluster", started as the
tests do, :mod:`tests.redis_topologies`) -- in the same run:

* **throughput** (each master's CPU is also measured over 3 s idle first, and reported net of it): two
  ``tidings serve`` nodes; one WebSocket subscriber per channel per node on ``--channels``
  ``property:<n>`` channels; ``--publishers`` processes x ``--concurrency`` tasks publish ``--messages``
  publications round-robin over the channels with :class:`tidings.publisher.Publisher` as fast as they can
  (saturation of the publishers; every delivery is awaited). Figures: publications/s, and per master: the share
  of publications it ran (``INFO commandstats`` ``evalsha``) and its CPU (``INFO cpu``) per publication it ran.
* **big room** (broker level, two :class:`~tidings.broker.redis.RedisBroker` instances standing for two nodes):
  ``--members`` users join one room (half through each broker, 50 concurrent joins), then: the latency of one
  more join + leave at full size (median of 200), Redis CPU per join and per leave (``INFO commandstats``
  ``usec`` of the scripts and commands a join/leave runs, divided by the joins), the time of one presence page
  (1,000 members) and of reading all members page by page, and the leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import websockets
from websockets.typing import Subprotocol

from bench.redis_fanout import start_node, start_redis
from tidings.auth import create_access_token
from tidings.db import Database
from tidings.publisher import Publisher


def _masters(url: str) -> list[int]:
    """Ports of the masters behind ``url`` (one for a single Redis)."""
    if not url.startswith("redis+cluster://"):
        return [int(url.rsplit(":", 1)[1].split("/")[0])]
    first = url.removeprefix("redis+cluster://").split(",")[0]
    client = redis.Redis(port=int(first.rsplit(":", 1)[1]))
    try:
        return sorted(int(master[1]) for _, _, master, *_ in client.execute_command("CLUSTER", "SLOTS"))
    finally:
        client.close()


def _shard_counters(ports: list[int]) -> dict[int, tuple[float, int, dict[str, tuple[int, int]]]]:
    """Per master: CPU seconds, EVALSHA calls, and (calls, usec) of every command."""
    out = {}
    for port in ports:
        client = redis.Redis(port=port)
        try:
            cpu = client.info("cpu")
            stats = client.info("commandstats")
        finally:
            client.close()
        commands = {
            name.removeprefix("cmdstat_"): (int(v["calls"]) - int(v.get("failed_calls", 0)), int(v["usec"]))
            for name, v in stats.items()
        }
        out[port] = (cpu["used_cpu_sys"] + cpu["used_cpu_user"], commands.get("evalsha", (0, 0))[0], commands)
    return out


async def _burst(url: str, prefix: str, channels: int, offset: int, per_task: int, concurrency: int) -> None:
    async with Publisher(url, prefix=prefix) as publisher:
        for n in range(channels):  # warm the script cache of every shard
            await publisher.publish(f"bench:warm{n}", {})
        print("ready", flush=True)
        sys.stdin.readline()

        async def one(task: int) -> None:
            for seq in range(per_task):
                n = offset + task * per_task + seq
                await publisher.publish(f"property:{n % channels}", {"seq": n})

        start = time.perf_counter()
        await asyncio.gather(*(one(t) for t in range(concurrency)))
        print(start, time.perf_counter(), flush=True)


async def throughput(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    prefix = f"bench-{secrets.token_hex(4)}"
    env = {
        "TIDINGS_BROKER_URL": url,
        "TIDINGS_BROKER_PREFIX": prefix,
        "TIDINGS_SECRET_KEY": secret,
        "TIDINGS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'shared.db'}",
        "TIDINGS_MAX_CONNECTIONS_PER_USER": "100000",
        "TIDINGS_SEND_QUEUE_MAX": "100000",
        "TIDINGS_LOG_LEVEL": "warning",
    }
    nodes = [start_node(env, workdir, "node-a")]
    db = Database(env["TIDINGS_DATABASE_URL"])
    with contextlib.suppress(Exception):
        await db.create_user("bench", "pw", "user")
    await db.dispose()
    nodes.append(start_node(env, workdir, "node-b"))
    token = create_access_token("bench", secret, 3600)
    sockets = []
    received = 0
    expected = 0
    done = asyncio.Event()

    async def reader(ws: Any) -> None:
        nonlocal received
        async for text in ws:
            if '"publication"' in text:
                received += 1
                if received >= expected:
                    done.set()

    try:
        for node in nodes:
            for n in range(args.channels):
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{node.port}/ws/authenticated",
                    subprotocols=[Subprotocol("bearer"), Subprotocol(token)],
                    max_size=None,
                )
                await ws.recv()
                await ws.send(f'{{"type":"subscribe","subscription":"property:{n}"}}')
                while '"subscription_confirmed"' not in await ws.recv():
                    pass
                sockets.append(ws)
        for ws in sockets:
            asyncio.get_running_loop().create_task(reader(ws))
        per_task = args.messages // (args.publishers * args.concurrency)
        messages = per_task * args.publishers * args.concurrency
        expected = messages * 2  # one subscriber per channel on each node
        procs = []
        for p in range(args.publishers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.redis_shards", "--burst", url, prefix, str(args.channels),
                str(p * per_task * args.concurrency), str(per_task), str(args.concurrency),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
            procs.append(proc)
        masters = _masters(url)
        idle0 = _shard_counters(masters)
        idle_t = time.perf_counter()
        await asyncio.sleep(3)
        idle1 = _shard_counters(masters)
        idle_rate = {p: (idle1[p][0] - idle0[p][0]) / (time.perf_counter() - idle_t) for p in masters}
        before = _shard_counters(masters)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        spans = []
        for proc in procs:
            out, _ = await proc.communicate()
            start, end = map(float, out.split())
            spans.append((start, end))
        await asyncio.wait_for(done.wait(), 300)
        after = _shard_counters(masters)
        elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
        shards = []
        for port in masters:
            cpu = after[port][0] - before[port][0]
            pubs = after[port][1] - before[port][1]
            shards.append(
                {
                    "port": port,
                    "publications": pubs,
                    "share": pubs / messages,
                    "cpu_s": cpu,
                    "cpu_us_per_publication": cpu / pubs * 1e6 if pubs else 0.0,
                    "idle_cpu_per_s": idle_rate[port],
                    "net_cpu_us_per_publication": max(0.0, cpu - idle_rate[port] * elapsed) / pubs * 1e6
                    if pubs
                    else 0.0,
                }
            )
        return {
            "messages": messages,
            "publications_per_s": messages / elapsed,
            "deliveries": received,
            "shards": shards,
            "redis_cpu_us_per_publication_total": sum(s["cpu_s"] for s in shards) / messages * 1e6,
        }
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for node in nodes:
            node.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(20)


def _usec(before: dict[int, Any], after: dict[int, Any], names: tuple[str, ...]) -> int:
    total = 0
    for port in after:
        for name in names:
            total += after[port][2].get(name, (0, 0))[1] - before[port][2].get(name, (0, 0))[1]
    return total


async def big_room(url: str, members: int) -> dict[str, Any]:
    from tidings.broker.redis import RedisBroker

    prefix = f"bench-room-{secrets.token_hex(4)}"
    brokers = [RedisBroker(url, prefix=prefix) for _ in range(2)]
    for broker in brokers:
        await broker.start(lambda pub: None)
    channel = "room:big"
    masters = _masters(url)
    names = ("evalsha", "zadd", "zrem", "eval")
    sem = asyncio.Semaphore(50)

    async def join(uid: int) -> None:
        async with sem:
            await brokers[uid % 2].presence_add(channel, f"c{uid}", {"user_id": uid, "username": f"user{uid}"})

    async def leave(uid: int) -> None:
        async with sem:
            await brokers[uid % 2].presence_remove(channel, f"c{uid}", uid)

    try:
        before = _shard_counters(masters)
        t0 = time.perf_counter()
        await asyncio.gather(*(join(uid) for uid in range(1, members + 1)))
        join_wall = time.perf_counter() - t0
        after = _shard_counters(masters)
        join_usec = _usec(before, after, names) / members
        pairs = []
        extra = members + 1
        for _ in range(200):
            t = time.perf_counter()
            await brokers[0].presence_add(channel, "extra", {"user_id": extra, "username": "extra"})
            await brokers[0].presence_remove(channel, "extra", extra)
            pairs.append(time.perf_counter() - t)
        page_times, pages = [], 0
        paged = getattr(brokers[1], "presence_page", None)
        for _ in range(20):
            t = time.perf_counter()
            if paged is not None:
                page = await paged(channel, 0, 1000)
                assert len(page.users) == 1000 and page.count == members
            else:
                assert len(await brokers[1].presence(channel)) == members
            page_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        everyone = await brokers[1].presence(channel)
        all_time = time.perf_counter() - t
        assert len(everyone) == members
        if paged is not None:
            pages = -(-members // 1000)
        before = _shard_counters(masters)
        t0 = time.perf_counter()
        await asyncio.gather(*(leave(uid) for uid in range(1, members + 1)))
        leave_wall = time.perf_counter() - t0
        after = _shard_counters(masters)
        leave_usec = _usec(before, after, names) / members
        return {
            "members": members,
            "joins_per_s": members / join_wall,
            "redis_us_per_join": join_usec,
            "join_leave_pair_at_full_size_ms_median": statistics.median(pairs) * 1000,
            "presence_page_1000_ms_median": statistics.median(page_times) * 1000 if paged else None,
            "presence_all_ms": all_time * 1000,
            "presence_all_pages": pages,
            "leaves_per_s": members / leave_wall,
            "redis_us_per_leave": leave_usec,
        }
    finally:
        for broker in brokers:
            await broker.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="tidings-shards-bench-"))
    kinds = [args.only] if args.only else ["single", "cluster"]
    for kind in kinds:
        proc = None
        cluster = None
        if args.redis_url:
            url = args.redis_url
        elif kind == "single":
            url, proc = start_redis(workdir)
            await asyncio.sleep(0.3)
        else:
            from tests.redis_topologies import ClusterDeployment

            cluster = ClusterDeployment(workdir / "cluster")
            cluster.start()
            url = cluster.url
        try:
            entry: dict[str, Any] = {"url": url}
            if not args.presence_only:
                entry["throughput"] = await throughput(url, args, workdir / kind)
            entry["big_room"] = await big_room(url, args.members)
            results[kind] = entry
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
            if cluster is not None:
                cluster.stop_all()
    return results


def _print(results: dict[str, Any]) -> None:
    for kind, entry in results.items():
        print(f"== {kind}: {entry['url']}")
        tp = entry.get("throughput")
        if tp:
            print(f"  publications/s at saturation: {tp['publications_per_s']:,.0f} ({tp['messages']} publications,"
                  f" {tp['deliveries']} deliveries)")  # fmt: skip
            print(f"  Redis CPU per publication, all shards: {tp['redis_cpu_us_per_publication_total']:.1f} us")
            for shard in tp["shards"]:
                print(f"    master :{shard['port']}: {shard['share']:.0%} of the publications,"
                      f" {shard['cpu_us_per_publication']:.1f} us CPU per publication it ran,"
                      f" {shard['cpu_s']:.2f} s CPU; idle {shard['idle_cpu_per_s'] * 1000:.0f} ms CPU/s,"
                      f" net of idle {shard['net_cpu_us_per_publication']:.1f} us per publication")  # fmt: skip
        room = entry["big_room"]
        for key, value in room.items():
            shown = f"{value:,.2f}" if isinstance(value, float) else value
            print(f"  {key}: {shown}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--burst"]:
        url, prefix, channels, offset, per_task, concurrency = argv[1:7]
        asyncio.run(_burst(url, prefix, int(channels), int(offset), int(per_task), int(concurrency)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--channels", type=int, default=48, help="property:<n> channels (default 48)")
    parser.add_argument("--messages", type=int, default=6000, help="publications of the throughput phase")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent publishers per process (default 8)")
    parser.add_argument("--members", type=int, default=10000, help="members of the big room (default 10,000)")
    parser.add_argument("--only", choices=["single", "cluster"], default=None, help="one deployment only")
    parser.add_argument("--presence-only", action="store_true", help="the big-room phase only")
    parser.add_argument("--redis-url", default=None, help="use this Redis (with --only) instead of a private one")
    args = parser.parse_args(argv)
    os.environ.setdefault("TIDINGS_LOG_LEVEL", "warning")
    _print(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
