"""Cookie auth (``TIDINGS_TOKEN_COOKIE``) against a real ``tidings serve``: a WebSocket with only the cookie
connects, the same cookie with a cross-origin ``Origin`` is refused with 1008, and REST bearer auth reads it too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, expect_close, recv_json, ws_connect

pytestmark = pytest.mark.asyncio


def cookie(server: LiveServer, username: str = "ann") -> dict[str, str]:
    return {"Cookie": f"other=1; tidings_token={server.token(username)}"}


async def test_websocket_with_only_the_cookie_connects(server: LiveServer) -> None:
    async with await ws_connect(server.ws_url(), additional_headers=cookie(server)) as ws:
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established", hello
        assert hello["username"] == "ann", hello
    ws = await ws_connect(server.ws_url(), additional_headers={"Cookie": "tidings_token="})  # an empty cookie
    assert (await expect_close(ws))[0] == 1008


async def test_cookie_from_a_cross_origin_page_is_refused(server: LiveServer) -> None:
    # the same cookie with the hub's own Origin connects: the refusal below is the Origin check, not a bad token
    own = {**cookie(server), "Origin": server.url}
    async with await ws_connect(server.ws_url(), additional_headers=own) as ws:
        assert (await recv_json(ws))["type"] == "connection_established"
    headers = {**cookie(server), "Origin": "http://evil.example"}
    ws = await ws_connect(server.ws_url(), additional_headers=headers)
    code, reason = await expect_close(ws)
    assert code == 1008
    assert reason and reason.startswith("Origin not allowed"), reason


async def test_cookie_name_is_a_setting(server_factory: Any) -> None:
    srv: LiveServer = server_factory(env={"TIDINGS_TOKEN_COOKIE": "sess"})
    srv.create_user("ann")
    async with await ws_connect(srv.ws_url(), additional_headers={"Cookie": f"sess={srv.token('ann')}"}) as ws:
        assert (await recv_json(ws))["type"] == "connection_established"
    ws2 = await ws_connect(srv.ws_url(), additional_headers=cookie(srv))
    assert (await expect_close(ws2))[0] == 1008


async def test_rest_reads_the_cookie_but_not_from_another_origin(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        me = await client.get("/api/me", headers=cookie(server))
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "ann"
        cross = await client.get("/api/me", headers={**cookie(server), "Origin": "http://evil.example"})
        assert cross.status_code == 401, cross.text
        assert (await client.get("/api/me")).status_code == 401


async def test_asyncapi_lists_the_cookie_scheme(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        doc = (await client.get("/asyncapi.json")).json()
    scheme = doc["components"]["securitySchemes"]["cookie"]
    assert scheme["in"] == "cookie" and scheme["name"] == "tidings_token", scheme
