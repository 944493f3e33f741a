"""Fixtures of the crawler platform tests: databases (SQLite and PostgreSQL), servers, Celery workers, helpers.

Everything is real: ``tidings serve`` and ``tidings worker`` subprocesses, the local Redis (each test gets its own
broker key prefix and Celery queue), the local PostgreSQL (each test gets its own database), and Scrapy crawling
the sample site that the server itself serves at ``/sample-site/``.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, recv_json

PG_HOST = "127.0.0.1"
PG_USER = "postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
FAST_CRAWL = '{"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": false, "LOG_LEVEL": "WARNING"}'
SLOW_CRAWL = (
    '{"DOWNLOAD_DELAY": 0.4, "RANDOMIZE_DOWNLOAD_DELAY": false, "AUTOTHROTTLE_ENABLED": false,'
    ' "CONCURRENT_REQUESTS": 1, "LOG_LEVEL": "WARNING"}'
)


def _pg(*args: str) -> None:
    subprocess.run([*args, "-h", PG_HOST, "-U", PG_USER], check=True, capture_output=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """``{}`` (SQLite under the server's data dir) or ``TIDINGS_DATABASE_URL`` of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    name = f"tidings_test_platform_{secrets.token_hex(4)}"
    _pg("createdb", name)
    try:
        yield {"TIDINGS_DATABASE_URL": f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{name}"}
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _pg("dropdb", "--force", name)


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """A Redis broker with a key prefix and a Celery queue of this test's own; cleaned up afterwards."""
    tag = f"tp-{secrets.token_hex(4)}"
    yield {"TIDINGS_BROKER_URL": REDIS_URL, "TIDINGS_BROKER_PREFIX": tag, "TIDINGS_JOB_QUEUE": f"{tag}-jobs"}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [*client.scan_iter(f"{tag}*"), *client.scan_iter(f"_kombu.binding*.{tag}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Worker:
    """A ``tidings worker`` subprocess sharing a server's environment (database, broker, queue)."""

    def __init__(self, server: LiveServer, env: dict[str, str] | None = None) -> None:
        self.server = server
        self.env = {**server.env, **(env or {})}
        self.log_path = server.data_dir / f"worker-{secrets.token_hex(3)}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 120.0) -> Worker:
        """Start and wait until Celery says it is ready."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidings", "worker"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.server.data_dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-job without any chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        """The worker's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def worker_factory() -> Iterator[Any]:
    """``worker_factory(server, env=...)`` starts a worker; all are stopped at the end."""
    workers: list[Worker] = []

    def make(server: LiveServer, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(server, env)
        workers.append(worker)
        return worker.start()

    yield make
    for worker in workers:
        worker.stop()


def platform_server(server_factory: Any, env: dict[str, str]) -> LiveServer:
    """A running server with users ``ann`` and ``bob`` (the ``admin`` account exists from the first start)."""
    # 127.0.0.1:9 (a closed port) is an operator-allowed exception to the crawl egress policy: the tests that need
    # a target that cannot be reached use it, and see the real "Connection refused".
    base = {"TIDINGS_CRAWL_SETTINGS": FAST_CRAWL, "TIDINGS_CRAWL_ALLOWED_HOSTS": "127.0.0.1:9"}
    srv: LiveServer = server_factory(env={**base, **env}, start=False)
    srv.start(timeout=120)  # generous: the suite shares two cores with Scrapy children and other servers
    srv.create_user("ann")
    srv.create_user("bob")
    return srv


def headers(server: LiveServer, username: str) -> dict[str, str]:
    """Bearer headers for ``username``."""
    return {"Authorization": f"Bearer {server.token(username)}"}


def site_url(server: LiveServer) -> str:
    """The sample site served by the server itself."""
    return f"{server.url}/sample-site/"


def set_price_version(server: LiveServer, version: int) -> None:
    """Change the sample site's prices (the site re-reads the file on every request)."""
    (Path(server.data_dir) / "sample-site-price-version").write_text(str(version))


async def create_job(server: LiveServer, username: str, urls: list[str], spider: str = "listings") -> dict[str, Any]:
    """``POST /api/jobs``; returns the job."""
    async with httpx.AsyncClient(base_url=server.url, headers=headers(server, username)) as http:
        resp = await http.post("/api/jobs", json={"spider_name": spider, "target_urls": urls})
    assert resp.status_code == 201, resp.text
    job: dict[str, Any] = resp.json()
    return job


async def api_get(server: LiveServer, username: str, path: str, **params: Any) -> httpx.Response:
    """An authenticated GET."""
    async with httpx.AsyncClient(base_url=server.url, headers=headers(server, username)) as http:
        return await http.get(path, params=params)


@dataclass
class JobEvents:
    """What one client saw of one job (and the property notifications around it)."""

    job: list[dict[str, Any]] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The last job event (job_completed or job_failed)."""
        return self.job[-1]

    def named(self, event: str) -> list[dict[str, Any]]:
        """Job events of one kind."""
        return [e for e in self.job if e["event"] == event]


def _on(msg: dict[str, Any], channel: str) -> bool:
    """Whether ``msg`` was published on ``channel``: delivered there, or one connection's single copy of an event
    published on several channels at once (``copies`` lists them; see docs/protocol.md)."""
    return msg.get("channel") == channel or channel in (msg.get("copies") or ())


async def collect_job(
    ws: ClientConnection,
    job_id: int,
    channel: str,
    *,
    timeout: float = 120.0,
    until: tuple[str, ...] = (),
    backlog: list[dict[str, Any]] | None = None,
) -> JobEvents:
    """Read until ``job_id``'s final event on ``channel`` (or one of ``until``), sorting what arrives;
    ``backlog`` holds messages already read (by :func:`subscribe`), sorted first."""
    seen = JobEvents()
    final = ("job_completed", "job_failed", *until)
    deadline = time.monotonic() + timeout
    pending = list(backlog or ())
    while True:
        msg = pending.pop(0) if pending else await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if msg.get("type") == "property_notification" and _on(msg, "property_updates"):
            seen.properties.append(msg)
        elif msg.get("type") == "job_update" and msg.get("job_id") == job_id and _on(msg, channel):
            seen.job.append(msg)
            if msg["event"] in final:
                return seen
        else:
            seen.other.append(msg)


def check_job_stream(events: list[dict[str, Any]], total: int, every: int = 10) -> None:
    """job_started first, progress in increasing order at every ``every`` items, job_completed with ``total``."""
    names = [e["event"] for e in events]
    assert names[0] == "job_started", names
    assert names[-1] == "job_completed", names
    assert set(names[1:-1]) == {"job_progress"}, names
    progress = [e["items_scraped"] for e in events[1:-1]]
    assert progress == list(range(every, total + 1, every)), progress
    assert all(e["status"] == "running" for e in events[1:-1])
    assert events[-1]["total_items"] == total
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


async def subscribe(ws: ClientConnection, channel: str, backlog: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Subscribe and return the reply (``subscription_confirmed`` or ``subscription_error``); other messages
    read meanwhile are appended to ``backlog`` (dropped without one)."""
    import json

    await ws.send(json.dumps({"type": "subscribe", "subscription": channel}))
    while True:
        msg = await recv_json(ws, 10)
        if msg.get("type") in ("subscription_confirmed", "subscription_error") and msg.get("subscription") == channel:
            return msg
        if backlog is not None:
            backlog.append(msg)


__all__ = [
    "FAST_CRAWL",
    "SLOW_CRAWL",
    "JobEvents",
    "Worker",
    "api_get",
    "check_job_stream",
    "collect_job",
    "create_job",
    "headers",
    "platform_server",
    "set_price_version",
    "site_url",
    "subscribe",
]
