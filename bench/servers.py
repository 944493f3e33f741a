"""How each benchmarked server is started, and how the load client talks to it.

An adapter is a function `(port, workdir) -> ServerSpec`. The spec says how to start the server (argv and
environment; the driver adds `taskset`), and `client_config()` is called once the server accepts connections:
it may do set-up against the running server (users, tokens) and returns the load client's connection and
trigger settings (see bench/loadclient.mjs).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

JSONDict = dict[str, Any]


@dataclass
class ServerSpec:
    argv: list[str]
    client_config: Callable[[], JSONDict]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    metrics_url: str | None = None  # Prometheus text; frames per socket write is read from it when offered


def control_baseline(argv: list[str], port: int, note: str, path: str = "/") -> ServerSpec:
    """A baseline server: subscribers connect to ``path``, the load client triggers broadcasts on ``/control``."""

    def client_config() -> JSONDict:
        return {
            "url": f"ws://127.0.0.1:{port}{path}",
            "trigger": {"mode": "control", "url": f"ws://127.0.0.1:{port}/control"},
        }

    return ServerSpec(argv, client_config, note=note)


def naive(port: int, workdir: Path) -> ServerSpec:
    """FastAPI + the list-and-gather manager, on uvicorn with its defaults (uvloop, httptools, websockets)."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.naive_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws-per-message-deflate",
        "false",
        "--log-level",
        "warning",
    ]
    return control_baseline(argv, port, "uvicorn defaults: uvloop, httptools, ws=auto (websockets-sansio)", "/ws")


def websockets_broadcast(port: int, workdir: Path) -> ServerSpec:
    """The `websockets` library's asyncio server and its `broadcast()`, on uvloop."""
    argv = [sys.executable, "-m", "bench.ws_broadcast_server", "--host", "127.0.0.1", "--port", str(port)]
    return control_baseline(argv, port, "websockets.asyncio.server.serve + broadcast(), uvloop")


def picows_broadcast(port: int, workdir: Path) -> ServerSpec:
    """picows' asyncio server, one `WSTransport.send()` per subscriber, on uvloop."""
    argv = [sys.executable, "-m", "bench.picows_server", "--host", "127.0.0.1", "--port", str(port)]
    return control_baseline(argv, port, "picows ws_create_server, WSTransport.send() per subscriber, uvloop")


def node_ws(port: int, workdir: Path) -> ServerSpec:
    """Node's `ws` library (the load client's own): one `send()` per subscriber, the message serialised once."""
    node = shutil.which("node") or "node"
    argv = [node, str(ROOT / "bench" / "ws_node_server.mjs"), str(port)]
    return control_baseline(argv, port, "Node ws WebSocketServer, send() per subscriber")


TIDINGS_CHANNEL = "room:bench"
TIDINGS_HTTP_CONCURRENCY = 4


def tidings(port: int, workdir: Path) -> ServerSpec:
    """The project's server: `tidings serve`, token-authenticated subscribers, publishing over REST.

    The contract it follows is in bench/README.md (*The Tidings adapter*).
    """
    exe = str(VENV_BIN / "tidings")
    env = {
        "TIDINGS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/bench.db",
        "TIDINGS_SECRET_KEY": secrets.token_urlsafe(32),
        "TIDINGS_MAX_CONNECTIONS_PER_USER": "100000",
        "TIDINGS_LOG_LEVEL": "warning",  # as the baselines: no access log line per publish
    }
    argv = [exe, "serve", "--host", "127.0.0.1", "--port", str(port)]

    def cli(*args: str) -> str:
        done = subprocess.run(
            [exe, *args], env={**os.environ, **env}, cwd=workdir, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"tidings {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def client_config() -> JSONDict:
        cli("users", "create", "benchuser", "--password", "pw", "--role", "admin")
        lines = [ln.strip() for ln in cli("token", "benchuser").splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError("tidings token printed nothing")
        auth = {"Authorization": f"Bearer {lines[-1]}"}
        return {
            "url": f"ws://127.0.0.1:{port}/ws/authenticated",
            "headers": auth,
            "welcome": "connection_established",
            "subscribe": {"type": "subscribe", "subscription": TIDINGS_CHANNEL},
            "confirm": "subscription_confirmed",
            "trigger": {
                "mode": "http",
                "url": f"http://127.0.0.1:{port}/api/publish",
                "headers": auth,
                "channel": TIDINGS_CHANNEL,
                "concurrency": TIDINGS_HTTP_CONCURRENCY,
                "envelope": {"type": "publication", "channel": TIDINGS_CHANNEL},
            },
        }

    return ServerSpec(
        argv,
        client_config,
        env=env,
        note=f"POST /api/publish per message ({TIDINGS_HTTP_CONCURRENCY} in flight), sqlite",
        metrics_url=f"http://127.0.0.1:{port}/metrics",
    )


def tidings_variant(
    name: str, extra_env: dict[str, str], note: str, client_extra: JSONDict | None = None
) -> Callable[[int, Path], ServerSpec]:
    """:func:`tidings` with settings changed through the environment (a row of its own in the report), and the
    load client's configuration extended by ``client_extra``."""

    def adapter(port: int, workdir: Path) -> ServerSpec:
        spec = tidings(port, workdir)
        spec.env.update(extra_env)
        spec.note = f"{spec.note}; {note}"
        if client_extra:
            base = spec.client_config
            spec.client_config = lambda: {**base(), **client_extra}
        return spec

    adapter.__name__ = name
    return adapter


def tidings_before(port: int, workdir: Path) -> ServerSpec:
    """:func:`tidings` running an older checkout's code: ``TIDINGS_BENCH_BEFORE`` names its directory (e.g. a
    ``git worktree`` of the commit before a change), so a change is measured against the code it replaced in the
    same run, under the same harness. Only the ``tidings`` package comes from there; the libraries are this
    environment's."""
    before = os.environ.get("TIDINGS_BENCH_BEFORE")
    if not before or not (Path(before) / "src" / "tidings").is_dir():
        raise RuntimeError("tidings-before needs TIDINGS_BENCH_BEFORE=<a checkout of an older commit>")
    spec = tidings(port, workdir)
    spec.env["PYTHONPATH"] = str(Path(before) / "src")
    revision = subprocess.run(
        ["git", "-C", before, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    spec.note = f"{spec.note}; the code of {revision or before}"
    return spec


#: The write delay of the ``tidings-wd`` row (seconds).
BENCH_WRITE_DELAY = "0.005"

ADAPTERS: dict[str, Callable[[int, Path], ServerSpec]] = {
    "tidings": tidings,
    "tidings-before": tidings_before,
    "tidings-wd": tidings_variant(
        "tidings_wd", {"TIDINGS_WRITE_DELAY": BENCH_WRITE_DELAY}, f"TIDINGS_WRITE_DELAY={BENCH_WRITE_DELAY}"
    ),
    "tidings-wd0": tidings_variant("tidings_wd0", {"TIDINGS_WRITE_DELAY": "0"}, "TIDINGS_WRITE_DELAY=0"),
    "tidings-asgi": tidings_variant(
        "tidings_asgi", {"TIDINGS_FAST_TRANSPORT": "false"}, "TIDINGS_FAST_TRANSPORT=false (uvicorn's ws, ASGI send)"
    ),
    "tidings-fixed": tidings_variant(
        "tidings_fixed", {"TIDINGS_WRITE_WINDOW_MAX": "0"}, "TIDINGS_WRITE_WINDOW_MAX=0 (no adaptive window)"
    ),
    "tidings-deflate": tidings_variant(
        "tidings_deflate",
        {"TIDINGS_PER_MESSAGE_DEFLATE": "true"},
        "TIDINGS_PER_MESSAGE_DEFLATE=true, subscribers offer permessage-deflate",
        {"deflate": True},
    ),
    "naive": naive,
    "websockets": websockets_broadcast,
    "picows": picows_broadcast,
    "node-ws": node_ws,
}
