"""Settings from ``TIDINGS_*`` variables, the ``tidings`` command, and what a first start does."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from tests.conftest import LiveServer, _run_in_thread, expect_close, recv_json, ws_connect
from tidings.auth import create_access_token
from tidings.broker import MemoryBroker, create_broker
from tidings.cli import main
from tidings.db import Database
from tidings.settings import Settings

# ---- settings ------------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("TIDINGS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.secret_key == "" and s.database_url == ""
    assert s.broker_url == "memory://"
    assert s.allowed_origins == []
    assert s.max_connections_per_user == 5
    assert s.max_message_bytes == 65536
    assert s.idle_timeout == 300
    assert s.send_queue_max == 1024
    assert s.data_dir == Path("var")


def test_settings_from_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "TIDINGS_DATA_DIR": str(tmp_path / "data"),
        "TIDINGS_SECRET_KEY": "from-env",
        "TIDINGS_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:5432/tidings",
        "TIDINGS_BROKER_URL": "redis://127.0.0.1:6379/3",
        "TIDINGS_ALLOWED_ORIGINS": " http://a.example, https://b.example/ ,,",
        "TIDINGS_MAX_CONNECTIONS_PER_USER": "7",
        "TIDINGS_MAX_MESSAGE_BYTES": "1024",
        "TIDINGS_IDLE_TIMEOUT": "2.5",
        "TIDINGS_SEND_QUEUE_MAX": "10",
    }
    for key, value in env.items():
        clean_env.setenv(key, value)
    s = Settings()
    assert s.data_dir == tmp_path / "data"
    assert s.secret_key == "from-env" and s.resolved_secret_key == "from-env"
    assert not (tmp_path / "data" / "secret_key").exists()  # an explicit key is never written down
    assert s.database_url == s.resolved_database_url == "postgresql+asyncpg://u:p@127.0.0.1:5432/tidings"
    assert s.broker_url == "redis://127.0.0.1:6379/3"
    assert s.allowed_origins == ["http://a.example", "https://b.example"]
    assert (s.max_connections_per_user, s.max_message_bytes, s.idle_timeout, s.send_queue_max) == (7, 1024, 2.5, 10)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TIDINGS_MAX_CONNECTIONS_PER_USER", "0"),
        ("TIDINGS_MAX_CONNECTIONS_PER_USER", "many"),
        ("TIDINGS_MAX_MESSAGE_BYTES", "10"),
        ("TIDINGS_MAX_MESSAGE_BYTES", "1.5"),
        ("TIDINGS_IDLE_TIMEOUT", "0"),
        ("TIDINGS_IDLE_TIMEOUT", "-1"),
        ("TIDINGS_SEND_QUEUE_MAX", "0"),
        ("TIDINGS_TOKEN_TTL", "1"),
    ],
)
def test_settings_refuse_bad_values(clean_env: pytest.MonkeyPatch, key: str, value: str) -> None:
    clean_env.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings()


def test_default_database_is_sqlite_under_the_data_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    assert s.resolved_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'd' / 'tidings.db').resolve()}"


def test_random_secret_key_is_persisted(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path / "d").resolved_secret_key
    path = tmp_path / "d" / "secret_key"
    assert len(first) >= 32 and path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path / "d").resolved_secret_key == first
    assert Settings(data_dir=tmp_path / "other").resolved_secret_key != first


def test_broker_from_url() -> None:
    assert isinstance(create_broker("memory://"), MemoryBroker)
    with pytest.raises(ValueError, match="Unsupported broker URL"):
        create_broker("kafka://127.0.0.1")


# ---- the command ---------------------------------------------------------------------------------------------


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return {**env, "TIDINGS_DATA_DIR": str(data_dir), "TIDINGS_LOG_LEVEL": "warning", **extra}


def tidings(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process (fast); the live test below runs the real subprocess."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_users_create_and_token(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clean_env.setenv("TIDINGS_DATA_DIR", str(tmp_path))
    code, out, err = run_cli(clean_env, capsys, "users", "create", "ann", "--password", "pw1")
    assert code == 0, err
    assert re.fullmatch(r"\d+\n", out)
    code, out2, _ = run_cli(clean_env, capsys, "users", "create", "boss", "--password", "pw2", "--role", "admin")
    assert code == 0 and int(out2) == int(out) + 1
    code, out, err = run_cli(clean_env, capsys, "users", "create", "ann", "--password", "other")
    assert code != 0 and out == ""
    assert "already exists" in err and "ann" in err
    code, out, err = run_cli(clean_env, capsys, "token", "boss")
    assert code == 0, err
    secret = (tmp_path / "secret_key").read_text()
    claims = jwt.decode(out.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "boss" and "exp" in claims
    code, out, _ = run_cli(clean_env, capsys, "token", "boss", "--ttl", "120")
    claims = jwt.decode(out.strip(), secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120
    code, out, err = run_cli(clean_env, capsys, "token", "nobody")
    assert code != 0 and out == ""
    assert "nobody" in err


def test_users_passwd(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    clean_env.setenv("TIDINGS_DATA_DIR", str(tmp_path))
    assert run_cli(clean_env, capsys, "users", "create", "ann", "--password", "old")[0] == 0
    code, out, err = run_cli(clean_env, capsys, "users", "passwd", "ann", "--password", "new")
    assert (code, out) == (0, ""), err

    async def check(password: str) -> bool:
        db = Database(Settings().resolved_database_url)
        try:
            return await db.check_password("ann", password) is not None
        finally:
            await db.dispose()

    assert _run_in_thread(lambda: check("new")) is True
    assert _run_in_thread(lambda: check("old")) is False
    code, _, err = run_cli(clean_env, capsys, "users", "passwd", "nobody", "--password", "x")
    assert code != 0 and "nobody" in err


@pytest.mark.parametrize(
    "args",
    [
        ("users", "create", "x", "--password", "p", "--role", "root"),
        ("users", "create", "x", "--password", "p", "--password-stdin"),
        ("users", "create", "--password", "p"),
        ("users",),
        ("token",),
        ("frobnicate",),
        (),
    ],
)
def test_usage_errors(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    clean_env.setenv("TIDINGS_DATA_DIR", str(tmp_path))
    code, _, err = run_cli(clean_env, capsys, *args)
    assert code == 2
    assert "usage:" in err
    assert not (tmp_path / "tidings.db").exists()


def test_database_url_is_honoured(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db_file = tmp_path / "elsewhere" / "custom.db"
    clean_env.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("TIDINGS_DATABASE_URL", f"sqlite+aiosqlite:///{db_file}")
    code, _, err = run_cli(clean_env, capsys, "users", "create", "ann", "--password", "pw")
    assert code == 0, err
    assert db_file.exists()
    assert not (tmp_path / "data" / "tidings.db").exists()
    assert run_cli(clean_env, capsys, "token", "ann")[0] == 0
    clean_env.delenv("TIDINGS_DATABASE_URL")
    assert run_cli(clean_env, capsys, "token", "ann")[0] != 0  # the default database has no ann


# ---- first start, restarts and the persisted key -----------------------------------------------------------

BANNER = re.compile(r"Created the administrator account: username '(\w+)', password '([^']+)'")


async def test_first_start_creates_an_admin_and_the_key_survives_restarts(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "shared"
    data.mkdir()
    first: LiveServer = server_factory(env={"TIDINGS_SECRET_KEY": ""}, data_dir=data)
    match = BANNER.search(first.log())
    assert match, first.log()
    assert match.group(1) == "admin"
    password = match.group(2)
    assert len(password) >= 12
    async with httpx.AsyncClient(base_url=first.url) as http:
        resp = await http.post("/auth/token", data={"username": "admin", "password": password})
        assert resp.status_code == 200, resp.text
        admin_token = resp.json()["access_token"]
        bad = await http.post("/auth/token", data={"username": "admin", "password": password + "x"})
        assert bad.status_code == 401
    # the command works against the running server's data directory and key
    env = cli_env(data)
    assert "tidings users passwd" in first.log()  # the banner's advice is a real command (tested above)
    created = tidings(env, "users", "create", "ann", "--password", "pw")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"\d+\n", created.stdout)
    cli_token = tidings(env, "token", "ann").stdout.strip()
    ws = await ws_connect(first.ws_url(f"/ws/{int(created.stdout)}"), cli_token)
    try:
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established" and hello["username"] == "ann"
    finally:
        await ws.close()
    expired = create_access_token("ann", (data / "secret_key").read_text(), ttl=-5)  # the key on disk is in use
    ws = await ws_connect(first.ws_url(), expired)
    try:
        assert await expect_close(ws) == (1008, "Token expired")
    finally:
        await ws.close()
    first.stop()

    second: LiveServer = server_factory(env={"TIDINGS_SECRET_KEY": ""}, data_dir=data)
    assert second.port != first.port
    assert "Created the administrator account" not in second.log()
    assert "password" not in second.log().lower()
    async with httpx.AsyncClient(base_url=second.url) as http:  # tokens issued before the restart still work
        me = await http.get("/api/me", headers={"Authorization": f"Bearer {admin_token}"})
        assert me.status_code == 200 and me.json()["role"] == "admin"
        resp = await http.post("/auth/token", data={"username": "admin", "password": password})
        assert resp.status_code == 200
    for token in (admin_token, cli_token):
        ws = await ws_connect(second.ws_url(), token)
        try:
            assert (await recv_json(ws))["type"] == "connection_established"
        finally:
            await ws.close()


_STUBBORN = """
import asyncio, sys
from tidings.cli import _run_interruptible

async def stubborn() -> int:
    async def ignore_cancel() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # a task that never ends (what once kept `tidings listen` from exiting)
    asyncio.get_running_loop().create_task(ignore_cancel())
    print("ready", flush=True)
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
sys.exit(_run_interruptible(stubborn(), grace=0.5))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_command_exits_even_if_its_tasks_do_not_end(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _STUBBORN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
