"""Idle connections on one node: memory, idle CPU with the keepalive on, one broadcast to all, none lost.

    .venv/bin/python -m bench.idle [--clients 2000,5000,10000,max] [--idle-s 60] [--sources 4]
                                   [--ping-interval S] [--output docs/benchmarks-idle.md]

Per N (a fresh `tidings serve` on core 0, the Node client `idleclient.mjs` on core 1): N subscribers connect
(token-authenticated, subscribed to `room:bench`; 200 handshakes in flight, source addresses 127.0.0.1..
127.0.0.<sources> in turn), stay idle `--idle-s` seconds while the server pings each silent socket every
`TIDINGS_PING_INTERVAL` (`--ping-interval`, default the server's; the client answers, and sends nothing else),
then one `POST /api/publish` must reach all of them. Reported: RSS growth per connection, the server's CPU
while idle (% of one core), handshakes/s overall and over the last 1,000, the time for the broadcast to reach
all, the deliveries lost and the connections closed meanwhile.
`max` is the largest N the open-file limit allows (hard RLIMIT_NOFILE minus a margin, at most 100,000). The
figures are projected to 100,000 connections by a least-squares line through the measured points.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fanout import (
    BENCH,
    CpuSnapshot,
    LoadClient,
    RunError,
    find_node,
    free_port,
    machine_facts,
    raise_nofile,
    rss_kib,
    stop_server,
    tail,
    wait_listening,
)
from bench.servers import ROOT, TIDINGS_CHANNEL, tidings
from tidings.guard import RESERVED_FDS
from tidings.settings import Settings

TARGET = 100_000
MARGIN = 600  # file descriptors the server needs besides its sockets (listening socket, sqlite, logs, ...)


#: Connections the server may hold besides the subscribers (the publishing HTTP client's).
EXTRA_CONNECTIONS = 100


def largest_n() -> int:
    """The largest N the hard open-file limit lets the server hold, with the connection guard's own headroom
    (``tidings.guard.fd_budget``: a tenth of the cap, at most 1,024, plus its reserve) and :data:`MARGIN`."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return TARGET
    room = hard - MARGIN - RESERVED_FDS - 1024 - EXTRA_CONNECTIONS
    return min(TARGET, room // 500 * 500)


def one_point(n: int, args: argparse.Namespace, node: str) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix=f"idle-{n}-"))
    port = free_port()
    spec = tidings(port, workdir)
    spec.env["TIDINGS_IDLE_TIMEOUT"] = "3600"  # idle by design: the 4001 idle close is not what is measured
    if args.ping_interval is not None:
        spec.env["TIDINGS_PING_INTERVAL"] = str(args.ping_interval)
    # the connection caps (defaults 10,000 per node, 256 per client address) raised to what is measured: the load
    # client is N users behind a handful of loopback addresses
    spec.env["TIDINGS_MAX_CONNECTIONS"] = str(n + EXTRA_CONNECTIONS)
    spec.env["TIDINGS_MAX_CONNECTIONS_PER_IP"] = str(n)
    pythonpath = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = {**os.environ, **spec.env, "PYTHONPATH": pythonpath}
    nofile = n + MARGIN
    log = workdir / "server.log"
    with log.open("wb") as slog:
        server = subprocess.Popen(
            ["taskset", "-c", str(args.server_core), *spec.argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=slog,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: raise_nofile(nofile),
            start_new_session=True,
        )
    client: LoadClient | None = None
    try:
        wait_listening(port, server, timeout=120)
        cfg = spec.client_config()
        trigger = cfg["trigger"]
        ccfg = {
            "url": cfg["url"],
            "headers": cfg["headers"],
            "welcome": cfg["welcome"],
            "subscribe": cfg["subscribe"],
            "confirm": cfg["confirm"],
            "publish": trigger["url"],
            "channel": TIDINGS_CHANNEL,
            "n": n,
            "concurrency": args.concurrency,
            "sources": args.sources,
            "timeoutMs": 120_000,
        }
        time.sleep(1)
        rss0 = rss_kib(server.pid)
        argv = ["taskset", "-c", str(args.client_core), node, str(BENCH / "idleclient.mjs"), json.dumps(ccfg)]
        with (workdir / "client.log").open("w") as clog:
            client = LoadClient(argv, clog)
        conn = client.expect("connected", max(600.0, n * 0.05))
        if conn["connected"] < n:
            raise RunError(f"only {conn['connected']}/{n} connected: {conn.get('first_error')}")
        time.sleep(2)
        rss1 = rss_kib(server.pid)
        ours = (os.getpid(), client.proc.pid)
        snap0 = CpuSnapshot.take(server.pid, ours, (args.server_core,))
        time.sleep(args.idle_s)
        snap1 = CpuSnapshot.take(server.pid, ours, (args.server_core,))
        rss2 = rss_kib(server.pid)
        client.next()
        bc = client.expect("broadcast", 180)
        client.next()
        alive = client.expect("alive", 30)
        client.next()
        client.expect("done", 60)
    except RuntimeError as exc:
        logs = f"--- server log ---\n{tail(log)}\n--- client log ---\n{tail(workdir / 'client.log')}"
        raise RunError(f"{exc}\n{logs}") from None
    finally:
        if client is not None:
            client.close()
        stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)
    marks = conn.get("marks") or []
    last_rate = 0.0
    if len(marks) >= 2:
        (n0, t0), (n1, t1) = marks[-2], marks[-1]
        last_rate = (n1 - n0) / max(1e-9, t1 - t0)
    idle_s = snap1.wall - snap0.wall
    return {
        "n": n,
        "connect_s": float(conn["connect_s"]),
        "rate": n / max(1e-9, float(conn["connect_s"])),
        "last_rate": last_rate,
        "rss_mib": rss2 / 1024,
        "kib_per_conn": (rss1 - rss0) / n,
        "idle_cpu_pct": 100 * snap0.server_seconds_until(snap1) / idle_s,
        "other_pct": snap0.other_pct_until(snap1),
        "broadcast_s": float(bc["all_s"]) if bc.get("all_s") is not None else float("nan"),
        "lost": float(bc["lost"]),
        "closed": float(alive["closed_early"]),
    }


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    if len(points) < 2:
        x, y = points[0]
        return 0.0, y / x
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


COLS = [
    ("N", "n", "{:,.0f}"),
    ("connect s", "connect_s", "{:.1f}"),
    ("handshakes/s", "rate", "{:,.0f}"),
    ("handshakes/s, last 1,000", "last_rate", "{:,.0f}"),
    ("server RSS MiB", "rss_mib", "{:,.0f}"),
    ("KiB/conn", "kib_per_conn", "{:.2f}"),
    ("idle CPU % of a core", "idle_cpu_pct", "{:.1f}"),
    ("broadcast to all s", "broadcast_s", "{:.3f}"),
    ("lost", "lost", "{:.0f}"),
    ("closed while idle", "closed", "{:.0f}"),
    ("other procs CPU %", "other_pct", "{:.0f}"),
]


def report(rows: list[dict[str, float]], args: argparse.Namespace, command: str, node: str) -> str:
    head = "| " + " | ".join(h for h, _, _ in COLS) + " |"
    sep = "|" + "|".join(" --- " for _ in COLS) + "|"
    body = ["| " + " | ".join(f.format(r[k]) for _, k, f in COLS) + " |" for r in rows]
    proj = []
    for label, key, fmt in (
        ("server RSS MiB", "rss_mib", "{:,.0f}"),
        ("idle CPU % of a core", "idle_cpu_pct", "{:.1f}"),
        ("broadcast to all s", "broadcast_s", "{:.2f}"),
    ):
        a, b = fit([(r["n"], r[key]) for r in rows if r[key] == r[key]])
        proj.append(f"| {label} | {fmt.format(a + b * TARGET)} | {b * 1000:.4g} per 1,000 connections |")
    facts = machine_facts(node)
    defaults = Settings()
    ping_interval = defaults.ping_interval if args.ping_interval is None else args.ping_interval
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "\n".join(
        [
            "# Idle connections per node",
            "",
            "Written by `bench/idle.py` (`make bench-idle`); re-run it rather than editing this file.",
            "",
            f"- Date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"- Machine: nproc {facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}; open files per"
            f" process: hard limit {hard:,} (so N stops at {largest_n():,} here)",
            f"- Software: {facts['software']}; Tidings at {facts['revision']}",
            f"- Command: `{command}`",
            f"- Setup: `tidings serve` on core {args.server_core}, the Node `ws` idle client on core"
            f" {args.client_core}; each subscriber token-authenticated and subscribed to `{TIDINGS_CHANNEL}`;"
            f" keepalive on: a ping to every silent socket each {ping_interval:g} s (`TIDINGS_PING_INTERVAL`"
            f"{'' if args.ping_interval is None else ', set by --ping-interval'}), {defaults.ping_timeout:g} s to"
            f" answer (the client answers at once and sends nothing else); idle window {args.idle_s:.0f} s;"
            f" {args.concurrency} handshakes in flight; source addresses 127.0.0.1-{args.sources};"
            " `TIDINGS_MAX_CONNECTIONS` and `TIDINGS_MAX_CONNECTIONS_PER_IP` raised to N (+100), since the load"
            " client is N users behind a few addresses (defaults 10,000 and 256).",
            "",
            head,
            sep,
            *body,
            "",
            f"Projected to {TARGET:,} connections (least-squares line through the points above):",
            "",
            "| figure | at 100,000 | slope |",
            "| --- | --- | --- |",
            *proj,
            "",
            "- *KiB/conn*: (server RSS with N idle subscribers - RSS before any) / N.",
            "- *idle CPU*: server utime+stime over the idle window / its length (pings and pongs included).",
            "- *broadcast to all*: from the publish request to the last subscriber's receipt (client clock).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--clients", default="2000,5000,10000,max")
    p.add_argument("--idle-s", type=float, default=60.0)
    p.add_argument("--ping-interval", type=float, help="TIDINGS_PING_INTERVAL for the server (default: its own)")
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--client-core", type=int, default=1)
    p.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks-idle.md")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    ns = [largest_n() if x.strip() == "max" else int(x) for x in args.clients.split(",") if x.strip()]
    node = find_node()
    raise_nofile(max(ns) + MARGIN)
    os.sched_setaffinity(0, {args.client_core})
    command = " ".join([".venv/bin/python", "-m", "bench.idle", *(sys.argv[1:] if argv is None else argv)])
    rows = []
    for n in ns:
        print(f"idle: N={n:,} ...", end=" ", flush=True)
        try:
            r = one_point(n, args, node)
        except (RuntimeError, OSError) as exc:
            print("FAILED\n  " + str(exc).replace("\n", "\n  "), flush=True)
            continue
        rows.append(r)
        print(", ".join(f"{h} {f.format(r[k])}" for h, k, f in COLS[1:]), flush=True)
    if not rows:
        return 1
    text = report(rows, args, command, node)
    print(text)
    if not args.no_docs:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
