"""Handshake deadline and connection caps (``tidings serve``): stalled handshakes are closed after
``TIDINGS_HANDSHAKE_TIMEOUT`` while /healthz and new WebSocket clients are still served; connections over
``TIDINGS_MAX_CONNECTIONS`` / ``TIDINGS_MAX_CONNECTIONS_PER_IP`` get HTTP 503 or WebSocket close 1013, and the
client address comes from ``X-Forwarded-For`` only when the peer is in ``TIDINGS_FORWARDED_ALLOW_IPS``."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, expect_close, recv_json, ws_connect
from tests.security.rawhttp import close_quietly, closed_by_server, open_raw, raw_socket, read_response, request_head

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # half a request head, never finished


@contextlib.contextmanager
def stalled(port: int, count: int, sources: list[str], partial_every: int = 2) -> Iterator[list[socket.socket]]:
    """``count`` raw TCP connections spread over ``sources``: every ``partial_every``-th sends half a request,
    the others nothing at all."""
    socks: list[socket.socket] = []
    try:
        for n in range(count):
            sock = raw_socket(port, sources[n % len(sources)])
            if partial_every and n % partial_every == 0:
                sock.sendall(PARTIAL)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def wait_all_closed(socks: list[socket.socket], timeout: float) -> tuple[int, float]:
    """Wait until the server has closed every socket; (how many it closed, seconds the last one took)."""
    started = time.monotonic()
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    last = 0.0
    deadline = started + timeout
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                selector.unregister(sock)
                closed += 1
                last = time.monotonic() - started
    selector.close()
    return closed, last


async def ws_from(srv: LiveServer, source: str, token: str, **kwargs: Any) -> Any:
    return await websockets.connect(
        srv.ws_url(), subprotocols=["bearer", token], local_addr=(source, 0), open_timeout=10, **kwargs
    )


async def assert_served(srv: LiveServer, username: str = "ann") -> None:
    """/healthz answers and a new WebSocket client gets through (a ping/pong on it)."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
    ws = await ws_connect(srv.ws_url(), srv.token(username))
    try:
        assert (await recv_json(ws, 10))["type"] == "connection_established"
        await ws.send('{"type": "ping"}')
        assert (await recv_json(ws, 10))["type"] == "pong"
    finally:
        await ws.close()


async def assert_refused_ws(ws: Any) -> None:
    code, reason = await expect_close(ws)
    assert (code, reason) == (1013, "Try again later")


@pytest.mark.slow
async def test_3000_stalled_handshakes_are_served_around_and_closed(server_factory: Any) -> None:
    """Default settings (10 s deadline, 10,000 per node, 256 per IP): 3,000 stalled sockets from 12 addresses."""
    srv: LiveServer = server_factory()
    srv.create_user("ann")
    sources = [f"127.0.0.{n}" for n in range(2, 14)]  # 250 each: under the per-IP cap
    opened = time.monotonic()
    with stalled(srv.port, 3000, sources) as socks:
        await assert_served(srv)
        served_after = time.monotonic() - opened
        closed, last = await asyncio.to_thread(wait_all_closed, socks, 25.0)
        assert closed == len(socks), f"{len(socks) - closed} stalled sockets still open after 25 s"
        total = time.monotonic() - opened
        assert total >= 9.0  # the deadline is 10 s: nothing was closed early
        await assert_served(srv)
    print(
        f"3000 stalled: a new client served {served_after:.1f}s after opening them; "
        f"all closed {total:.1f}s after (the last {last:.1f}s into the wait)"
    )


async def test_slow_requests_are_closed_after_the_deadline(server_factory: Any) -> None:
    """Half a head, a head with an unfinished body, a keep-alive connection's unfinished second request."""
    srv: LiveServer = server_factory(env={"TIDINGS_HANDSHAKE_TIMEOUT": "2"})
    readers: list[asyncio.StreamReader] = []
    writers: list[asyncio.StreamWriter] = []
    try:
        for data in (
            PARTIAL,
            request_head("POST", "/auth/token", {"Content-Length": "100", "Content-Type": "text/plain"}) + b"u",
        ):
            reader, writer = await open_raw(srv.port)
            writer.write(data)
            readers.append(reader)
            writers.append(writer)
        reader, writer = await open_raw(srv.port)
        writer.write(request_head("GET", "/healthz", {}))
        status, _, _ = await read_response(reader)
        assert status == 200
        writer.write(PARTIAL)  # the next request never completes
        readers.append(reader)
        writers.append(writer)
        started = time.monotonic()
        results = await asyncio.gather(*(closed_by_server(r, timeout=8) for r in readers))
        assert all(results), results
        assert time.monotonic() - started < 8
    finally:
        for writer in writers:
            close_quietly(writer)


@pytest.fixture(scope="module")
def capped(module_server_factory: Any) -> LiveServer:
    """2 connections per address, 40 per node."""
    srv: LiveServer = module_server_factory(
        env={"TIDINGS_MAX_CONNECTIONS_PER_IP": "2", "TIDINGS_MAX_CONNECTIONS": "40"}
    )
    for name in ("ann", "bob", "cid"):
        srv.create_user(name)
    return srv


async def test_per_ip_cap_refuses_with_503_and_1013(capped: LiveServer) -> None:
    srv = capped
    with stalled(srv.port, 2, ["127.0.0.2"]):
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")) as http:
            refused = await http.get(f"{srv.url}/healthz")
        assert refused.status_code == 503
        assert refused.headers.get("retry-after")
        await assert_refused_ws(await ws_from(srv, "127.0.0.2", srv.token("ann")))
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3")) as http:
            assert (await http.get(f"{srv.url}/healthz")).status_code == 200  # another address is served
        await assert_served(srv)  # so is a local client
    await asyncio.sleep(0.3)
    ws = await ws_from(srv, "127.0.0.2", srv.token("ann"))  # the stalled ones are gone: served again
    try:
        assert (await recv_json(ws))["type"] == "connection_established"
    finally:
        await ws.close()


async def test_node_cap_refuses_everyone_above_it(capped: LiveServer) -> None:
    srv = capped
    with stalled(srv.port, 40, [f"127.0.0.{n}" for n in range(2, 22)]):
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{srv.url}/healthz")).status_code == 503
        await assert_refused_ws(await ws_connect(srv.ws_url(), srv.token("ann")))
    await asyncio.sleep(0.3)
    await assert_served(srv)


async def test_forwarded_for_counts_only_from_trusted_proxies(capped: LiveServer) -> None:
    """127.0.0.1 is a trusted proxy (the default): its X-Forwarded-For address is capped; 127.0.0.2 is not one,
    so the address it claims is ignored and its own is capped."""
    srv = capped
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    kept = [await ws_connect(srv.ws_url(), srv.token(name), additional_headers=forwarded) for name in ("ann", "bob")]
    try:
        for ws in kept:
            assert (await recv_json(ws))["type"] == "connection_established"
        await assert_refused_ws(await ws_connect(srv.ws_url(), srv.token("cid"), additional_headers=forwarded))
        other = await ws_connect(srv.ws_url(), srv.token("cid"), additional_headers={"X-Forwarded-For": "203.0.113.8"})
        assert (await recv_json(other))["type"] == "connection_established"
        await other.close()
    finally:
        for ws in kept:
            await ws.close()
    with stalled(srv.port, 2, ["127.0.0.2"]):
        await asyncio.sleep(0.2)
        spoofed = await ws_from(srv, "127.0.0.2", srv.token("ann"), additional_headers={"X-Forwarded-For": "1.2.3.4"})
        await assert_refused_ws(spoofed)
