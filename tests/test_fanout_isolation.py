"""The quality bar: one client that never reads does not delay anyone else.

50 readers receive 5,000 publications each, all of them, in order, while a client that completed the handshake
and subscribed then stopped reading (a raw socket with a tiny receive buffer) sits on the same channel. The
stalled client is disconnected as a slow consumer (4000) once its bounded queue overflows; nobody else is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from tests.conftest import LiveServer, recv_json, recv_until, ws_connect

READERS = 50
MESSAGES = 5_000
QUEUE_MAX = 64
WINDOW = 16  # publishes in flight from the publishing client
CHANNEL = "room:fanout"
PADDING = "p" * 1000  # ~5.5 MB to each subscriber: more than the kernel buffers of the stalled socket hold


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory(
        env={
            "TIDINGS_SEND_QUEUE_MAX": str(QUEUE_MAX),
            "TIDINGS_MAX_CONNECTIONS_PER_USER": "10",
            "TIDINGS_RATE_LIMIT_PER_SECOND": "1000000",
            "TIDINGS_RATE_LIMIT_BURST": "1000000",
            # 5 MB published as fast as the node fans out: above the default per-user publish byte rate
            "TIDINGS_PUBLISH_BYTES_PER_SECOND": str(1 << 30),
        }
    )
    for name in ("r0", "r1", "r2", "r3", "r4", "stall", "pub"):
        server.create_user(name)
    return server


class StalledClient:
    """A WebSocket client on a raw blocking socket with a minimal receive buffer; it reads only when told to."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: caps the TCP window
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.eof = False
        self._partial = ""

    def open(self) -> None:
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", self.port))
        self.sock.sendall(
            self.ws.send(
                Request(host=f"127.0.0.1:{self.port}", target="/ws/authenticated", subprotocols=["bearer", self.token])
            )
        )
        self.read_until(lambda: any(m.get("type") == "connection_established" for m in self.messages))

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=json.dumps(message))))

    def _feed(self, data: bytes) -> None:
        self.ws.receive_data(data if data else None)
        for event in self.ws.events():
            if not data:  # EOF: wsproto reports an abnormal closure (1006) of its own, not a close frame
                continue
            if isinstance(event, TextMessage):
                self._partial += event.data
                if event.message_finished:
                    self.messages.append(json.loads(self._partial))
                    self._partial = ""
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
            elif isinstance(event, Ping):
                with contextlib.suppress(OSError):
                    self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, AcceptConnection):
                assert event.subprotocol == "bearer"

    def read_until(self, done: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            self._feed(data)
            if not data:
                self.eof = True
                return

    def drain(self, timeout: float = 30.0) -> None:
        """Read everything until the server closes (close frame, EOF or reset) or ``timeout`` passes."""
        with contextlib.suppress(ConnectionResetError, TimeoutError, socket.timeout):
            self.read_until(lambda: self.close_code is not None or self.eof, timeout)

    def close(self) -> None:
        self.sock.close()


async def metrics(srv: LiveServer) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        text = (await http.get("/metrics")).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


async def subscribe(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "subscribe", "subscription": CHANNEL, "id": "sub"}))
    reply = await recv_until(ws, "subscription_confirmed", timeout=30)
    assert reply["subscription"] == CHANNEL


async def read_publications(ws: ClientConnection) -> tuple[list[int], list[dict[str, Any]]]:
    """Every publication's sequence number until the last one arrives, and the other events on the channel."""
    seen: list[int] = []
    events: list[dict[str, Any]] = []
    while len(seen) < MESSAGES:
        msg = json.loads(await ws.recv())
        if msg["type"] == "publication":
            seen.append(msg["data"]["body"]["n"])
        else:
            events.append(msg)
    return seen, events


async def publish_all(ws: ClientConnection) -> list[int]:
    """Publish MESSAGES messages, WINDOW in flight at a time; the acknowledged offsets."""
    offsets: list[int] = []
    for start in range(0, MESSAGES, WINDOW):
        batch = range(start, min(start + WINDOW, MESSAGES))
        for n in batch:
            await ws.send(
                json.dumps({"type": "publish", "channel": CHANNEL, "data": {"n": n, "pad": PADDING}, "id": n})
            )
        for n in batch:
            ack = await recv_until(ws, "publish_ack", timeout=30)
            assert ack["id"] == n
            offsets.append(ack["offset"])
    return offsets


async def test_a_stalled_client_does_not_delay_fifty_readers(srv: LiveServer) -> None:
    stalled = StalledClient(srv.port, srv.token("stall"))
    await asyncio.to_thread(stalled.open)
    stalled.send({"type": "subscribe", "subscription": CHANNEL})
    await asyncio.to_thread(
        stalled.read_until, lambda: any(m.get("type") == "subscription_confirmed" for m in stalled.messages)
    )
    # from here on the stalled client reads nothing until the readers are done

    readers = [await ws_connect(srv.ws_url(), srv.token(f"r{i % 5}"), max_queue=None) for i in range(READERS)]
    publisher = await ws_connect(srv.ws_url(), srv.token("pub"))
    try:
        for ws in [*readers, publisher]:
            assert (await recv_json(ws, timeout=30))["type"] == "connection_established"
        for ws in readers:
            await subscribe(ws)
        assert (await metrics(srv))["tidings_connections"] == READERS + 2

        reading = [asyncio.create_task(read_publications(ws)) for ws in readers]
        offsets = await asyncio.wait_for(publish_all(publisher), 300)
        results = await asyncio.wait_for(asyncio.gather(*reading), 300)

        # every reader got every publication, once, in order
        for seen, _ in results:
            assert seen == list(range(MESSAGES))
        # offsets grow by one per message on the channel: the publications and the stalled user's "leave"
        leaves = [e for e in results[0][1] if e["type"] == "leave"]
        assert [e["user"]["username"] for e in leaves] == ["stall"]
        assert offsets == sorted(set(offsets))
        assert offsets[-1] - offsets[0] == MESSAGES - 1 + len(leaves)
        assert leaves[0]["offset"] in set(range(offsets[0], offsets[-1])) - set(offsets)

        # ... while the stalled client was still stalled: it has read nothing since its subscription
        assert not [m for m in stalled.messages if m["type"] == "publication"]
        values = await metrics(srv)
        assert values["tidings_slow_consumer_disconnects_total"] == 1  # the stalled client, and only it
        assert values["tidings_queued_frames"] <= QUEUE_MAX * (READERS + 2)

        # the server forgot the stalled connection: only the readers and the publisher are left
        for _ in range(200):
            if (await metrics(srv))["tidings_connections"] == READERS + 1:
                break
            await asyncio.sleep(0.05)
        assert (await metrics(srv))["tidings_connections"] == READERS + 1
        async with httpx.AsyncClient(base_url=srv.url) as http:
            stats = (await http.get("/api/stats")).json()
        assert stats == {"users": 6, "connections": READERS + 1}

        # what reached the stalled client is a prefix of the stream, then the connection ends
        await asyncio.to_thread(stalled.drain)
        got = [m["data"]["body"]["n"] for m in stalled.messages if m["type"] == "publication"]
        assert got == list(range(len(got)))
        assert len(got) < MESSAGES
        assert stalled.close_code in (None, 4000)
        assert stalled.close_code == 4000 or stalled.eof
    finally:
        stalled.close()
        for ws in [*readers, publisher]:
            await ws.close()
