"""The built wheel: its contents, and a host app running on it in a fresh venv without any extra."""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = str(UV) if UV.exists() else shutil.which("uv")
    assert uv, "uv is needed to build the wheel (make install provides it)"
    # sdist first, then the wheel from the unpacked sdist: nothing stale from a build/ directory gets in
    subprocess.run([uv, "build", "--out-dir", str(out), str(ROOT)], check=True, capture_output=True)
    (found,) = out.glob("tidings-*.whl")
    return found


def test_the_wheel_holds_the_package_and_no_tests(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(zf.read(meta_name))
    assert not [n for n in names if n.startswith("tests/") or "/test/" in n or "test-support" in n or "/tests/" in n]
    assert "tidings/web/client/tidings.js" in names and "tidings/py.typed" in names
    assert "tidings/migrations/env.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["License-Expression"] == "MIT"
    assert "Framework :: FastAPI" in meta.get_all("Classifier", [])
    requires = meta.get_all("Requires-Dist", [])
    core = sorted(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip() for r in requires if "extra ==" not in r)
    assert core == ["fastapi", "orjson", "prometheus-client", "pydantic-settings", "pyjwt", "uvicorn", "websockets"]
    extras = set(meta.get_all("Provides-Extra", []))
    assert {"redis", "users", "platform", "all"} <= extras
    assert not [r for r in requires if r.startswith("psycopg")]
    assert [r for r in requires if r.startswith("wsproto")] == ['wsproto>=1.2; extra == "dev"']  # tests only


HOST_APP = '''
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import HTTPConnection
from tidings import Namespace, Tidings, UserInfo

class Order(BaseModel):
    id: str
    status: str

async def authenticate(conn: HTTPConnection) -> UserInfo | None:
    name = conn.headers.get("x-user") or conn.query_params.get("user")
    return None if not name else UserInfo(id=f"id-{name}", username=name)

hub = Tidings(authenticate=authenticate)
hub.namespace("orders", Namespace(model=Order))
app = FastAPI(lifespan=hub.lifespan)
app.include_router(hub.router)

@app.post("/ship/{order_id}")
async def ship(order_id: str) -> dict:
    pub = await hub.publish(f"orders:{order_id}", {"id": order_id, "status": "shipped"})
    return {"offset": pub.offset}
'''

CLIENT = '''
import asyncio, json, sys, urllib.request
import websockets

async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/authenticated?user=ann") as ws:
        hello = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "subscribe", "subscription": "orders:7"}))
        confirmed = json.loads(await ws.recv())
        req = urllib.request.Request(f"http://127.0.0.1:{port}/ship/7", method="POST")
        urllib.request.urlopen(req).read()
        pub = json.loads(await ws.recv())
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/authenticated") as ws:
            await ws.recv()
        refused = None
    except websockets.ConnectionClosed as exc:
        refused = [exc.rcvd.code, exc.rcvd.reason]
    print(json.dumps({"hello": hello, "confirmed": confirmed, "pub": pub, "refused": refused}))

asyncio.run(main(int(sys.argv[1])))
'''


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("venv") / "v"
    uv = str(UV) if UV.exists() else shutil.which("uv")
    assert uv
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheel)], check=True)
    yield venv


def test_a_host_app_runs_on_the_wheel_without_extras(fresh_venv: Path, tmp_path: Path) -> None:
    python = str(fresh_venv / "bin" / "python")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)} if listed.returncode == 0 else set()
    frozen = subprocess.run([str(UV), "pip", "freeze", "--python", python], capture_output=True, text=True).stdout
    names |= {line.split("==")[0].lower() for line in frozen.splitlines()}
    assert not names & {"sqlalchemy", "alembic", "redis", "celery", "scrapy", "pwdlib", "psycopg", "asyncpg"}
    (tmp_path / "hostapp.py").write_text(HOST_APP)
    (tmp_path / "client.py").write_text(CLIENT)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDINGS_", "PYTHONPATH"))}
    server = subprocess.Popen(
        [python, "-m", "uvicorn", "hostapp:app", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        out = None
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            run = subprocess.run(
                [python, "client.py", str(port)], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            if run.returncode == 0:
                out = json.loads(run.stdout)
                break
            time.sleep(0.3)
        assert out is not None, run.stderr
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0].decode()
    assert out["hello"]["type"] == "connection_established" and out["hello"]["user_id"] == "id-ann"
    assert "user:id-ann" in out["hello"]["channels"]
    assert out["confirmed"]["type"] == "subscription_confirmed"
    assert out["pub"]["channel"] == "orders:7" and out["pub"]["data"] == {"id": "7", "status": "shipped"}
    assert out["refused"] == [1008, "Authentication required"]
    assert {p.name for p in tmp_path.iterdir()} - {"__pycache__"} == {"client.py", "hostapp.py"}  # no file written
    assert "Traceback" not in output and "password" not in output
