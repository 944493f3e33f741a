"""Clients: a 1008 "Too many connections" is retried after a long backoff instead of ending the client for
good (other 1008 reasons stay terminal), and 1013 "Try again later" is reconnect-with-backoff. The JavaScript
client's side of this is in src/tidings/web/client/test (reconnect.test.mjs, backoff.test.mjs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import LiveServer, connected
from tests.security.test_connection_limits import stalled
from tidings.client import TerminalError, TidingsClient, close_action

WAIT = 30.0


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory(
        env={"TIDINGS_MAX_CONNECTIONS_PER_USER": "1", "TIDINGS_MAX_CONNECTIONS": "4"}
    )
    server.create_user("ann")
    server.create_user("bob")
    return server


def test_close_actions() -> None:
    assert close_action(1008, "Too many connections") == "pause"
    assert close_action(1008, "Invalid token") == "terminal"
    assert close_action(1013, "Try again later") == "reconnect"


async def closes_seen(client: TidingsClient) -> list[tuple[int, str, bool]]:
    seen: list[tuple[int, str, bool]] = []
    client.on_event("disconnected", lambda e: seen.append((e["code"], e["reason"], e["will_reconnect"])))
    return seen


async def test_too_many_connections_is_retried(srv: LiveServer) -> None:
    client = TidingsClient(srv.ws_url(), srv.token("ann"), min_reconnect_delay=0.05, max_reconnect_delay=1.0)
    seen = await closes_seen(client)
    async with connected(srv, "ann"):  # ann's only allowed connection
        await client.connect(wait=False)
        for _ in range(int(WAIT / 0.05)):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen and seen[0][:2] == (1008, "Too many connections"), seen
        assert seen[0][2] is True  # will reconnect
        assert client.state.value == "reconnecting"
    try:
        for _ in range(int(WAIT / 0.05)):  # the slot is free: the client gets in on a later attempt
            if client.state.value == "connected":
                break
            await asyncio.sleep(0.05)
        assert client.state.value == "connected", seen
    finally:
        await client.close()


async def test_other_1008_reasons_stay_terminal(srv: LiveServer) -> None:
    client = TidingsClient(srv.ws_url(), "not-a-token", min_reconnect_delay=0.05)
    with pytest.raises(TerminalError) as caught:
        await asyncio.wait_for(client.connect(), WAIT)
    assert caught.value.code == 1008
    await client.close()


async def test_try_again_later_reconnects(srv: LiveServer) -> None:
    client = TidingsClient(srv.ws_url(), srv.token("bob"), min_reconnect_delay=0.05, max_reconnect_delay=0.5)
    seen = await closes_seen(client)
    with stalled(srv.port, 4, ["127.0.0.2", "127.0.0.3"]):  # the node's 4 connections are taken
        await asyncio.sleep(0.2)
        await client.connect(wait=False)
        for _ in range(int(WAIT / 0.05)):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen and seen[0] == (1013, "Try again later", True), seen
    try:
        for _ in range(int(WAIT / 0.05)):
            if client.state.value == "connected":
                break
            await asyncio.sleep(0.05)
        assert client.state.value == "connected", seen
    finally:
        await client.close()
