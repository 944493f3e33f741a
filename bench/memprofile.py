"""Where the bytes of an idle connection go: tracemalloc snapshots of `tidings serve` per 1,000 connections.

    .venv/bin/python -m bench.memprofile [--clients 1000] [--top 30] [--frames 12]

Starts `tidings serve` under tracemalloc (the bench adapter's settings: sqlite, token-authenticated subscribers
on `room:bench`), connects one subscriber, takes a snapshot, connects `--clients` more (authenticated,
subscribed, idle), takes a second one, and prints the difference grouped by the allocating line and by module,
per connection. Also prints the RSS growth per connection. Python allocations only: uvloop's and libuv's C
structures (the socket's read buffer, libuv handles) show up in RSS but not here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.servers import ROOT, tidings


def serve_traced(port: int, snapshot_dir: str, frames: int) -> None:
    """In the server process: trace allocations, dump a snapshot on SIGUSR1, serve."""
    tracemalloc.start(frames)
    counter = [0]

    def dump(signum: int, frame: object) -> None:
        counter[0] += 1
        tracemalloc.take_snapshot().dump(os.path.join(snapshot_dir, f"snap{counter[0]}.pickle"))
        Path(snapshot_dir, f"snap{counter[0]}.done").touch()

    signal.signal(signal.SIGUSR1, dump)
    from tidings.cli import main

    sys.exit(main(["serve", "--host", "127.0.0.1", "--port", str(port)]))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def subscriber(cfg: dict[str, Any]) -> Any:
    import websockets

    ws = await websockets.connect(cfg["url"], additional_headers=cfg["headers"], ping_interval=None, compression=None)
    while json.loads(await ws.recv()).get("type") != cfg["welcome"]:
        pass
    await ws.send(json.dumps(cfg["subscribe"]))
    while json.loads(await ws.recv()).get("type") != cfg["confirm"]:
        pass
    return ws


def snapshot(proc: subprocess.Popen[bytes], snapshot_dir: str, n: int) -> tracemalloc.Snapshot:
    proc.send_signal(signal.SIGUSR1)
    done = Path(snapshot_dir, f"snap{n}.done")
    deadline = time.monotonic() + 300
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no snapshot")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(os.path.join(snapshot_dir, f"snap{n}.pickle"))


async def drive(args: argparse.Namespace) -> None:
    from bench.fanout import free_port, wait_listening

    workdir = Path(tempfile.mkdtemp(prefix="memprofile-"))
    port = free_port()
    spec = tidings(port, workdir)
    env = {
        **os.environ,
        **spec.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
    }
    snap_dir = str(workdir)
    proc = subprocess.Popen(  # noqa: ASYNC220 (a benchmark driver: blocking here is fine)
        [
            sys.executable,
            "-m",
            "bench.memprofile",
            "--serve",
            str(port),
            "--snapdir",
            snap_dir,
            "--frames",
            str(args.frames),
        ],
        cwd=ROOT,
        env=env,
    )
    clients: list[Any] = []
    try:
        wait_listening(port, proc, timeout=600)
        cfg = spec.client_config()
        clients.append(await subscriber(cfg))
        await asyncio.sleep(1)
        rss0 = rss_kib(proc.pid)
        before = snapshot(proc, snap_dir, 1)
        for start in range(0, args.clients, 100):
            clients += await asyncio.gather(*(subscriber(cfg) for _ in range(min(100, args.clients - start))))
        await asyncio.sleep(2)
        rss1 = rss_kib(proc.pid)
        after = snapshot(proc, snap_dir, 2)
        n = args.clients
        print(f"RSS growth: {(rss1 - rss0) / n:.2f} KiB per connection ({n} connections; tracemalloc on)")
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = after.filter_traces(filters).compare_to(before.filter_traces(filters), "traceback")
        total = sum(d.size_diff for d in diff)
        print(f"traced Python allocations: {total / n:.0f} B per connection\n")
        print(f"top {args.top} allocation sites (bytes per connection, blocks per connection):")
        for d in sorted(diff, key=lambda d: -d.size_diff)[: args.top]:
            if d.size_diff <= 0:
                break
            frames = [f for f in d.traceback if "site-packages" in f.filename or "/src/tidings/" in f.filename]
            where = " <- ".join(f"{short(f.filename)}:{f.lineno}" for f in (frames or list(d.traceback))[:4])
            print(f"{d.size_diff / n:8.0f} B {d.count_diff / n:6.1f}  {where}")
        by_file = after.filter_traces(filters).compare_to(before.filter_traces(filters), "filename")
        print("\nby module (the allocating line's file):")
        for d in sorted(by_file, key=lambda d: -d.size_diff)[:15]:
            if d.size_diff <= 0:
                break
            print(f"{d.size_diff / n:8.0f} B  {short(d.traceback[0].filename)}")
    finally:
        for ws in clients:
            ws.transport.abort()
        proc.terminate()
        proc.wait(30)


def short(path: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--snapdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve_traced(args.serve, args.snapdir, args.frames)
    else:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
