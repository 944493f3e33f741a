"""Shared fixtures: real ``tidings serve`` processes on ephemeral ports, users, tokens, WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tidings.auth import create_access_token
from tidings.db import Database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An ephemeral TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A ``tidings serve`` subprocess with its own data directory, database and secret key."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.secret = secrets.token_urlsafe(32)
        self.log_path = data_dir / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "TIDINGS_DATA_DIR": str(data_dir),
            "TIDINGS_SECRET_KEY": self.secret,
            "TIDINGS_LOG_LEVEL": "info",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws/authenticated") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def database_url(self) -> str:
        return self.env.get("TIDINGS_DATABASE_URL") or f"sqlite+aiosqlite:///{(self.data_dir / 'tidings.db').resolve()}"

    def start(self, timeout: float = 120.0) -> LiveServer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503):
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        if self._log is not None:
            self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self, username: str, ttl: int = 3600) -> str:
        return create_access_token(username, self.secret, ttl)

    def create_user(self, username: str, password: str = "pw", role: str = "user") -> int:
        """Create an account directly in the server's database; returns its id."""

        async def run() -> int:
            db = Database(self.database_url)
            try:
                await db.migrate()
                user = await db.create_user(username, password, role)
                return user.id
            finally:
                await db.dispose()

        return asyncio.run(run()) if not _loop_running() else _run_in_thread(run)

    def admin_headers(self, username: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(coro_fn: Any) -> Any:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers on demand: ``server_factory(env={...})``; all are stopped at the end."""
    servers: list[LiveServer] = []

    def make(env: dict[str, str] | None = None, start: bool = True, data_dir: Path | None = None) -> LiveServer:
        directory = data_dir or tmp_path / f"node{len(servers)}"
        directory.mkdir(parents=True, exist_ok=True)
        srv = LiveServer(directory, env)
        servers.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Like ``server_factory``, but the servers live for the whole test module (each start costs ~3 s)."""
    base = tmp_path_factory.mktemp("servers")
    servers: list[LiveServer] = []

    def make(env: dict[str, str] | None = None, start: bool = True, data_dir: Path | None = None) -> LiveServer:
        directory = data_dir or base / f"node{len(servers)}"
        directory.mkdir(parents=True, exist_ok=True)
        srv = LiveServer(directory, env)
        servers.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in servers:
        srv.stop()


async def expect_close(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """Read (and drop) messages until the server closes the connection; its close code and reason."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
    return ws.close_code, ws.close_reason


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    """One running server with an ``admin`` account (created at first start) and users ``ann`` and ``bob``."""
    srv: LiveServer = server_factory()
    srv.create_user("ann")
    srv.create_user("bob")
    return srv


async def ws_connect(url: str, token: str | None = None, **kwargs: Any) -> ClientConnection:
    """Open a WebSocket with the token in the ``bearer`` subprotocol pair (unless ``token`` is None)."""
    if token is not None:
        kwargs.setdefault("subprotocols", ["bearer", token])
    return await websockets.connect(url, open_timeout=10, max_size=None, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next message, decoded."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def recv_until(ws: ClientConnection, msg_type: str, timeout: float = 5.0) -> dict[str, Any]:
    """Skip messages until one of ``msg_type`` arrives."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg.get("type") == msg_type:
            return msg


@contextlib.asynccontextmanager
async def connected(server: LiveServer, username: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A connection of ``username`` past its ``connection_established`` message."""
    ws = await ws_connect(server.ws_url(), server.token(username), **kwargs)
    try:
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established", hello
        yield ws
    finally:
        await ws.close()


# Private Redis Cluster and Sentinel deployments (session-scoped, started on first use) and the broker URL
# parametrization of the multi-node Redis tests.
from tests.redis_topologies import broker_url, redis_cluster, redis_sentinel  # noqa: E402, F401
