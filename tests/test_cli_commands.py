"""The command line as a user meets it: ``--url`` / ``TIDINGS_URL``, quiet ``publish``, ``users list``, passwords
from a hidden prompt or stdin, the Celery queue derived from the broker prefix, and ``make run PORT= HOST=``."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, LiveServer, _run_in_thread, free_port
from tidings.crawler.config import PlatformSettings
from tidings.db import Database
from tidings.settings import Settings


def tidings(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tidings ARGS`` with ``env`` (on top of a clean environment)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        env={**base, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env.get("TIDINGS_DATA_DIR"),
        check=False,
    )


def local_env(server: LiveServer) -> dict[str, str]:
    """What a command on the server's machine has: its data directory and key (to sign tokens locally)."""
    return {"TIDINGS_DATA_DIR": str(server.data_dir), "TIDINGS_SECRET_KEY": server.secret}


def password_ok(data_dir: Path, username: str, password: str) -> bool:
    async def check() -> bool:
        db = Database(Settings(data_dir=data_dir).resolved_database_url)
        try:
            return await db.check_password(username, password) is not None
        finally:
            await db.dispose()

    return bool(_run_in_thread(check))


# ---- --url and TIDINGS_URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["listen", "publish"])
def test_url_is_in_the_help_with_its_environment_default(tmp_path: Path, command: str) -> None:
    result = tidings(command, "--help", env={"TIDINGS_DATA_DIR": str(tmp_path), "TIDINGS_URL": "http://hub.test:9000"})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--url URL" in text
    assert "TIDINGS_URL" in text and "(now: http://hub.test:9000)" in text


def test_server_urls_from_one_value() -> None:
    from tidings.cli import server_urls

    assert server_urls("http://h:8080") == ("http://h:8080", "ws://h:8080/ws/authenticated")
    assert server_urls("https://h/") == ("https://h", "wss://h/ws/authenticated")
    assert server_urls("ws://h:1/ws/7") == ("http://h:1", "ws://h:1/ws/7")
    assert server_urls("wss://h") == ("https://h", "wss://h/ws/authenticated")


def test_bad_url_is_a_clear_error(tmp_path: Path) -> None:
    result = tidings("publish", "room:x", "{}", "--url", "127.0.0.1:8000", env={"TIDINGS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "error: --url must be http(s)://host:port" in result.stderr
    assert "Traceback" not in result.stderr


def test_publish_finds_the_server_through_tidings_url_and_prints_only_the_reply(server: LiveServer) -> None:
    env = {**local_env(server), "TIDINGS_URL": server.url, "TIDINGS_LOG_LEVEL": "info"}
    result = tidings("publish", "room:cli", '{"text": "hi"}', env=env)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["channel"] == "room:cli" and reply["offset"] == 1
    assert "HTTP Request" not in result.stderr  # httpx's INFO line per request is silenced
    assert result.stderr.strip() == ""


def test_listen_finds_the_server_through_tidings_url(server: LiveServer) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env = {**base, **local_env(server), "TIDINGS_URL": server.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidings", "listen", "room:cli", "--user", "ann"],
        env=env,
        cwd=server.data_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if '"event": "subscribed"' in line:
                break
        assert any('"event": "subscribed"' in line for line in seen), seen
        publish = tidings(
            "publish", "room:cli", '{"text": "to the listener"}', env={**local_env(server), "TIDINGS_URL": server.url}
        )
        assert publish.returncode == 0, publish.stderr
        event = json.loads(proc.stdout.readline())
        while event["type"] != "publication":  # ann's own join comes first
            event = json.loads(proc.stdout.readline())
        assert event["channel"] == "room:cli" and event["data"] == {"text": "to the listener"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- users list and passwords ----------------------------------------------------------------------------------


def test_users_list(tmp_path: Path) -> None:
    env = {"TIDINGS_DATA_DIR": str(tmp_path)}
    assert tidings("users", "create", "ann", "--password-stdin", env=env, stdin="pw-ann\n").returncode == 0
    created = tidings("users", "create", "boss", "--role", "admin", "--password-stdin", env=env, stdin="pw\n")
    assert created.returncode == 0, created.stderr
    table = tidings("users", "list", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "USERNAME", "ROLE", "ACTIVE", "CREATED"]
    assert lines[1].split()[:4] == ["1", "ann", "user", "yes"]
    assert lines[2].split()[:4] == ["2", "boss", "admin", "yes"]
    rows = json.loads(tidings("users", "list", "--json", env=env).stdout)
    assert [(r["user_id"], r["username"], r["role"], r["is_active"]) for r in rows] == [
        (1, "ann", "user", True),
        (2, "boss", "admin", True),
    ]
    assert all("password" not in key for row in rows for key in row)


def test_password_from_stdin(tmp_path: Path) -> None:
    env = {"TIDINGS_DATA_DIR": str(tmp_path)}
    result = tidings("users", "create", "ann", "--password-stdin", env=env, stdin="s3cret with spaces\n")
    assert result.returncode == 0, result.stderr
    assert password_ok(tmp_path, "ann", "s3cret with spaces")
    result = tidings("users", "passwd", "ann", "--password-stdin", env=env, stdin="n3w\n")
    assert result.returncode == 0, result.stderr
    assert password_ok(tmp_path, "ann", "n3w") and not password_ok(tmp_path, "ann", "s3cret with spaces")
    empty = tidings("users", "passwd", "ann", "--password-stdin", env=env, stdin="")
    assert empty.returncode == 1 and "stdin held no password" in empty.stderr


@pytest.mark.parametrize("command", ["create", "passwd"])
def test_no_password_without_a_terminal_is_a_clear_error(tmp_path: Path, command: str) -> None:
    result = tidings("users", command, "ann", env={"TIDINGS_DATA_DIR": str(tmp_path)}, stdin="")
    assert result.returncode == 1
    assert "no password given: use --password-stdin" in result.stderr
    assert "Traceback" not in result.stderr


def _run_in_pty(argv: list[str], env: dict[str, str], answers: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, typing each answer after the next prompt; (exit status, all output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty, so getpass() turns echo off on it
        os.chdir(env["TIDINGS_DATA_DIR"])
        os.execve(argv[0], argv, env)
    output = b""
    prompts = (b"Password for", b"Repeat the password:")
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
                shown = sum(output.count(p) for p in prompts)
                # one answer per prompt, typed once the prompt is out (getpass flushes input typed before it)
                if answered < min(shown, len(answers)) and output.rstrip().endswith(b":"):
                    os.write(fd, answers[answered].encode() + b"\n")
                    answered += 1
        else:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_hidden_password_prompt(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env = {**base, "TIDINGS_DATA_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "tidings", "users", "create", "ann"]
    code, output = _run_in_pty(argv, env, ["typed-secret", "typed-secret"])
    assert code == 0, output
    assert "Password for ann:" in output and "Repeat the password:" in output
    assert "typed-secret" not in output  # not echoed
    assert password_ok(tmp_path, "ann", "typed-secret")
    code, output = _run_in_pty([*argv[:-2], "passwd", "ann"], env, ["one", "two"])
    assert code == 1 and "the passwords do not match" in output
    assert password_ok(tmp_path, "ann", "typed-secret")


def test_password_option_documented_as_visible(tmp_path: Path) -> None:
    result = tidings("users", "create", "--help", env={"TIDINGS_DATA_DIR": str(tmp_path)})
    text = " ".join(result.stdout.split())
    assert "--password-stdin" in text
    assert "visible to other local users" in text


# ---- the Celery queue follows the broker prefix ------------------------------------------------------------------


def test_job_queue_is_derived_from_the_broker_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TIDINGS_"):
            monkeypatch.delenv(key)
    assert PlatformSettings().queue_name(Settings()) == "tidings.jobs"
    monkeypatch.setenv("TIDINGS_BROKER_PREFIX", "staging")
    assert PlatformSettings().queue_name(Settings()) == "staging.jobs"
    monkeypatch.setenv("TIDINGS_JOB_QUEUE", "explicit")
    assert PlatformSettings().queue_name(Settings()) == "explicit"


def test_celery_default_queue_follows_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidings.crawler.celery_app import create_celery

    settings = Settings(broker_url="redis://127.0.0.1:6379/0", broker_prefix="blue")
    app = create_celery(settings, PlatformSettings(job_queue=""))
    assert app.conf.task_default_queue == "blue.jobs"


# ---- make run PORT= HOST= ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_make_run_listens_on_port_and_host(tmp_path: Path) -> None:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIDINGS_", "MAKE"))}
    env: dict[str, Any] = {**base, "TIDINGS_DATA_DIR": str(tmp_path)}
    log = (tmp_path / "make-run.log").open("wb")
    proc = subprocess.Popen(
        ["make", "-C", str(ROOT), "run", f"PORT={port}", "HOST=0.0.0.0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status == 200, (tmp_path / "make-run.log").read_text()
        listening = (tmp_path / "make-run.log").read_text()
        assert f"0.0.0.0:{port}" in listening or f"--host 0.0.0.0 --port {port}" in listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_readme_says_how_to_run_on_another_port() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run PORT=8080 HOST=0.0.0.0" in readme
