"""Tidings' uvicorn WebSocket protocol (:mod:`tidings.fastws`), against real servers and real clients.

Two kinds of server: a small ASGI test app served by uvicorn with ``ws=TidingsWebSocketProtocol`` in a subprocess
(``python -m tests.test_fastws PORT [--ping-interval S] [--ping-timeout S] [--max-size N]``), for the ASGI contract;
and ``tidings serve`` (``fast_transport`` is on by default) for the raw transport behind the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import PerMessageDeflate

from tests.conftest import LiveServer, connected, recv_json, recv_until, ws_connect
from tidings.broker import Publication
from tidings.connection import Connection, UserInfo
from tidings.fastws import TRANSPORT_EXTENSION, TidingsWebSocketProtocol
from tidings.handout import DEFER_MIN
from tidings.hub import Hub
from tidings.protocol import Frame
from tidings.server import uvicorn_config
from tidings.settings import Settings
from tidings.transport.fanout import WriteBatcher

ROOT = Path(__file__).resolve().parent.parent


# ---- the ASGI test app --------------------------------------------------------------------------------------


async def contract_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One behaviour per path; see the tests below."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            reply = "lifespan.startup.complete" if message["type"] == "lifespan.startup" else None
            if reply is None:
                await send({"type": "lifespan.shutdown.complete"})
                return
            await send({"type": reply})
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/http":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"x-why", b"token")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        return
    if path == "/sub":
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[-1], "headers": [(b"x-tidings", b"yes")]})
    else:
        await send({"type": "websocket.accept"})
    if path == "/scope":
        transport = scope["extensions"][TRANSPORT_EXTENSION]()
        info = {
            "extension": TRANSPORT_EXTENSION in scope["extensions"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "header": dict(scope["headers"]).get(b"x-hello", b"").decode(),
        }
        assert transport.try_write(Frame.of(info))
        await transport.send([Frame.of({"n": i}) for i in range(3)])
    elif path in ("/burst", "/passes"):
        # raw frames, then an ASGI message and a close: counts the socket's write() calls meanwhile
        proto = scope["extensions"][TRANSPORT_EXTENSION]()
        counting = proto.transport = _CountingTransport(proto.transport)
        for i in range(10):
            assert proto.try_write(Frame.of({"n": i}))
            if path == "/passes":
                await asyncio.sleep(0)  # one frame per loop pass
        await send({"type": "websocket.send", "text": json.dumps({"n": 10})})
        await asyncio.sleep(0.2)
        assert proto.try_write(Frame.of({"writes": counting.writes}))
        await asyncio.sleep(0.2)
        await send({"type": "websocket.close", "code": 1000})
        return
    elif path == "/runs":
        # three sockets; once all are open, the last one's app hands frames to all three in one loop pass:
        # a gets f1 f2 f3, b and c get f1 f3 (c shares b's joined run, a's must not be reused for them)
        _RUNS[scope["query_string"].decode()] = scope["extensions"][TRANSPORT_EXTENSION]()
        if len(_RUNS) == 3:
            a, b, c = (_RUNS.pop(k) for k in ("a", "b", "c"))
            frames = [Frame.of({"f": i}) for i in (1, 2, 3)]
            for proto in (a, b, c):
                assert proto.try_write(frames[0])
            assert a.try_write(frames[1])
            for proto in (a, b, c):
                assert proto.try_write(frames[2])
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    elif path == "/handout":
        # HANDOUT_SOCKETS sockets; once all are open, the last one's app runs a hub over their raw transports:
        # a publication on an idle node (deferred: each socket written as it is handed out), then a publication
        # and a reply to socket 0 in one loop pass (handed out at once, the reply after it in the same write);
        # then each socket gets the number of writes it saw and how many fan-outs were deferred
        _HANDOUT[int(scope["query_string"])] = scope["extensions"][TRANSPORT_EXTENSION]()
        if len(_HANDOUT) == HANDOUT_SOCKETS:
            protos = [_HANDOUT.pop(i) for i in range(HANDOUT_SOCKETS)]
            counters = []
            hub = Hub()
            conns = []
            for i, proto in enumerate(protos):
                counters.append(_CountingTransport(proto.transport))
                proto.transport = counters[-1]
                conn = Connection(UserInfo(i, f"u{i}"), proto)
                hub.add(conn)
                hub.subscribe(conn, "news")
                conns.append(conn)
            await asyncio.sleep(0.5)  # idle: longer than any window the handshakes' writes opened
            hub.deliver(Publication("news", 1, "e", Frame.of({"offset": 1})))
            await asyncio.sleep(0.2)
            hub.deliver(Publication("news", 2, "e", Frame.of({"offset": 2})))
            conns[0].send({"reply": True})
            await asyncio.sleep(0.2)
            for conn, counter in zip(conns, counters, strict=True):
                conn.send({"writes": counter.writes, "deferred": hub.handouts.deferred})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    elif path == "/parsed":
        # counts the reads the sans-I/O parser is fed; the text "parsed?" gets the count so far (that read included)
        proto = scope["extensions"][TRANSPORT_EXTENSION]()
        feed = proto.conn.receive_data
        fed = [0]

        def counting_feed(data: bytes) -> None:
            fed[0] += 1
            feed(data)

        proto.conn.receive_data = counting_feed
        while (await receive()).get("text") == "parsed?":
            await send({"type": "websocket.send", "text": str(fed[0])})
        return
    elif path == "/close":
        await send({"type": "websocket.close", "code": 4321, "reason": "bye"})
        assert (await receive())["type"] == "websocket.disconnect"
        return
    elif path == "/raise":
        raise RuntimeError("boom (expected by the test)")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


_RUNS: dict[str, Any] = {}
_HANDOUT: dict[int, Any] = {}
HANDOUT_SOCKETS = DEFER_MIN + 8


class _CountingTransport:
    """The socket's transport, counting ``write()`` calls (the test app installs it on the protocol)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def contract_server(*args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The test app under uvicorn + TidingsWebSocketProtocol; yields ``ws://host:port`` and the process."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.test_fastws", str(port), *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"test server exited with {proc.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with contract_server("--max-size", "4096") as (url, _):
        yield url


# ---- the ASGI contract --------------------------------------------------------------------------------------


async def test_scope_offers_the_raw_transport(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/scope?a=1", additional_headers={"X-Hello": "hi"}) as ws:
        info = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert info == {"extension": True, "path": "/scope", "query": "a=1", "header": "hi"}
        assert [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)] == [{"n": i} for i in range(3)]


async def _burst(url: str) -> int:
    """Frames 0-10 in order, then the number of socket writes the server made for them; a clean close."""
    async with websockets.connect(url) as ws:
        assert [json.loads(await asyncio.wait_for(ws.recv(), 10))["n"] for _ in range(11)] == list(range(11))
        writes = int(json.loads(await asyncio.wait_for(ws.recv(), 10))["writes"])
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1000
        return writes


async def test_frames_of_one_loop_pass_share_one_write(app_url: str) -> None:
    # ten fan-out frames taken in one pass: one write(); the ASGI message after them: a second one, in order
    assert await _burst(f"{app_url}/burst") == 2


async def test_without_write_delay_each_pass_is_written_at_once(app_url: str) -> None:
    assert await _burst(f"{app_url}/passes") == 11


async def test_write_delay_coalesces_frames_across_passes_while_busy() -> None:
    with contract_server("--write-delay", "0.05") as (url, _):
        # the first frame goes out at once (the node was idle), the next nine wait for the window: then the ASGI
        # message flushes them (order kept) and goes out itself
        assert await _burst(f"{url}/passes") == 3


class _TimedSocket:
    """Stands in for a socket in :class:`WriteBatcher`: records when its write ran; the write takes ``cost`` s."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cost: float) -> None:
        self.loop, self.cost = loop, cost
        self.flushed_at: list[float] = []
        self.flushed = asyncio.Event()

    def _write_pending(self, joined: dict[bool, Any]) -> None:
        time.sleep(self.cost)  # the system calls of a large fan-out, blocking the loop as they do
        self.flushed_at.append(self.loop.time())
        self.flushed.set()

    async def next_flush(self) -> None:
        await asyncio.wait_for(self.flushed.wait(), 5)
        self.flushed.clear()


async def _second_flush_wait(delay: float, window_max: float, cost: float) -> tuple[float, float]:
    """(seconds between the end of a flush that took ``cost`` and the next flush, the batcher's window then)."""
    loop = asyncio.get_running_loop()
    batcher = WriteBatcher(loop, delay, window_max)
    sock = _TimedSocket(loop, cost)
    batcher.add(sock)  # type: ignore[arg-type]
    await sock.next_flush()
    ended, window = sock.flushed_at[0], batcher.window
    sock.cost = 0.0
    batcher.add(sock)  # type: ignore[arg-type]
    await sock.next_flush()
    return sock.flushed_at[1] - ended, window


async def test_a_busy_batcher_waits_as_long_as_its_last_flush_took() -> None:
    # a flush that took 40 ms: the next frames wait ~40 ms after it (a saturated node writes at most half the time)
    waited, window = await _second_flush_wait(0.0, 0.05, 0.04)
    assert window >= 0.04 and waited >= 0.03
    # capped by window_max
    waited, window = await _second_flush_wait(0.0, 0.01, 0.04)
    assert window == 0.01 and waited < 0.035
    # without the adaptive window (and no delay) the next pass writes
    waited, window = await _second_flush_wait(0.0, 0.0, 0.04)
    assert window == 0.0 and waited < 0.02
    # the fixed delay is the floor of the window
    waited, window = await _second_flush_wait(0.03, 0.05, 0.0)
    assert window == 0.03 and waited >= 0.02


async def test_an_idle_batcher_writes_in_the_next_pass() -> None:
    loop = asyncio.get_running_loop()
    batcher = WriteBatcher(loop, 0.002, 0.05)
    sock = _TimedSocket(loop, 0.04)
    batcher.add(sock)  # type: ignore[arg-type]
    await sock.next_flush()
    await asyncio.sleep(0.1)  # idle for longer than the window the 40 ms flush opened
    sock.cost = 0.0
    added = loop.time()
    batcher.add(sock)  # type: ignore[arg-type]
    await sock.next_flush()
    assert sock.flushed_at[1] - added < 0.02


async def test_runs_of_different_frames_on_sockets_of_one_flush() -> None:
    with contract_server() as (url, _):
        socks = {}
        for role in ("a", "b", "c"):
            socks[role] = await websockets.connect(f"{url}/runs?{role}")
            await asyncio.sleep(0.1)  # open in this order
        got = {
            role: [json.loads(await asyncio.wait_for(ws.recv(), 10))["f"] for _ in range(3 if role == "a" else 2)]
            for role, ws in socks.items()
        }
        assert got == {"a": [1, 2, 3], "b": [1, 3], "c": [1, 3]}
        for ws in socks.values():
            await ws.close()


async def test_an_idle_fan_out_is_written_as_it_is_handed_out_and_keeps_order_and_coalescing() -> None:
    with contract_server() as (url, _):
        socks = [await websockets.connect(f"{url}/handout?{i}") for i in range(HANDOUT_SOCKETS)]
        got = [
            [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4 if i == 0 else 3)]
            for i, ws in enumerate(socks)
        ]
        # the first publication deferred and written alone; the second handed out at once, socket 0's reply after
        # it: one write each time, in order
        assert got[0] == [{"offset": 1}, {"offset": 2}, {"reply": True}, {"writes": 2, "deferred": 1}]
        assert all(g == [{"offset": 1}, {"offset": 2}, {"writes": 2, "deferred": 1}] for g in got[1:])
        for ws in socks:
            await ws.close()


async def test_text_and_bytes_round_trip(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/echo", max_size=None) as ws:
        for message in ("héllo", b"\x00\xff" * 100, "x" * 4000, b""):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), 10) == message


async def test_fragmented_messages_are_reassembled(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/echo") as ws:
        await ws.send(["frag", "mén", "ted"])
        assert await asyncio.wait_for(ws.recv(), 10) == "fragménted"


async def test_subprotocol_and_headers_on_accept(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/sub", subprotocols=["one", "two"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "two"
        assert ws.response is not None
        assert ws.response.headers["x-tidings"] == "yes"


async def test_close_before_accept_is_http_403(app_url: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"{app_url}/deny")
    assert info.value.response.status_code == 403


async def test_denial_response_extension(app_url: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"{app_url}/http")
    assert info.value.response.status_code == 401
    assert info.value.response.headers["x-why"] == "token"
    assert info.value.response.body == b"no entry"


async def test_server_close_with_code_and_reason(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/close") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert (ws.close_code, ws.close_reason) == (4321, "bye")


async def test_application_error_closes_1011(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/raise") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1011


async def test_oversized_message_closes_1009(app_url: str) -> None:
    async with websockets.connect(f"{app_url}/echo") as ws:
        await ws.send("y" * 5000)  # --max-size 4096
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


async def test_invalid_utf8_closes_1007(app_url: str) -> None:
    reader, writer = await _raw_handshake(app_url, "/echo")
    mask = os.urandom(4)
    payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"  # a UTF-16 surrogate: not UTF-8
    writer.write(bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    opcode, data = await _read_frame(reader)
    assert opcode == 0x8 and struct.unpack("!H", data[:2])[0] == 1007
    writer.close()


async def test_unanswered_pings_close_1011() -> None:
    with contract_server("--ping-interval", "0.1", "--ping-timeout", "0.3") as (url, _):
        reader, writer = await _raw_handshake(url, "/echo")  # never answers pings
        opcodes = []
        while not opcodes or opcodes[-1] != 0x8:
            opcode, data = await _read_frame(reader)
            opcodes.append(opcode)
        assert 0x9 in opcodes  # pinged first
        assert struct.unpack("!H", data[:2])[0] == 1011
        writer.close()


async def test_answered_pings_keep_the_connection() -> None:
    with contract_server("--ping-interval", "0.05", "--ping-timeout", "0.5") as (url, _):
        async with websockets.connect(f"{url}/echo", ping_interval=None) as ws:
            await asyncio.sleep(1.0)  # many keepalive rounds; the client answers each ping
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 10) == "still here"


def _masked(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A client frame (FIN set, masked, payload under 126 bytes)."""
    mask = os.urandom(4) if mask is None else mask
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _next_ping(reader: asyncio.StreamReader) -> bytes:
    while True:
        opcode, data = await _read_frame(reader)
        assert opcode == 0x9, (opcode, data)
        return data


async def _parsed_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(_masked(0x1, b"parsed?"))
    opcode, data = await _read_frame(reader)
    assert opcode == 0x1, (opcode, data)
    return int(data)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
async def test_pongs_keep_the_connection_whole_or_split(split: bool) -> None:
    """A pong alone in one read takes the fast path (the parser is not fed it); one split over reads is parsed;
    both answer the ping."""
    with contract_server("--ping-interval", "0.1", "--ping-timeout", "0.3") as (url, _):
        reader, writer = await _raw_handshake(url, "/parsed")
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(6):  # 6 rounds, each answered within the 0.3 s timeout
            pong = _masked(0xA, await _next_ping(reader))
            if split:
                writer.write(pong[:3])
                await writer.drain()
                await asyncio.sleep(0.03)
                writer.write(pong[3:])
            else:
                writer.write(pong)
            await writer.drain()
        parsed = await _parsed_reads(reader, writer)
        # whole: only "parsed?" (with the last pong, if they share a read); split: each pong's first part at least
        assert parsed >= 12 if split else parsed <= 2, parsed
        writer.close()


async def test_pong_shaped_bytes_inside_a_frame_belong_to_the_frame() -> None:
    """Mid-frame, ten bytes that would read as a pong to the last ping are the frame's mask and payload."""
    with contract_server("--ping-interval", "0.1", "--ping-timeout", "0.3") as (url, _):
        reader, writer = await _raw_handshake(url, "/echo")
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ping = await _next_ping(reader)
        # as a pong: 0x8A 0x84, mask m, payload ping ^ m; as the rest of a binary frame of 6 bytes: its 4-byte
        # mask (0x8A 0x84 m0 m1) and 6 masked bytes (m2 m3 and the pong's masked payload)
        m = os.urandom(4)
        tail = bytes((0x8A, 0x84)) + m + bytes(p ^ k for p, k in zip(ping, m, strict=True))
        frame_mask, masked = tail[:4], tail[4:]
        writer.write(bytes((0x82, 0x86)))  # a binary frame's header, alone in its read
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(tail)
        await writer.drain()
        opcode, data = await _read_frame(reader)
        while opcode == 0x9:  # later pings (unanswered)
            opcode, data = await _read_frame(reader)
        assert (opcode, data) == (0x2, bytes(b ^ frame_mask[i % 4] for i, b in enumerate(masked)))  # echoed
        while opcode != 0x8:  # and the ping was never answered
            opcode, data = await _read_frame(reader)
        assert struct.unpack("!H", data[:2])[0] == 1011
        writer.close()


async def test_a_socket_that_keeps_sending_is_not_pinged() -> None:
    """Inbound frames prove the peer alive: a client that talks more often than the ping interval gets no pings
    (and is not closed for leaving them unanswered); once it falls silent it is pinged, then closed 1011."""
    with contract_server("--ping-interval", "0.1", "--ping-timeout", "0.3") as (url, _):
        reader, writer = await _raw_handshake(url, "/echo")  # never answers a ping
        for i in range(20):  # 1.2 s: twelve ping intervals, four ping timeouts
            writer.write(_masked(0x1, f"m{i}".encode()))
            await writer.drain()
            opcode, data = await _read_frame(reader)
            assert (opcode, data) == (0x1, f"m{i}".encode())
            await asyncio.sleep(0.06)
        opcodes = []
        while not opcodes or opcodes[-1] != 0x8:
            opcode, data = await _read_frame(reader)
            opcodes.append(opcode)
        assert opcodes[0] == 0x9 and struct.unpack("!H", data[:2])[0] == 1011
        writer.close()


async def test_a_pong_to_an_older_ping_is_parsed_and_ignored() -> None:
    with contract_server("--ping-interval", "0.1", "--ping-timeout", "0.3") as (url, _):
        reader, writer = await _raw_handshake(url, "/parsed")
        ping = await _next_ping(reader)
        writer.write(_masked(0xA, bytes(b ^ 0xFF for b in ping)))  # not this ping's payload
        await writer.drain()
        opcode, data = await _read_frame(reader)
        while opcode != 0x8:
            opcode, data = await _read_frame(reader)
        assert struct.unpack("!H", data[:2])[0] == 1011
        writer.close()


async def test_shutdown_closes_1001() -> None:
    with contract_server() as (url, proc):
        async with websockets.connect(f"{url}/echo") as ws:
            await ws.send("up")
            await asyncio.wait_for(ws.recv(), 10)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 20)
            assert (ws.close_code, ws.close_reason) == (1001, "Server shutting down")


async def _raw_handshake(url: str, path: str, extra: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await asyncio.wait_for(reader.readexactly(2), 20)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(length), 20)


# ---- behind the hub: tidings serve --------------------------------------------------------------------------


def test_fast_transport_setting_selects_the_protocol() -> None:
    on = uvicorn_config(None, Settings(fast_transport=True), "127.0.0.1", 0)  # type: ignore[arg-type]
    off = uvicorn_config(None, Settings(fast_transport=False), "127.0.0.1", 0)  # type: ignore[arg-type]
    assert isinstance(on.ws, type) and issubclass(on.ws, TidingsWebSocketProtocol)  # guarded (tidings.guard)
    assert isinstance(off.ws, type) and not issubclass(off.ws, TidingsWebSocketProtocol)  # uvicorn's own


async def _publish_many(server: LiveServer, channel: str, count: int, size: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers(), timeout=30) as http:
        for start in range(0, count, 16):
            batch = range(start, min(count, start + 16))
            bodies = [{"channel": channel, "data": {"n": n, "pad": "q" * size}} for n in batch]
            responses = await asyncio.gather(*(http.post("/api/publish", json=body) for body in bodies))
            assert all(r.status_code == 200 for r in responses), responses[0].text


@contextlib.asynccontextmanager
async def _subscriber(server: LiveServer, user: str, channel: str, **kwargs: Any) -> AsyncIterator[Any]:
    async with connected(server, user, **kwargs) as ws:
        await ws.send(json.dumps({"type": "subscribe", "subscription": channel}))
        await recv_until(ws, "subscription_confirmed")
        yield ws


@pytest.mark.parametrize("interval", ["0.2", "0"])
async def test_ping_settings_reach_the_server(server_factory: Any, interval: str) -> None:
    """TIDINGS_PING_INTERVAL / _TIMEOUT: a client that never answers is pinged and closed 1011; 0: never pinged."""
    server = server_factory(env={"TIDINGS_PING_INTERVAL": interval, "TIDINGS_PING_TIMEOUT": "0.3"})
    server.create_user("pinged")
    base, _, path = server.ws_url().removeprefix("ws://").partition("/")
    extra = f"Sec-WebSocket-Protocol: bearer, {server.token('pinged')}\r\n"
    reader, writer = await _raw_handshake(f"ws://{base}", f"/{path}", extra)
    opcodes = []
    try:
        while not opcodes or opcodes[-1] != 0x8:
            opcode, data = await asyncio.wait_for(_read_frame(reader), 2.0)
            opcodes.append(opcode)
    except TimeoutError:
        assert interval == "0" and 0x9 not in opcodes, opcodes  # welcome only, and silence
    else:
        assert interval != "0" and 0x9 in opcodes and struct.unpack("!H", data[:2])[0] == 1011
    writer.close()


async def test_queued_frames_arrive_intact_and_in_order(server_factory: Any) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_SEND_QUEUE_MAX": "100000"})
    server.create_user("ann")
    count = 400
    # a small receive window and no reading while publishing: the socket's buffer fills, frames queue up and are
    # written by send() in coalesced batches once it drains
    async with _subscriber(server, "ann", "property_updates", max_queue=4) as ws:
        await _publish_many(server, "property_updates", count, 8000)
        got = []
        while len(got) < count:
            msg = await recv_json(ws, 30)
            if msg.get("type") == "publication":
                got.append(msg)
        # publications are concurrent HTTP requests: their order is the offsets' order
        assert [m["offset"] for m in got] == list(range(got[0]["offset"], got[0]["offset"] + count))
        assert sorted(m["data"]["n"] for m in got) == list(range(count))
        assert all(m["data"]["pad"] == "q" * 8000 for m in got)


async def test_a_client_that_stops_reading_is_closed_4000(server_factory: Any) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_SEND_QUEUE_MAX": "8"})
    server.create_user("ann")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small TCP window
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    async with _subscriber(server, "ann", "property_updates", sock=sock, max_queue=1) as ws:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            sent = 0
            while "tidings_slow_consumer_disconnects_total 1.0" not in (await http.get("/metrics")).text:
                await _publish_many(server, "property_updates", 16, 16000)
                sent += 16
                assert sent < 5000, "never became a slow consumer"
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 4000


async def test_sigterm_closes_1001(server: LiveServer) -> None:
    async with connected(server, "ann") as ws:
        server.stop(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 20)
        assert (ws.close_code, ws.close_reason) == (1001, "Server shutting down")


async def test_oversized_client_message_closes_1009(server_factory: Any) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_MAX_MESSAGE_BYTES": "1024"})
    server.create_user("ann")
    async with connected(server, "ann") as ws:
        await ws.send(json.dumps({"type": "ping", "pad": "z" * 2000}))
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


def _count_compressed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for every frame the client's permessage-deflate extension sees, whether it was compressed."""
    seen: list[bool] = []
    original = PerMessageDeflate.decode

    def decode(self: PerMessageDeflate, frame: Any, *, max_size: int | None = None) -> Any:
        if frame.opcode in (0x1, 0x2):
            seen.append(frame.rsv1)
        return original(self, frame, max_size=max_size)

    monkeypatch.setattr(PerMessageDeflate, "decode", decode)
    return seen


@pytest.mark.parametrize("deflate", [True, False])
async def test_compression_round_trip(server_factory: Any, monkeypatch: pytest.MonkeyPatch, deflate: bool) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_PER_MESSAGE_DEFLATE": str(deflate).lower()})
    server.create_user("ann")
    server.create_user("bob")
    seen = _count_compressed(monkeypatch)
    big = {"text": "all work and no play " * 200}
    async with (
        _subscriber(server, "ann", "room:deflate", compression="deflate") as ann,
        _subscriber(server, "bob", "room:deflate", compression="deflate") as bob,
    ):
        extensions = ann.response.headers.get("Sec-WebSocket-Extensions", "")
        if deflate:
            assert "permessage-deflate" in extensions
            assert "server_no_context_takeover" in extensions and "client_no_context_takeover" in extensions
        else:
            assert extensions == ""
        seen.clear()
        await ann.send(json.dumps({"type": "publish", "channel": "room:deflate", "data": big}))  # compressed too
        for ws in (ann, bob):
            pub = await recv_until(ws, "publication")
            assert pub["data"]["body"] == big
        await ann.send(json.dumps({"type": "publish", "channel": "room:deflate", "data": {"small": 1}}))
        for ws in (ann, bob):
            assert (await recv_until(ws, "publication"))["data"]["body"] == {"small": 1}
    if deflate:
        assert any(seen), "the large publication should have arrived compressed"
    else:
        assert not seen


async def test_fast_transport_off_still_serves(server_factory: Any) -> None:
    server: LiveServer = server_factory(env={"TIDINGS_FAST_TRANSPORT": "false"})
    server.create_user("ann")
    async with _subscriber(server, "ann", "property_updates") as ws:
        await _publish_many(server, "property_updates", 3, 10)
        assert sorted([(await recv_until(ws, "publication"))["data"]["n"] for _ in range(3)]) == [0, 1, 2]
    ws = await ws_connect(server.ws_url(), server.token("ann"))
    # registered with the hub first (a socket still authenticating when the server stops gets uvicorn's 1012)
    assert (await recv_until(ws, "connection_established"))["type"] == "connection_established"
    server.stop(signal.SIGTERM)
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    assert ws.close_code == 1001


def main() -> None:
    """Serve :func:`contract_app` with uvicorn and Tidings' WebSocket protocol."""
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--max-size", type=int, default=2**20)
    parser.add_argument("--write-delay", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        contract_app,
        host="127.0.0.1",
        port=args.port,
        ws=TidingsWebSocketProtocol.configured(write_delay=args.write_delay),
        ws_ping_interval=args.ping_interval,
        ws_ping_timeout=args.ping_timeout,
        ws_max_size=args.max_size,
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
