"""Security benchmark (issue 9): what one abusive user can do to a node with the default settings.

    .venv/bin/python -m bench.security [--duration 30] [--modes memory,redis] [--no-baseline] [--login-seconds 15]

1. Room flood: one user with 5 sockets publishes 60 KB messages into ever-new ``room:*`` names as fast as the
   server lets it, for ``--duration`` seconds. Printed: messages accepted and refused, server RSS growth (/proc),
   Redis ``used_memory`` growth (Redis mode), and whether another room's recent history is still recoverable.
   The baseline is the same flood against the same code with the room and byte limits lifted (the
   behaviour before issue 9: no publish byte rate, no room limits, 1 GiB history budget).
2. Login flood: 20 concurrent bad logins (``POST /auth/token``) run while another client pings over its WebSocket
   every 20 ms; printed: ping round-trip p50/p99/max, with a baseline of the same pings without the flood.

Each scenario gets a fresh ``tidings serve`` process (own data directory and secret key; in Redis mode the local
Redis at 127.0.0.1:6379 with a random key prefix, deleted afterwards). Figures are printed as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
BIG = "x" * 60_000
LIFTED = {  # the limits of issue 9 lifted: what a node did before
    "TIDINGS_PUBLISH_BYTES_PER_SECOND": str(1 << 40),
    "TIDINGS_PUBLISH_BURST_BYTES": str(1 << 40),
    "TIDINGS_ROOM_CREATE_PER_MINUTE": str(1 << 30),
    "TIDINGS_MAX_ROOMS": str(1 << 30),
    "TIDINGS_MAX_CHANNELS": str(1 << 30),
    "TIDINGS_HISTORY_BUDGET_BYTES": str(1 << 30),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Server:
    """A ``tidings serve`` subprocess with its own data directory."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-bench-security-"))
        self.port = free_port()
        self.secret = secrets.token_urlsafe(32)
        pythonpath = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT / "src")]))
        self.env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "TIDINGS_DATA_DIR": str(self.dir),
            "TIDINGS_SECRET_KEY": self.secret,
            "TIDINGS_LOG_LEVEL": "warning",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - closed with the process
        cmd = [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "server.log").read_text())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def user(self, username: str, password: str = "right-password") -> str:
        """Create an account; returns a token for it."""
        from tidings.auth import create_access_token
        from tidings.db import Database

        async def create() -> None:
            db = Database(f"sqlite+aiosqlite:///{(self.dir / 'tidings.db').resolve()}")
            try:
                await db.migrate()
                await db.create_user(username, password, "user")
            finally:
                await db.dispose()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callers may be inside an event loop
            pool.submit(asyncio.run, create()).result()
        return create_access_token(username, self.secret, 3600)

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/authenticated"


@contextlib.contextmanager
def running(env: dict[str, str]) -> Iterator[Server]:
    server = Server(env).start()
    try:
        yield server
    finally:
        server.stop()


def redis_used_memory() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def redis_cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


_ids = itertools.count(1)


async def request(ws: Any, msg: dict[str, Any], skipped: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    msg_id = next(_ids)
    await ws.send(json.dumps({**msg, "id": msg_id}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply.get("id") == msg_id:
            return reply  # type: ignore[no-any-return]
        if skipped is not None:
            skipped.append(reply)


async def connect(server: Server, token: str) -> Any:
    ws = await websockets.connect(server.ws_url(), subprotocols=["bearer", token], max_size=None, open_timeout=30)
    hello = json.loads(await ws.recv())
    assert hello["type"] == "connection_established", hello
    return ws


# ---- 1. room flood ---------------------------------------------------------------------------------------------
@dataclass
class FloodResult:
    mode: str
    limits: str
    accepted: int
    refused: int
    rss_before: int
    rss_after: int
    redis_before: int | None
    redis_after: int | None
    other_room_recovered: bool
    other_room_kept: int


async def _flood(server: Server, duration: float) -> tuple[int, int]:
    token = server.user("mallory")
    sockets = [await connect(server, token) for _ in range(5)]
    accepted = refused = 0
    names = itertools.count()
    deadline = time.monotonic() + duration

    async def one(ws: Any) -> None:
        nonlocal accepted, refused
        while time.monotonic() < deadline:
            reply = await request(ws, {"type": "publish", "channel": f"room:flood-{next(names)}", "data": BIG})
            if reply["type"] == "publish_ack":
                accepted += 1
            else:
                refused += 1

    try:
        await asyncio.gather(*(one(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    return accepted, refused


async def room_flood(mode: str, lifted: bool, duration: float) -> FloodResult:
    env = dict(LIFTED) if lifted else {}
    prefix = f"bench-sec-{secrets.token_hex(4)}"
    if mode == "redis":
        env.update({"TIDINGS_BROKER_URL": REDIS_URL, "TIDINGS_BROKER_PREFIX": prefix})
    try:
        with running(env) as server:
            assert server.proc is not None
            ann = server.user("ann")
            lobby = await connect(server, ann)
            acks = [
                await request(lobby, {"type": "publish", "channel": "room:lobby", "data": f"m{n}"}) for n in range(5)
            ]
            await lobby.close()
            await asyncio.sleep(1)
            rss_before = rss(server.proc.pid)
            redis_before = redis_used_memory() if mode == "redis" else None
            accepted, refused = await _flood(server, duration)
            await asyncio.sleep(2)
            rss_after = rss(server.proc.pid)
            redis_after = redis_used_memory() if mode == "redis" else None
            ws = await connect(server, ann)
            since = {"offset": acks[0]["offset"] - 1, "epoch": acks[0]["epoch"]}
            got: list[dict[str, Any]] = []
            reply = await request(ws, {"type": "subscribe", "channel": "room:lobby", "since": since}, got)
            await ws.close()
            kept = sum(1 for m in got if m.get("type") == "publication" and m.get("channel") == "room:lobby")
            return FloodResult(
                mode,
                "lifted (baseline)" if lifted else "defaults",
                accepted,
                refused,
                rss_before,
                rss_after,
                redis_before,
                redis_after,
                bool(reply.get("recovered")),
                kept,
            )
    finally:
        if mode == "redis":
            redis_cleanup(prefix)


# ---- 2. login flood --------------------------------------------------------------------------------------------
async def _pings(ws: Any, seconds: float) -> list[tuple[float, float]]:
    """``(seconds since the start, round trip in ms)`` of a ping every 20 ms for ``seconds``."""
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    while (sent := time.monotonic()) < began + seconds:
        start = time.perf_counter()
        await request(ws, {"type": "ping"})
        samples.append((sent - began, (time.perf_counter() - start) * 1000))
        await asyncio.sleep(0.02)
    return samples


async def login_flood(seconds: float, concurrency: int = 20) -> dict[str, Any]:
    with running({}) as server:
        token = server.user("ann")
        server.user("victim")
        ws = await connect(server, token)
        quiet = await _pings(ws, min(5.0, seconds))
        stop = time.monotonic() + seconds
        statuses: dict[int, int] = {}

        async def attacker(client: httpx.AsyncClient) -> None:
            while time.monotonic() < stop:
                try:
                    resp = await client.post(
                        "/auth/token", data={"username": "victim", "password": secrets.token_hex(6)}, timeout=30
                    )
                    statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                except httpx.HTTPError:
                    statuses[0] = statuses.get(0, 0) + 1

        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=concurrency)) as client:
            attack = asyncio.gather(*(attacker(client) for _ in range(concurrency)))
            await asyncio.sleep(0.5)
            loaded = await _pings(ws, seconds - 1)
            await attack
        await ws.close()
        return {
            "quiet": [rtt for _, rtt in quiet],
            "loaded": [rtt for _, rtt in loaded],
            "steady": [rtt for at, rtt in loaded if at >= 5.0],
            "statuses": statuses,
        }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mib(n: int | None) -> str:
    return "—" if n is None else f"{n / (1 << 20):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of room flood")
    parser.add_argument("--modes", default="memory,redis", help="brokers: memory,redis")
    parser.add_argument("--no-baseline", action="store_true", help="skip the floods with the limits lifted")
    parser.add_argument("--login-seconds", type=float, default=15.0, help="seconds of login flood (0: skip)")
    args = parser.parse_args(argv)

    print(f"# bench.security — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores\n")
    print(f"## Room flood: one user, 5 sockets, 60 KB messages into new rooms, {args.duration:g} s\n")
    print(
        "| broker | limits | accepted | refused | server RSS growth (MiB) | Redis memory growth (MiB) |"
        " other room recovered | its 5 recent messages back |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for lifted in [False] if args.no_baseline else [False, True]:
            r = asyncio.run(room_flood(mode, lifted, args.duration))
            redis_growth = None if r.redis_before is None or r.redis_after is None else r.redis_after - r.redis_before
            print(
                f"| {r.mode} | {r.limits} | {r.accepted} | {r.refused} | {mib(r.rss_after - r.rss_before)} |"
                f" {mib(redis_growth)} | {'yes' if r.other_room_recovered else 'no'} | {r.other_room_kept} |",
                flush=True,
            )
    if args.login_seconds > 0:
        print(f"\n## Login flood: 20 concurrent bad logins for {args.login_seconds:g} s; another client pings\n")
        result = asyncio.run(login_flood(args.login_seconds))
        print("| phase | pings | p50 (ms) | p99 (ms) | max (ms) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        labels = {
            "quiet": "no flood (baseline)",
            "loaded": "during the flood",
            "steady": "during the flood, from its 5th second on",
        }
        for phase, label in labels.items():
            rtts = result[phase]
            if rtts:
                print(
                    f"| {label} | {len(rtts)} | {statistics.median(rtts):.1f} | {pct(rtts, 0.99):.1f} |"
                    f" {max(rtts):.1f} |"
                )
        print(f"\nlogin answers during the flood (status: count): {result['statuses']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
