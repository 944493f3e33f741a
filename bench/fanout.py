"""Fan-out benchmark: a server pinned to core 0, N WebSocket subscribers from a Node load client on core 1.

    .venv/bin/python -m bench.fanout [--servers tidings,naive,websockets] [--clients 1000,5000]
                                     [--messages 200] [--runs 3] [--size 64] [--quick]

Per server, N and run (a fresh server process each run):
  * KiB per idle connection: server RSS with N subscribers connected and idle, minus RSS with one, over N-1;
  * single-broadcast latency: `--paced` broadcasts `--gap-ms` apart, each awaited at every subscriber;
    p50/p99 over all their deliveries of publish (trigger's clock) -> receipt (subscriber's, same clock);
  * throughput: `--messages` broadcasts back to back; deliveries/s from the first publish to the last
    receipt, and server CPU (utime+stime of its process tree, /proc/<pid>/stat) over that phase per delivery.
Medians of the runs are printed and, unless --quick or --no-docs, written to docs/benchmarks.md with a plot.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import queue
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from bench.servers import ADAPTERS, ROOT, JSONDict, ServerSpec

BENCH = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- /proc measurements ---------------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str]:
    """Fields 3 (state) onwards of /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def all_process_ticks() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime in ticks) for every live process."""
    out: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                f = _stat_fields(entry.name)
                out[int(entry.name)] = (int(f[1]), int(f[11]) + int(f[12]))
    return out


def process_tree(pid: int, table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """`pid` and its live descendants."""
    table = all_process_ticks() if table is None else table
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo.extend(children.get(p, []))
    return tree


@dataclass
class CpuSnapshot:
    """CPU ticks of the server's tree, of every other process, and of softirq+irq per core, at one instant."""

    wall: float
    server_ticks: int
    others: dict[int, int]
    irq: dict[int, tuple[int, int]]  # core -> (irq+softirq, total) jiffies

    @classmethod
    def take(cls, server_pid: int, ours: Iterable[int], cores: Iterable[int]) -> CpuSnapshot:
        table = all_process_ticks()
        tree = process_tree(server_pid, table)
        excluded = tree | set(ours)
        irq: dict[int, tuple[int, int]] = {}
        wanted = set(cores)
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted:
                v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
                irq[int(name[3:])] = (v[5] + v[6], sum(v))
        return cls(
            wall=time.monotonic(),
            server_ticks=sum(t for p, (_, t) in table.items() if p in tree),
            others={p: t for p, (_, t) in table.items() if p not in excluded},
            irq=irq,
        )

    def server_seconds_until(self, later: CpuSnapshot) -> float:
        return (later.server_ticks - self.server_ticks) / CLK_TCK

    def other_pct_until(self, later: CpuSnapshot) -> float:
        """CPU used by processes not ours, in % of one core (processes born meanwhile count whole)."""
        ticks = sum(t - self.others.get(p, 0) for p, t in later.others.items())
        return 100 * ticks / CLK_TCK / max(1e-9, later.wall - self.wall)

    def irq_pct_until(self, later: CpuSnapshot, core: int) -> float:
        (i0, t0), (i1, t1) = self.irq.get(core, (0, 0)), later.irq.get(core, (0, 0))
        return 100 * (i1 - i0) / max(1, t1 - t0)


def rss_kib(pid: int) -> int:
    """VmRSS of the process tree, in KiB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def scrape(url: str | None, *names: str) -> dict[str, float]:
    """Values of Prometheus counters ``names`` (``_total`` samples) at ``url``; {} when unavailable."""
    if url is None:
        return {}
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in names:
            if line.startswith(f"{name}_total "):
                out[name] = float(line.split()[1])
    return out


def cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "?"


def raise_nofile(want: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit to `want` (and the hard one too, when that is needed and allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def nofile_for(n: int) -> int:
    return n + 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- one run --------------------------------------------------------------------------------------------


class RunError(RuntimeError):
    pass


@dataclass
class Options:
    servers: list[str]
    clients: list[int]
    messages: int
    runs: int
    size: int
    paced: int
    warmup: int
    gap_ms: int
    idle_s: float
    timeout_s: float
    connect_concurrency: int
    server_core: int
    client_core: int
    max_other_pct: float
    retries: int
    quiet_wait_s: float
    keep_logs: bool
    nice: int
    inflate: str = "memo"
    publisher: str = "thread"


@dataclass
class RunResult:
    server: str
    n: int
    run: int
    us_per_delivery: float  # server utime+stime / deliveries, throughput phase
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    kib_per_conn: float
    server_cpu_pct: float  # of one core, throughput phase
    client_cpu_pct: float
    client_us_per_delivery: float
    other_cpu_pct: float  # processes that are not ours, during the latency and throughput phases
    server_core_irq_pct: float  # softirq+irq on the server's core (loopback TCP; not in utime+stime)
    frame_bytes: float
    lost: int
    connect_s: float
    fanout_p50_ms: float  # publish -> last subscriber's receipt, median over the paced broadcasts
    first_p50_ms: float  # publish -> first subscriber's receipt, median over the paced broadcasts
    fanout_max_ms: float  # the same for the slowest paced broadcast
    elapsed_s: float
    attempt: int  # which attempt of the run was kept (see measured_run)
    note: str
    frames_per_write: float = 0.0  # deliveries / socket writes in the throughput phase (where the server says)


class LoadClient:
    """The Node load client: one JSON event per stdout line, one 'next' per stdin line."""

    def __init__(self, argv: list[str], log: IO[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=BENCH,
            start_new_session=True,  # its own scheduling autogroup (see set_session_nice)
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> JSONDict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RunError(f"load client: no '{event}' within {timeout:.0f} s") from None
            if line is None:
                raise RunError(f"load client exited ({self.proc.wait()}) before '{event}'")
            try:
                msg: JSONDict = json.loads(line)
            except json.JSONDecodeError:
                continue
            if msg.get("event") == "error":
                raise RunError(f"load client: {msg.get('error')}")
            if msg.get("event") == event:
                return msg

    def next(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("next\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunError(f"server exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RunError(f"server not listening on {port} after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (its own session), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def niced(value: int) -> list[str]:
    """The `nice` prefix that runs a command at niceness `value` (0: none)."""
    return ["nice", "-n", str(value)] if value else []


def set_session_nice(pid: int, value: int) -> None:
    """Give the session (autogroup) of `pid` niceness `value`: with sched_autogroup on, the scheduler shares a
    core between sessions first, so a process's own nice only counts within its session."""
    if value:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(value))


def one_run(name: str, n: int, run: int, opt: Options, node: str) -> RunResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"fanout-{name}-{n}-"))
    port = free_port()
    spec: ServerSpec = ADAPTERS[name](port, workdir)
    server_log, client_log = workdir / "server.log", workdir / "client.log"
    nofile = nofile_for(n)
    pythonpath = os.pathsep.join(filter(None, [spec.env.get("PYTHONPATH"), os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = {**os.environ, **spec.env, "PYTHONPATH": pythonpath}
    with server_log.open("wb") as slog:
        server = subprocess.Popen(
            [*niced(opt.nice), "taskset", "-c", str(opt.server_core), *spec.argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=slog,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: raise_nofile(nofile),
            start_new_session=True,
        )
    set_session_nice(server.pid, opt.nice)
    client: LoadClient | None = None
    try:
        wait_listening(port, server)
        if cpus_allowed(server.pid) != str(opt.server_core):
            raise RunError(f"server not pinned: Cpus_allowed_list {cpus_allowed(server.pid)}")
        cfg = {
            **spec.client_config(),
            "n": n,
            "size": opt.size,
            "messages": opt.messages,
            "paced": opt.paced,
            "warmup": opt.warmup,
            "gapMs": opt.gap_ms,
            "timeoutMs": int(opt.timeout_s * 1000),
            "connectConcurrency": opt.connect_concurrency,
            "inflate": opt.inflate,
            "publisherThread": opt.publisher == "thread",
        }
        argv = [*niced(opt.nice), "taskset", "-c", str(opt.client_core), node, str(BENCH / "loadclient.mjs")]
        argv.append(json.dumps(cfg))
        with client_log.open("w") as clog:
            client = LoadClient(argv, clog)
        set_session_nice(client.proc.pid, opt.nice)
        ours = (os.getpid(), client.proc.pid)
        cores = (opt.server_core, opt.client_core)

        client.expect("warm", opt.timeout_s + 30)
        rss0 = rss_kib(server.pid)
        client.next()
        conn = client.expect("connected", max(120.0, n * 0.05))
        if conn["connected"] < n:
            raise RunError(f"only {conn['connected']}/{n} subscribers connected: {conn.get('first_error')}")
        time.sleep(opt.idle_s)
        rss1 = rss_kib(server.pid)
        snap0 = CpuSnapshot.take(server.pid, ours, cores)
        client.next()
        lat = client.expect("latency", (opt.warmup + opt.paced) * (opt.timeout_s + opt.gap_ms / 1000) + 30)
        if opt.keep_logs:
            (workdir / "latency.json").write_text(json.dumps(lat))
        snap1 = CpuSnapshot.take(server.pid, ours, cores)
        counters = ("tidings_deliveries", "tidings_transport_writes")
        m1 = scrape(spec.metrics_url, *counters)
        snap1 = CpuSnapshot.take(server.pid, ours, cores)
        client.next()
        thr = client.expect("throughput", max(opt.timeout_s, opt.messages * n * 0.2e-3) + 60)
        snap2 = CpuSnapshot.take(server.pid, ours, cores)
        m2 = scrape(spec.metrics_url, *counters)
        client.next()
        client.expect("done", 30)
    except RuntimeError as exc:  # RunError, and an adapter's set-up failing
        logs = f"--- server log ---\n{tail(server_log)}\n--- client log ---\n{tail(client_log)}"
        raise RunError(f"{exc}\n{logs}") from None
    finally:
        if client is not None:
            client.close()
        stop_server(server)
        if not opt.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)

    received = int(thr["received"])
    if received == 0 or not lat["samples"]:
        raise RunError(f"no deliveries in the latency or throughput phase: {thr.get('first_error')}")
    server_s = snap1.server_seconds_until(snap2)
    elapsed = float(thr["elapsed_s"])
    writes = m2.get("tidings_transport_writes", 0.0) - m1.get("tidings_transport_writes", 0.0)
    delivered = m2.get("tidings_deliveries", 0.0) - m1.get("tidings_deliveries", 0.0)
    return RunResult(
        server=name,
        n=n,
        run=run,
        us_per_delivery=server_s * 1e6 / received,
        deliveries_per_s=float(thr["deliveries_per_s"]),
        p50_ms=float(lat["p50_ms"]),
        p99_ms=float(lat["p99_ms"]),
        kib_per_conn=(rss1 - rss0) / (n - 1),
        server_cpu_pct=100 * server_s / (snap2.wall - snap1.wall),
        client_cpu_pct=100 * float(thr["client_cpu_s"]) / elapsed,
        client_us_per_delivery=float(thr["client_cpu_s"]) * 1e6 / received,
        other_cpu_pct=max(snap0.other_pct_until(snap1), snap1.other_pct_until(snap2)),
        server_core_irq_pct=snap1.irq_pct_until(snap2, opt.server_core),
        frame_bytes=float(thr["frame_bytes"] or 0),
        lost=int(thr["lost"]) + int(lat["lost"]),
        connect_s=float(conn["connect_s"]),
        fanout_p50_ms=float(lat["completion_p50_ms"] or 0),
        first_p50_ms=float(lat.get("first_p50_ms") or 0),
        fanout_max_ms=float(lat["completion_max_ms"] or 0),
        elapsed_s=elapsed,
        attempt=1,
        note=spec.note,
        frames_per_write=delivered / writes if writes > 0 else 0.0,
    )


def other_cpu_pct(window_s: float) -> float:
    """CPU used by processes other than this one over the next `window_s` seconds, in % of one core."""
    before = all_process_ticks()
    t0 = time.monotonic()
    time.sleep(window_s)
    after = all_process_ticks()
    ticks = sum(t - before.get(p, (0, 0))[1] for p, (_, t) in after.items() if p != os.getpid())
    return 100 * ticks / CLK_TCK / (time.monotonic() - t0)


def wait_quiet(opt: Options) -> None:
    """Wait (up to --quiet-wait seconds) until other processes use at most --max-other CPU."""
    if opt.quiet_wait_s <= 0:
        return
    deadline = time.monotonic() + opt.quiet_wait_s
    busy = other_cpu_pct(1.0)
    if busy <= opt.max_other_pct:
        return
    print(f"[waiting: other processes use {busy:.0f}% CPU]", end=" ", flush=True)
    while time.monotonic() < deadline and busy > opt.max_other_pct:
        busy = other_cpu_pct(2.0)


def measured_run(name: str, n: int, run: int, opt: Options, node: str) -> RunResult:
    """One run on a quiet machine; repeated (up to --retries times) when other processes took over
    --max-other CPU during it. Keeps the attempt that was disturbed least."""
    best: RunResult | None = None
    for attempt in range(1, opt.retries + 2):
        wait_quiet(opt)
        r = one_run(name, n, run, opt, node)
        r.attempt = attempt
        if best is None or r.other_cpu_pct < best.other_cpu_pct:
            best = r
        if r.other_cpu_pct <= opt.max_other_pct:
            break
        if attempt <= opt.retries:
            print(f"[other processes used {r.other_cpu_pct:.0f}% CPU: again]", end=" ", flush=True)
    assert best is not None
    return best


# ---- reporting ------------------------------------------------------------------------------------------

# (header, RunResult attribute, format) of the summary table; the per-run table adds RAW_EXTRA.
COLUMNS: list[tuple[str, str, str]] = [
    ("server µs/delivery", "us_per_delivery", "{:.2f}"),
    ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
    ("latency p50 ms", "p50_ms", "{:.2f}"),
    ("latency p99 ms", "p99_ms", "{:.2f}"),
    ("KiB/idle conn", "kib_per_conn", "{:.1f}"),
    ("server CPU %", "server_cpu_pct", "{:.0f}"),
    ("client CPU %", "client_cpu_pct", "{:.0f}"),
    ("client µs/delivery", "client_us_per_delivery", "{:.2f}"),
    ("frame B", "frame_bytes", "{:.0f}"),
    ("lost", "lost", "{:.0f}"),
]
RAW_EXTRA: list[tuple[str, str, str]] = [
    ("frames/write", "frames_per_write", "{:.2f}"),
    ("first receipt p50 ms", "first_p50_ms", "{:.2f}"),
    ("fan-out p50 ms", "fanout_p50_ms", "{:.2f}"),
    ("slowest fan-out ms", "fanout_max_ms", "{:.2f}"),
    ("core-0 softirq %", "server_core_irq_pct", "{:.0f}"),
    ("other procs CPU %", "other_cpu_pct", "{:.0f}"),
    ("connect s", "connect_s", "{:.1f}"),
    ("phase s", "elapsed_s", "{:.2f}"),
    ("attempt kept", "attempt", "{:.0f}"),
]

Row = tuple[str, int, dict[str, float], int]


def by_server(results: list[RunResult]) -> list[RunResult]:
    """``results`` grouped by server (in the order they were first measured), then N, then run."""
    order = {name: i for i, name in enumerate(dict.fromkeys(r.server for r in results))}
    return sorted(results, key=lambda r: (order[r.server], r.n, r.run))


def median_rows(results: list[RunResult]) -> list[Row]:
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for r in by_server(results):
        groups.setdefault((r.server, r.n), []).append(r)
    rows = []
    for (server, n), rs in groups.items():
        med = {
            a: float(statistics.median(float(getattr(r, a)) for r in rs)) for _, a, _ in COLUMNS + RAW_EXTRA
        }
        med["lost"] = float(sum(r.lost for r in rs))
        rows.append((server, n, med, len(rs)))
    return rows


def summary_table(results: list[RunResult]) -> tuple[list[str], list[list[str]]]:
    header = ["server", "N", *(h for h, _, _ in COLUMNS), "runs"]
    rows = [
        [server, f"{n:,}", *(fmt.format(med[a]) for _, a, fmt in COLUMNS), str(count)]
        for server, n, med, count in median_rows(results)
    ]
    return header, rows


def raw_table(results: list[RunResult]) -> tuple[list[str], list[list[str]]]:
    cols = COLUMNS + RAW_EXTRA
    header = ["server", "N", "run", *(h for h, _, _ in cols)]
    rows = [
        [r.server, f"{r.n:,}", str(r.run), *(f.format(getattr(r, a)) for _, a, f in cols)]
        for r in by_server(results)
    ]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def bottleneck_notes(results: list[RunResult], opt: Options) -> list[str]:
    notes = []
    for server, n, med, _ in median_rows(results):
        point = f"{server} N={n:,}"
        if med["client_cpu_pct"] >= 90:
            notes.append(
                f"{point}: the load client was near saturation (CPU {med['client_cpu_pct']:.0f}% of core"
                f" {opt.client_core}), so deliveries/s may be the client's limit rather than the server's."
            )
        elif med["server_cpu_pct"] < 85:
            notes.append(
                f"{point}: the server used {med['server_cpu_pct']:.0f}% of core {opt.server_core} in the"
                " throughput phase: it was not the only limit on deliveries/s (publish path, or other load)."
            )
        if med["other_cpu_pct"] > opt.max_other_pct:
            notes.append(f"{point}: other processes used {med['other_cpu_pct']:.0f}% of a core meanwhile.")
    frames = {r.server: r.frame_bytes for r in results}
    if frames and max(frames.values()) > 1.2 * min(frames.values()):
        sizes = ", ".join(f"{s} {b:.0f} B" for s, b in frames.items())
        notes.append(
            f"Delivered frames differ in size ({sizes}): the envelope of some server is larger than --size;"
            f" --size {max(frames.values()):.0f} gives every server frames of about the same size."
        )
    return notes


def plot(results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = median_rows(results)
    servers = list(dict.fromkeys(s for s, _, _, _ in rows))
    ns = sorted({n for _, n, _, _ in rows})
    value = {(s, n): med["us_per_delivery"] for s, n, med, _ in rows}
    spread: dict[tuple[str, int], list[float]] = {}
    for r in results:
        spread.setdefault((r.server, r.n), []).append(r.us_per_delivery)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    width = 0.8 / len(servers)
    for i, s in enumerate(servers):
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(ns))]
        ys = [value.get((s, n), 0.0) for n in ns]
        lo = [y - min(spread.get((s, n), [y])) for y, n in zip(ys, ns, strict=True)]
        hi = [max(spread.get((s, n), [y])) - y for y, n in zip(ys, ns, strict=True)]
        bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=s)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(range(len(ns)), [f"N = {n:,}" for n in ns])
    ax.set_ylabel("server CPU µs per delivery (lower is better)")
    ax.set_title("Fan-out: server CPU per delivered message (median, min-max of runs)")
    ax.legend()
    ax.margins(y=0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def machine_facts(node: str) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ws_version = "?"
    with contextlib.suppress(OSError, ValueError, KeyError):
        ws_version = json.loads((BENCH / "node_modules/ws/package.json").read_text())["version"]
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    packages = ", ".join(f"{p} {package_version(p)}" for p in ("fastapi", "uvicorn", "websockets", "uvloop"))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    revision = head.stdout.strip() or "?"
    if dirty.stdout.strip():
        revision += " (with uncommitted changes in src/)"
    return {
        "revision": revision,
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "software": f"Python {platform.python_version()} ({packages}); Node {node_version} (ws {ws_version})",
    }


def setup_line(opt: Options) -> str:
    """The report's *Setup* line: cores, frame size, phases and the harness options that change a figure."""
    line = (
        f"- Setup: each server alone on core {opt.server_core} (`taskset`), the Node `ws` load client on"
        f" core {opt.client_core}, loopback; {opt.size}-byte target frames; throughput phase:"
        f" {opt.messages} broadcasts back to back; latency: {opt.paced} single broadcasts {opt.gap_ms} ms"
        f" apart after {opt.warmup} unmeasured ones; a fresh server process per run; {opt.runs} run(s) per"
        " point, medians shown"
    )
    if opt.publisher == "inline":
        line += "; the throughput phase's HTTP publishes sent from the load client's event loop (`--publisher inline`)"
    if opt.nice:
        line += f"; server and client at niceness {opt.nice} (and their sessions)"
    if any("deflate" in s for s in opt.servers):
        line += {
            "memo": "; compressed frames inflated in the load client's own thread, each distinct payload once"
            " (`--inflate memo`)",
            "sync": "; compressed frames inflated in the load client's own thread, every one (`--inflate sync`)",
            "ws": "; compressed frames inflated on ws's thread pool (`--inflate ws`)",
        }[opt.inflate]
    return line + "."


def write_docs(
    path: Path, results: list[RunResult], failures: list[str], opt: Options, command: str, node: str
) -> Path:
    png = path.with_suffix(".png")
    plot(results, png)
    facts = machine_facts(node)
    sh, srows = summary_table(results)
    rh, rrows = raw_table(results)
    notes = sorted({f"{r.server}: {r.note}" for r in results}) + bottleneck_notes(results, opt)
    notes += [f"failed: {f}" for f in failures]
    parts = [
        "# Fan-out benchmarks",
        "",
        "Written by `bench/fanout.py` (see `bench/README.md`); re-run it rather than editing this file.",
        "",
        f"- Date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: nproc {facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}",
        f"- Software: {facts['software']}; Tidings at {facts['revision']}",
        f"- Command: `{command}`",
        setup_line(opt),
        "",
        "## Results (medians)",
        "",
        markdown_table(sh, srows),
        "",
        f"![server CPU µs per delivery]({png.name})",
        "",
        "- *server µs/delivery*: server process tree utime+stime over the throughput phase / deliveries.",
        "- *deliveries/s*: deliveries / (first publish to last receipt) in the throughput phase.",
        "- *latency*: publish (trigger's clock) to receipt at each subscriber, over all deliveries of the"
        " paced single broadcasts; per run, *first receipt* and *fan-out* are the medians over those broadcasts"
        " of the time to the first and to the last subscriber's receipt.",
        "- *KiB/idle conn*: (server RSS with N idle subscribers - RSS with 1) / (N - 1).",
        "- *server / client CPU %*: CPU time / wall time in the throughput phase, 100 = one core;"
        " *client µs/delivery*: the load client's CPU per delivery.",
        "- *frame B*: mean size of a delivered frame's payload; *lost*: deliveries that never arrived.",
        "- Loopback TCP receive work runs as softirq on the sending core and is not in utime+stime;"
        " the per-run table shows its share of core 0 (*core-0 softirq %*).",
        "",
    ]
    if notes:
        parts += ["## Notes", "", *(f"- {x}" for x in notes), ""]
    parts += ["## Per-run figures", "", markdown_table(rh, rrows), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return png


# ---- main -----------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--servers", default="tidings,naive,websockets", help=f"comma list of: {', '.join(ADAPTERS)}"
    )
    p.add_argument("--clients", default="1000,5000", help="comma list of N (default 1000,5000)")
    p.add_argument("--messages", type=int, default=200, help="K, broadcasts in the throughput phase")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size", type=int, default=64, help="target delivered frame size in bytes")
    p.add_argument("--paced", type=int, default=100, help="single broadcasts measured for latency")
    p.add_argument("--warmup", type=int, default=2, help="single broadcasts before those, not measured")
    p.add_argument("--gap-ms", type=int, default=100, help="pause between single broadcasts")
    p.add_argument("--idle-s", type=float, default=2.0, help="idle time before the RSS reading")
    p.add_argument("--timeout-s", type=float, default=60.0, help="wait per broadcast before counting losses")
    p.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in flight")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--client-core", type=int, default=1)
    p.add_argument(
        "--max-other",
        type=float,
        default=15.0,
        dest="max_other_pct",
        help="repeat a run when other processes used more CPU than this (%% of a core) during it",
    )
    p.add_argument("--retries", type=int, default=2, help="repeats allowed per run for --max-other")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        dest="quiet_wait_s",
        help="seconds to wait before a run for other processes to use at most --max-other CPU",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: N=200, 30 messages, 1 run, no docs")
    p.add_argument("--output", type=Path, help="report path (default docs/benchmarks.md; none with --quick)")
    p.add_argument("--no-docs", action="store_true", help="print only")
    p.add_argument("--keep-logs", action="store_true", help="keep each run's server and client logs")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the server and the client, and of their sessions (autogroups); e.g. -10 (root)"
        " on a machine that others use too",
    )
    p.add_argument(
        "--inflate",
        choices=("memo", "sync", "ws"),
        default="memo",
        help="how the load client inflates compressed frames: in its own thread, each distinct payload once"
        " ('memo', default), every message ('sync'), or on ws's thread pool behind its limit of 10 in flight ('ws')",
    )
    p.add_argument(
        "--publisher",
        choices=("thread", "inline"),
        default="thread",
        help="where an HTTP-triggered server's back-to-back publishes are sent from: a worker thread of the load"
        " client ('thread', default) or the subscribers' own event loop ('inline', where publishing waits behind"
        " the frames being parsed)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.clients, a.messages, a.runs, a.paced, a.retries = "200", 30, 1, 10, 0
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ADAPTERS]
    if unknown:
        p.error(f"unknown server(s) {unknown}; choose from {list(ADAPTERS)}")
    clients = int_list(a.clients)
    if not clients or min(clients) < 2:
        p.error("--clients needs values of at least 2")
    if a.messages < 1 or a.runs < 1 or a.paced < 1:
        p.error("--messages, --runs and --paced must be positive")
    opt = Options(
        servers=servers,
        clients=clients,
        messages=a.messages,
        runs=a.runs,
        size=a.size,
        paced=a.paced,
        warmup=a.warmup,
        gap_ms=a.gap_ms,
        idle_s=a.idle_s,
        timeout_s=a.timeout_s,
        connect_concurrency=a.connect_concurrency,
        server_core=a.server_core,
        client_core=a.client_core,
        max_other_pct=a.max_other_pct,
        retries=a.retries,
        quiet_wait_s=a.quiet_wait_s,
        keep_logs=a.keep_logs,
        nice=a.nice,
        inflate=a.inflate,
        publisher=a.publisher,
    )
    return opt, a


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        sys.exit("fanout: node is not on PATH (the load client needs Node >= 18)")
    if not (BENCH / "node_modules/ws/package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("fanout: bench/node_modules is missing and npm is not on PATH")
        print("fanout: installing the load client's packages (npm ci in bench/)", flush=True)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=BENCH, check=True)
    return node


def describe(r: RunResult) -> str:
    text = (
        (f"{r.frames_per_write:.2f} frames/write, " if r.frames_per_write else "")
        + f"{r.us_per_delivery:.2f} µs/delivery, {r.deliveries_per_s:,.0f} deliveries/s,"
        f" p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, {r.kib_per_conn:.1f} KiB/conn;"
        f" CPU server {r.server_cpu_pct:.0f}% client {r.client_cpu_pct:.0f}% other {r.other_cpu_pct:.0f}%"
    )
    return text + (f"; LOST {r.lost}" if r.lost else "")


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that each run's `finally` stops its server and client


def main(argv: list[str] | None = None) -> int:
    opt, args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    node = find_node()
    raise_nofile(nofile_for(max(opt.clients)))
    if (os.cpu_count() or 1) > max(opt.server_core, opt.client_core):
        # Keep the driver off the server's core: it mostly sleeps, but reads /proc between phases.
        os.sched_setaffinity(0, {opt.client_core})
    else:
        print(f"fanout: warning: {os.cpu_count()} CPU(s), the server and the client cannot have a core each")
    command = shlex.join(
        [".venv/bin/python", "-m", "bench.fanout", *(sys.argv[1:] if argv is None else argv)]
    )
    results: list[RunResult] = []
    failures: list[str] = []
    failed: set[tuple[str, int]] = set()
    # Round robin: run 1 of every server, then run 2, ...: a drift in the machine's speed during the benchmark
    # then touches every server alike instead of favouring the ones measured first.
    for run in range(1, opt.runs + 1):
        for n in opt.clients:
            for name in opt.servers:
                if (name, n) in failed:
                    continue  # the other runs of this point would most likely fail the same way
                label = f"{name} N={n} run {run}/{opt.runs}"
                print(f"fanout: {label} ...", end=" ", flush=True)
                try:
                    r = measured_run(name, n, run, opt, node)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    print("FAILED")
                    print("  " + str(exc).replace("\n", "\n  "), flush=True)
                    failures.append(f"{label}: {str(exc).splitlines()[0]}")
                    failed.add((name, n))
                    continue
                results.append(r)
                print(describe(r), flush=True)
    print()
    if results:
        header, rows = summary_table(results)
        print(f"Medians of {opt.runs} run(s); server on core {opt.server_core}, client on {opt.client_core}")
        print(text_table(header, rows))
        for note in bottleneck_notes(results, opt):
            print("note:", note)
    for f in failures:
        print("failed:", f)
    default_out = None if (args.quick or args.no_docs) else ROOT / "docs/benchmarks.md"
    output = None if args.no_docs else (args.output or default_out)
    if output is not None and results:
        png = write_docs(output, results, failures, opt, command, node)
        print(f"wrote {output} and {png}")
    return 0 if results and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
