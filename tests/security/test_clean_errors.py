"""Clean errors: integers the database cannot hold give 422, data nested too deep gives a bad_request reply
(REST and WebSocket) with a one-line log -- never a 500 or a traceback per message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, connected, recv_until

BIG = 2**63


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    server.create_user("ann")
    return server


def nested(depth: int) -> Any:
    data: Any = {"leaf": True}
    for _ in range(depth):
        data = {"a": data}
    return data


@pytest.mark.parametrize(
    "path",
    [
        f"/api/jobs/{BIG}",
        f"/api/properties/{BIG}",
        f"/api/jobs/{-BIG - 1}",
        f"/api/jobs?offset={BIG}",
        f"/api/properties?offset={10**20}",
        "/api/properties?offset=1e20",
        f"/api/jobs?limit=10&offset={2**64}",
    ],
)
async def test_out_of_range_integers_are_422(srv: LiveServer, path: str) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        response = await http.get(path, headers=srv.admin_headers())
    assert response.status_code == 422, (response.status_code, response.text)
    assert "Traceback" not in srv.log()


async def test_deeply_nested_rest_publish_is_a_client_error(srv: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        body = '{"channel": "room:deep", "data": ' + json.dumps(nested(500)) + "}"
        response = await http.post(
            "/api/publish", content=body, headers={**srv.admin_headers(), "Content-Type": "application/json"}
        )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "Traceback" not in srv.log()


async def test_deeply_nested_websocket_publish_is_a_bad_request(srv: LiveServer) -> None:
    before = len(srv.log().splitlines())
    async with connected(srv, "ann") as ws:
        for n in range(3):
            await ws.send(json.dumps({"type": "publish", "channel": "room:deep", "data": nested(500), "id": n}))
            reply = await recv_until(ws, "error")
            assert reply["code"] == "bad_request" and reply["id"] == n
        await ws.send(json.dumps({"type": "ping", "id": "after"}))
        assert (await recv_until(ws, "pong"))["id"] == "after"
    await asyncio.sleep(0.3)
    new = srv.log().splitlines()[before:]
    assert "Traceback" not in "\n".join(new)
    assert len([line for line in new if "encoded" in line]) == 3, new  # one line per refused message
