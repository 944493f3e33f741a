"""Private Redis deployments for the broker tests: a 3-master/3-replica Redis Cluster and a Sentinel set-up.

Both are session-scoped fixtures (started on first use, stopped at the end): real ``redis-server`` processes on
free localhost ports, the cluster joined with ``redis-cli --cluster create ... --cluster-replicas 1
--cluster-yes``, the Sentinel set-up one master, one replica and three Sentinels (quorum 2). Failover is quick
(``cluster-node-timeout`` 1.5 s, ``down-after-milliseconds`` 1 s) so that tests can ``kill -9`` a master.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    """A free localhost port (as tests.conftest.free_port; not imported, conftest imports this module)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


__all__ = ["ClusterDeployment", "SentinelDeployment", "broker_url", "redis_cluster", "redis_sentinel"]

SERVICE = "tidings-test"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is needed (Debian: redis-server, redis-tools)")
    return path


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = random.randrange(20000, 55000)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        return port


def _wait_ping(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return
            assert proc.poll() is None, f"redis on port {port} exited"
            assert time.monotonic() < deadline, f"redis on port {port} did not start"
            time.sleep(0.05)
    finally:
        client.close()


class _Servers:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.argv: dict[int, list[str]] = {}

    def spawn(self, port: int, args: list[str]) -> None:
        folder = self.workdir / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.argv[port] = args
        log = (folder / "log").open("ab")
        self.procs[port] = subprocess.Popen(args, cwd=folder, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, port: int) -> None:
        """``kill -9`` the server on ``port``."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed server again with its arguments (and its data directory)."""
        self.spawn(port, self.argv[port])
        _wait_ping(port, self.procs[port])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


class ClusterDeployment(_Servers):
    """Six ``redis-server --cluster-enabled yes``: three masters, three replicas."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ports = [_cluster_port() for _ in range(6)]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL listing two startup nodes."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def start(self) -> None:
        server = _binary("redis-server")
        cli = _binary("redis-cli")
        for port in self.ports:
            self.spawn(
                port,
                [
                    server,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "1500",
                    "--cluster-require-full-coverage", "no",
                    "--save", "", "--appendonly", "no",
                ],
            )  # fmt: skip
        for port in self.ports:
            _wait_ping(port, self.procs[port])
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()

    def info(self, port: int, section: str) -> dict[str, object]:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def masters(self) -> list[int]:
        """Ports of the masters, as the live servers see themselves."""
        out = []
        for port, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(redis.RedisError):
                    if self.info(port, "replication")["role"] == "master":
                        out.append(port)
        return sorted(out)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every live server reports ``cluster_state:ok`` and there are three masters."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    continue
                client = redis.Redis(port=port, socket_timeout=2)
                try:
                    states.append(b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"))
                except redis.RedisError:
                    states.append(False)
                finally:
                    client.close()
            if all(states) and len(self.masters()) == 3:
                return
            assert time.monotonic() < deadline, "the test cluster did not become healthy"
            time.sleep(0.2)

    def master_of(self, key: str) -> int:
        """Port of the master owning ``key``'s slot."""
        client = redis.Redis(port=self.masters()[0], socket_timeout=2)
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        finally:
            client.close()
        raise AssertionError(f"no master for slot of {key}")


class SentinelDeployment(_Servers):
    """A master, its replica and three Sentinels monitoring them as :data:`SERVICE`."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        """A ``redis+sentinel://`` URL listing the three Sentinels."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def start(self) -> None:
        server = _binary("redis-server")
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.spawn(self.master_port, [server, "--port", str(self.master_port), *base])
        _wait_ping(self.master_port, self.procs[self.master_port])
        self.spawn(
            self.replica_port,
            [server, "--port", str(self.replica_port), *base, "--replicaof", "127.0.0.1", str(self.master_port)],
        )
        _wait_ping(self.replica_port, self.procs[self.replica_port])
        for port in self.sentinel_ports:
            folder = self.workdir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.spawn(port, [server, str(folder / "sentinel.conf"), "--sentinel"])
        for port in self.sentinel_ports:
            _wait_ping(port, self.procs[port])
        self.wait_healthy()

    def current_master(self) -> int:
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)
        try:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(port)
        finally:
            client.close()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every Sentinel knows the master, one replica and the two other Sentinels."""
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for port in self.sentinel_ports:
                client = redis.Redis(port=port, socket_timeout=2)
                try:
                    fields = client.sentinel_master(SERVICE)
                    ok = ok and int(fields["num-other-sentinels"]) == 2 and int(fields["num-slaves"]) >= 1
                    ok = ok and bool(fields["is_master"]) and not fields["is_odown"] and not fields["is_sdown"]
                except (redis.RedisError, KeyError):
                    ok = False
                finally:
                    client.close()
            if ok:
                return
            assert time.monotonic() < deadline, "the Sentinel set-up did not become healthy"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """A 3-master/3-replica Redis Cluster for the whole session."""
    deployment = ClusterDeployment(tmp_path_factory.mktemp("redis-cluster"))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop_all()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """A master, a replica and three Sentinels for the whole session."""
    deployment = SentinelDeployment(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop_all()


@pytest.fixture(
    scope="module",
    params=[
        "redis",
        pytest.param("cluster", marks=pytest.mark.slow),
        pytest.param("sentinel", marks=pytest.mark.slow),
    ],
)
def broker_url(request: pytest.FixtureRequest) -> str:
    """The broker URL of each deployment in turn: the machine's Redis, the test cluster, the Sentinel set-up."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    if request.param == "sentinel":
        return str(request.getfixturevalue("redis_sentinel").url)
    return "redis://127.0.0.1:6379/0"
