"""Logs: the token is redacted whatever the spelling of its query key, and no input (a path, a username) can
start a log line of its own."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, expect_close, recv_json, recv_until, ws_connect

EVIL_NAME = "mallory\r\nINFO:     127.0.0.1:1 - forged-user-line"


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    server.create_user("ann")
    server.create_user(EVIL_NAME)
    return server


async def wait_for_log(srv: LiveServer, needle: str, timeout: float = 5.0) -> str:
    for _ in range(int(timeout / 0.05)):
        log = srv.log()
        if needle in log:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} never logged:\n{srv.log()[-3000:]}")


@pytest.mark.parametrize("key", ["%74oken", "%74%6F%6B%65%6E", "tok%65n"])
async def test_an_encoded_token_key_is_accepted_and_redacted(srv: LiveServer, key: str) -> None:
    token = srv.token("ann")
    marker = f"m{abs(hash(key))}"
    async with websockets.connect(srv.ws_url(f"/ws/authenticated?{marker}=1&{key}={token}"), open_timeout=10) as ws:
        assert (await recv_json(ws))["type"] == "connection_established"  # the server took it as the token
    async with httpx.AsyncClient(base_url=srv.url) as http:
        # a refused request: successful GETs are logged at debug level, refusals at info
        assert (await http.get(f"/api/me?{marker}=2&{key}={token}")).status_code == 401
    log = await wait_for_log(srv, f"{marker}=2")
    assert f"{marker}=1" in log
    assert token not in log
    assert token.split(".")[1] not in log  # not even the payload part


async def test_a_websocket_path_cannot_forge_a_log_line(srv: LiveServer) -> None:
    path = "/ws/authenticated%0d%0aINFO:%20%20%20%20%20127.0.0.1:1%20-%20forged-path-line"
    try:  # /ws/{user_id} matches it: accepted, then closed (user id mismatch)
        ws = await ws_connect(srv.ws_url(path), srv.token("ann"))
    except websockets.InvalidStatus:
        pass
    else:
        await expect_close(ws)
    log = await wait_for_log(srv, "forged-path-line")
    assert not [line for line in log.splitlines() if re.match(r"INFO:\s+127\.0\.0\.1:1 - forged", line)]
    assert "\\r\\nINFO:" in log


async def test_a_username_cannot_forge_a_log_line(srv: LiveServer) -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    ws = await ws_connect(srv.ws_url(), srv.token(EVIL_NAME))
    try:
        assert (await recv_json(ws))["type"] == "connection_established"
        await ws.send(json.dumps({"type": "publish", "channel": "room:logs", "data": deep, "id": 1}))
        reply = await recv_until(ws, "error")
        assert reply["code"] == "bad_request"
    finally:
        await ws.close()
        await expect_close(ws)
    log = await wait_for_log(srv, "forged-user-line")
    assert not [line for line in log.splitlines() if re.match(r"INFO:\s+127\.0\.0\.1:1 - forged", line)]
    assert "mallory\\r\\nINFO:" in log
