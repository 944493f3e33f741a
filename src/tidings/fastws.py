"""Tidings' own uvicorn WebSocket protocol: the full ASGI WebSocket contract plus a raw transport for fan-out.

``uvicorn.Config(app, ws=TidingsWebSocketProtocol)`` (``tidings serve`` does it when ``TIDINGS_FAST_TRANSPORT`` is
on). The WebSocket protocol itself (handshake validation, frame parsing, masking, control frames, fragmentation
limits, permessage-deflate negotiation and inflation) is the ``websockets`` library's sans-I/O
:class:`~websockets.server.ServerProtocol`; this module wires it to an :class:`asyncio.Protocol` and to ASGI:

- ``websocket.connect`` / ``websocket.accept`` (subprotocol, headers) / ``websocket.close`` before accepting (HTTP
  403) / the ``websocket.http.response`` denial extension;
- ``websocket.receive`` (text or bytes, fragmented messages reassembled, UTF-8 checked frame by frame so invalid
  text fails fast with 1007) / ``websocket.send`` / ``websocket.close`` with code and reason /
  ``websocket.disconnect`` with the peer's code;
- keepalive pings every ``ws_ping_interval`` seconds, closing with 1011 when no pong arrives within
  ``ws_ping_timeout``; messages over ``ws_max_size`` close with 1009; ``shutdown()`` closes with 1001
  "Server shutting down".

Fan-out does not go through ASGI ``send``: the scope extension ``"tidings.transport"`` is a zero-argument callable
returning this protocol object as a :class:`tidings.transport.Transport`. Its :meth:`~TidingsWebSocketProtocol.
try_write` writes a :class:`~tidings.protocol.Frame`'s prebuilt bytes (``wire``, or ``wire_deflate`` when
permessage-deflate was negotiated) straight to the socket -- the same bytes object for every recipient -- when
the socket's write buffer is below its high-water mark; otherwise it returns False and the connection queues the
frame, and :meth:`~TidingsWebSocketProtocol.send` later writes the whole queue as one ``transport.write`` once the
buffer has drained (``pause_writing`` / ``resume_writing``).

Memory per idle connection is kept small: ``__slots__``, no per-connection task besides the ASGI application's,
no receive queue until one is needed (an event goes straight to a waiting ``receive()``), one timer handle shared
by keepalive and closing, and permessage-deflate negotiated with ``server_no_context_takeover`` and
``client_no_context_takeover`` so no connection keeps a compression window between messages.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import logging
import os
import struct
import weakref
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import Enum
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, ProtocolError
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from tidings.protocol import DEFLATE_WINDOW_BITS, CloseCode, Frame

__all__ = ["TRANSPORT_EXTENSION", "TidingsWebSocketProtocol", "WebSocketState"]

#: The ASGI scope extension holding a zero-argument callable that returns this socket's raw transport.
TRANSPORT_EXTENSION = "tidings.transport"

Message = dict[str, Any]

#: Seconds to wait for the peer's closing handshake (or for a closed socket's buffer to drain) before aborting.
CLOSE_TIMEOUT = 10.0
#: Seconds an aborted (stalled) connection keeps its socket so a final close frame can still reach the client.
ABORT_GRACE = 5.0
#: Inbound events buffered for an application that is not reading before the socket stops being read.
INBOX_HIGH = 16
#: Buffered inbound events under which reading resumes.
INBOX_LOW = 4
#: Frames a socket may hold for its next coalesced write; past that, the connection's own queue takes them.
PENDING_MAX = 64

logger = logging.getLogger("uvicorn.error")
#: The sans-I/O protocol logs every open and close at INFO; keep that out of the server log unless asked for.
wire_logger = logging.getLogger("tidings.fastws.wire")
if wire_logger.level == logging.NOTSET:
    wire_logger.setLevel(logging.WARNING)

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_STATUS_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class WebSocketState(Enum):
    """Life of one socket: HANDSHAKE -> CONNECTING -> OPEN -> CLOSING -> CLOSED (or straight to CLOSED)."""

    HANDSHAKE = 0  # waiting for the HTTP upgrade request
    CONNECTING = 1  # request received, the application decides (accept, close, or a denial response)
    OPEN = 2  # accepted: messages flow both ways
    CLOSING = 3  # a close frame was sent or received; no more data frames
    CLOSED = 4  # the TCP connection is gone


_HANDSHAKE = WebSocketState.HANDSHAKE
_CONNECTING = WebSocketState.CONNECTING
_OPEN = WebSocketState.OPEN
_CLOSING = WebSocketState.CLOSING
_CLOSED = WebSocketState.CLOSED


def _frame_bytes(opcode: int, payload: bytes, compressed: bool = False) -> bytes:
    """A final, unmasked frame (server to client) with ``payload``."""
    first = 0x80 | opcode | (0x40 if compressed else 0)
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


_deflaters: dict[int, Any] = {}


def _deflate(payload: bytes, window_bits: int) -> bytes:
    """Compress one ASGI message for permessage-deflate without context takeover (fast level, any window).

    Every message is compressed once negotiated, small or not (some clients mishandle uncompressed text on a
    compressing connection). Shared fan-out frames use :attr:`tidings.protocol.Frame.wire_deflate` instead.
    """
    deflater = _deflaters.get(window_bits)
    if deflater is None:
        deflater = _deflaters[window_bits] = zlib.compressobj(1, zlib.DEFLATED, -window_bits, 8)
    data: bytes = deflater.compress(payload) + deflater.flush(zlib.Z_FULL_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


def _truncate_reason(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8 after the code)."""
    encoded = reason.encode()
    if len(encoded) <= 123:
        return reason
    return encoded[:123].decode(errors="ignore")


class _ServerProtocol(ServerProtocol):
    """``websockets``' sans-I/O server protocol, accepting a close frame in the middle of a fragmented message.

    RFC 6455 section 5.4 lets control frames interleave with fragments; the unfinished message is dropped and the
    closing handshake completes normally (Autobahn case 7.1.5) instead of failing with 1002.
    """

    def recv_frame(self, frame: WSFrame) -> None:
        """Process one parsed frame."""
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


class WriteBatcher:
    """Coalesces fan-out writes: every socket that got frames since the last flush gets them in one ``write()``.

    One per event loop and write delay. :meth:`TidingsWebSocketProtocol.try_write` parks a frame on its socket and
    registers the socket here; the flush runs once per loop pass (``call_soon``), so frames reaching one socket in
    the same pass share a system call. With ``delay`` > 0 the window adapts to load: when the previous flush was
    less than ``delay`` seconds ago (publications arriving back to back) the next one waits until ``delay`` after
    it, so a busy node makes fewer, larger writes; an idle node (no flush within ``delay``) flushes in the next
    pass, without waiting. A run of sockets waiting for the same frames gets the same joined ``bytes`` (built once
    per flush).
    """

    __slots__ = ("__weakref__", "_dirty", "_last", "_loop", "_scheduled", "delay")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float = 0.0) -> None:
        self._loop = loop
        self.delay = delay
        self._dirty: list[TidingsWebSocketProtocol] = []
        self._scheduled = False
        self._last = -1e9  # loop time of the last flush

    def add(self, proto: TidingsWebSocketProtocol) -> None:
        """``proto`` has its first pending frame: flush it with the others."""
        self._dirty.append(proto)
        if not self._scheduled:
            self._scheduled = True
            delay = self.delay
            if delay > 0:
                due = self._last + delay
                if due > self._loop.time():  # busy: the last flush was moments ago
                    self._loop.call_at(due, self.flush)
                    return
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every registered socket's pending frames (one ``write()`` each)."""
        self._scheduled = False
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        self._last = self._loop.time()
        joined: dict[tuple[object, ...], bytes] = {}
        for proto in dirty:
            proto._write_pending(joined)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, WriteBatcher]] = (
    weakref.WeakKeyDictionary()
)


def batcher_for(loop: asyncio.AbstractEventLoop, delay: float) -> WriteBatcher:
    """The loop's :class:`WriteBatcher` for ``delay`` (created on first use)."""
    by_delay = _batchers.get(loop)
    if by_delay is None:
        by_delay = _batchers[loop] = {}
    batcher = by_delay.get(delay)
    if batcher is None:
        batcher = by_delay[delay] = WriteBatcher(loop, delay)
    return batcher


class TidingsWebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection under uvicorn; also this socket's raw :class:`tidings.transport.Transport`."""

    #: Seconds a busy node may hold fan-out frames to coalesce writes (see :class:`WriteBatcher`); 0: one loop pass.
    write_delay: float = 0.0

    __slots__ = (
        "_aborted",
        "_app",
        "_batcher",
        "_compress",
        "_decoder",
        "_disconnect",
        "_drain",
        "_inbox",
        "_loop",
        "_parts",
        "_paused",
        "_pending",
        "_ping_payload",
        "_read_paused",
        "_ready",
        "_response",
        "_sending",
        "_server_state",
        "_state",
        "_timer",
        "_waiter",
        "_window_bits",
        "app_state",
        "client",
        "config",
        "conn",
        "scope",
        "transport",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self._app: Callable[..., Awaitable[None]] = config.loaded_app
        self._loop = _loop or asyncio.get_event_loop()
        self._server_state = server_state
        self.app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.scope: dict[str, Any] = {}
        extensions: list[ServerExtensionFactory] = []
        if config.ws_per_message_deflate:
            extensions.append(
                ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)
            )
        self.conn = _ServerProtocol(extensions=extensions, max_size=config.ws_max_size, logger=wire_logger)
        self._state = _HANDSHAKE
        self._ready = False  # OPEN, the write buffer below its high-water mark, and no send() in progress
        self._paused = False  # the transport asked us to stop writing (pause_writing)
        self._sending = False
        self._aborted = False
        self._compress = False  # shared frames go out as ``wire_deflate``
        self._window_bits = 0  # permessage-deflate's server window for ASGI messages; 0: not negotiated
        self._response: Response | None = None  # the 101 response, until the application accepts
        self._inbox: list[Message] | None = None  # events the application has not asked for yet
        self._waiter: asyncio.Future[Message] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._disconnect: Message | None = None  # set once the application has been told
        self._read_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._parts: list[Any] | None = None  # fragments of a message being received
        self._decoder: codecs.IncrementalDecoder | None = None
        self._pending: list[Frame] | None = None  # fan-out frames for the next coalesced write
        self._batcher = batcher_for(self._loop, self.write_delay)

    @classmethod
    def configured(cls, *, write_delay: float = 0.0) -> type[TidingsWebSocketProtocol]:
        """This protocol class with Tidings' transport settings (uvicorn instantiates the class it is given)."""
        if write_delay == cls.write_delay:
            return cls
        return cast(
            "type[TidingsWebSocketProtocol]",
            type(cls.__name__, (cls,), {"__slots__": (), "write_delay": write_delay, "__module__": cls.__module__}),
        )

    # ---- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with uvicorn's connection set."""
        self.transport = cast(asyncio.Transport, transport)
        self._server_state.connections.add(self)  # type: ignore[arg-type]
        self.client = get_remote_addr(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is gone: tell the application (1006 unless a close frame came first), wake writers."""
        self._server_state.connections.discard(self)
        state = self._state
        self._state = _CLOSED
        self._ready = False
        self._pending = None
        self._cancel_timer()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if state is not _HANDSHAKE:
            self._post_disconnect(1006 if self.conn.close_rcvd is None else self.conn.close_rcvd.code)

    def _update_ready(self) -> None:
        self._ready = self._state is _OPEN and not (self._paused or self._sending or self._aborted)

    def pause_writing(self) -> None:
        """The write buffer went over its high-water mark: frames are queued by the connection from now on."""
        self._paused = True
        self._ready = False

    def resume_writing(self) -> None:
        """The write buffer drained under its low-water mark."""
        self._paused = False
        self._update_ready()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def eof_received(self) -> bool | None:
        """Half-close from the peer: let the transport close (the parser reports an abnormal closure)."""
        self.conn.receive_eof()
        self._process()
        return None

    def data_received(self, data: bytes) -> None:
        """Feed the sans-I/O protocol and act on what it parsed."""
        self.conn.receive_data(data)
        self._process()

    def _process(self) -> None:
        conn = self.conn
        for event in conn.events_received():
            if type(event) is WSFrame:
                self._on_frame(event)
            else:
                self._on_request(cast(Request, event))
        self._flush()
        if conn.parser_exc is not None and self._state is not _CLOSED:
            close = conn.close_sent
            if close is not None and self._state is not _HANDSHAKE:
                self._post_disconnect(close.code, close.reason)
            self._enter_closing()

    # ---- handshake ----------------------------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        conn = self.conn
        response = conn.accept(request)
        if response.status_code != 101:
            conn.send_response(response)
            self._state = _CLOSING
            return
        self._response = response
        self._state = _CONNECTING
        transport = self.transport
        raw_path, _, query = request.path.partition("?")
        subprotocols: list[str] = []
        for header in request.headers.get_all("Sec-WebSocket-Protocol"):
            subprotocols.extend(token.strip() for token in header.split(","))
        root_path = self.config.root_path
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": self.client,
            "root_path": root_path,
            "path": root_path + unquote(raw_path),
            "raw_path": root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": [(k.lower().encode("ascii"), v.encode("latin-1")) for k, v in request.headers.raw_items()],
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}, TRANSPORT_EXTENSION: self._raw_transport},
        }
        self._post({"type": "websocket.connect"})
        # the application's coroutine is the task itself (no wrapper coroutine: less memory per connection)
        task = self._loop.create_task(
            cast(Coroutine[Any, Any, None], self._app(self.scope, self.receive, self.asgi_send))
        )
        self._server_state.tasks.add(task)
        task.add_done_callback(self._app_done)

    def _describe(self) -> tuple[str, str]:
        """Client address and path (with query; tokens are redacted by Tidings' log filter) for access logs."""
        scope = self.scope
        client = scope.get("client")
        path = scope["path"]
        query = scope["query_string"].decode("ascii")
        return (f"{client[0]}:{client[1]}" if client else "-", f"{path}?{query}" if query else path)

    def _raw_transport(self) -> TidingsWebSocketProtocol:
        return self

    def _app_done(self, task: asyncio.Task[None]) -> None:
        """The application returned (close 1000 if it left the socket open), failed (1011 / HTTP 500) or was
        cancelled (abort)."""
        self._server_state.tasks.discard(task)
        if task.cancelled():
            self._hard_abort()
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ClientDisconnected):
            logger.error("Exception in ASGI application\n", exc_info=exc)
            self._app_failed(1011)
        elif exc is None and self._state is _CONNECTING and self._response is not None:
            logger.error("ASGI callable returned without completing handshake.")
            self._app_failed(1000)
        elif exc is None and self._state is _OPEN and not self._aborted:
            self._send_close(1000, "")
        if self._state is _CONNECTING:  # an unfinished denial response
            self._enter_closing()

    def _app_failed(self, code: int) -> None:
        if self._state is _CONNECTING and self._response is not None:
            self._respond(HTTPStatus.INTERNAL_SERVER_ERROR, [], b"Internal Server Error")
        elif self._state is _OPEN:
            self._send_close(code, "")

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Refuse the upgrade with an HTTP response (then close the TCP connection)."""
        self._response = None
        response_headers = Headers(headers)
        response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
        response_headers.setdefault("Connection", "close")
        response_headers.setdefault("Content-Length", str(len(body)))
        response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        self.conn.send_response(Response(status, _STATUS_PHRASES.get(status, ""), response_headers, body))
        self._state = _CLOSING
        self._post_disconnect(1006)
        self._flush()

    def _accept(self, message: Message) -> None:
        response = self._response
        assert response is not None
        self._response = None
        logger.info('%s - "WebSocket %s" [accepted]', *self._describe())
        del response.headers["Date"]
        for name, value in (*self._server_state.default_headers, *message.get("headers", ())):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        conn = self.conn
        conn.send_response(response)
        for extension in conn.extensions:
            if isinstance(extension, PerMessageDeflate):
                # Shared compressed frames need the client to accept our window size; otherwise send plain frames.
                self._window_bits = extension.local_max_window_bits
                self._compress = extension.local_max_window_bits >= DEFLATE_WINDOW_BITS
        self._state = _OPEN
        self._update_ready()
        if not conn.reader.buffer:
            # The handshake parser keeps the Request (headers and all) alive in its frame for the connection's
            # life; nothing is half-parsed, so start the frame parser afresh and let the request go.
            conn.parser = Protocol.parse(conn)
            next(conn.parser)
        self._flush()
        self._schedule_ping()

    # ---- inbound ------------------------------------------------------------------------------------------

    def _on_frame(self, frame: WSFrame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            if self._state is _OPEN:
                self._on_data(frame)
        elif opcode is Opcode.PONG:
            if self._state is _OPEN and self._ping_payload is not None and frame.data == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
        elif opcode is Opcode.CLOSE:
            close = self.conn.close_rcvd
            if close is not None:
                self._post_disconnect(close.code, close.reason)
            self._state = _CLOSING
            self._ready = False
        # PING: the sans-I/O protocol has queued the pong; _flush() writes it.

    def _on_data(self, frame: WSFrame) -> None:
        data = frame.data
        opcode = frame.opcode
        parts = self._parts
        try:
            if opcode is Opcode.CONT:
                if parts is None:  # the parser already rejects this; be safe
                    return
                decoder = self._decoder
                parts.append(data if decoder is None else decoder.decode(data, frame.fin))
                if not frame.fin:
                    return
                self._parts = self._decoder = None
                if decoder is None:
                    self._post({"type": "websocket.receive", "bytes": b"".join(parts)})
                else:
                    self._post({"type": "websocket.receive", "text": "".join(parts)})
            elif frame.fin:
                if opcode is Opcode.TEXT:
                    self._post({"type": "websocket.receive", "text": str(data, "utf-8")})
                else:
                    self._post({"type": "websocket.receive", "bytes": bytes(data)})
            elif opcode is Opcode.TEXT:
                self._decoder = _utf8_decoder()
                self._parts = [self._decoder.decode(data, False)]
            else:
                self._decoder = None
                self._parts = [bytes(data)]
        except UnicodeDecodeError as exc:
            self._parts = self._decoder = None
            self._state = _CLOSING
            self._ready = False
            self.conn.fail(1007, f"invalid UTF-8 at position {exc.start}")
            self._post_disconnect(1007, "invalid UTF-8")

    def _post(self, event: Message) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(event)
                return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = []
        inbox.append(event)
        if len(inbox) >= INBOX_HIGH and not self._read_paused and self._state is not _CLOSED:
            self._read_paused = True
            self.transport.pause_reading()

    def _post_disconnect(self, code: int, reason: str = "") -> None:
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._post(self._disconnect)

    def receive(self) -> asyncio.Future[Message]:
        """ASGI ``receive``: the next event; ``websocket.disconnect`` again if asked after the end.

        A plain function returning a future (awaitable), so an idle connection holds no extra coroutine.
        """
        future: asyncio.Future[Message] = self._loop.create_future()
        inbox = self._inbox
        if inbox:
            future.set_result(inbox.pop(0))
            if not inbox:
                self._inbox = None
            if self._read_paused and len(inbox) <= INBOX_LOW and self._state is not _CLOSED:
                self._read_paused = False
                self.transport.resume_reading()
        elif self._disconnect is not None:
            future.set_result(self._disconnect)
        else:
            self._waiter = future
        return future

    # ---- outbound: ASGI -----------------------------------------------------------------------------------

    async def asgi_send(self, message: Message) -> None:
        """ASGI ``send``: accept, close (HTTP 403 before accepting), denial responses, messages."""
        kind = message["type"]
        state = self._state
        if state is _CONNECTING and self._response is not None:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                logger.info('%s - "WebSocket %s" 403', *self._describe())
                self._respond(HTTPStatus.FORBIDDEN, [], b"")
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
                self._response = None
                self._parts = [status, headers]  # the denial response's status and headers, then body chunks
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but got '{kind}'."
                )
        elif state is _CONNECTING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'.")
            parts = self._parts
            assert parts is not None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                self._parts = None
                self._respond(parts[0], parts[1], b"".join(parts[2:]))
        elif state is _OPEN:
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is not None:
                    opcode = 0x2
                else:
                    text = message.get("text")
                    if text is None:
                        raise RuntimeError("websocket.send needs 'text' or 'bytes'")
                    data, opcode = text.encode(), 0x1
                if self._window_bits:
                    await self._write(_frame_bytes(opcode, _deflate(data, self._window_bits), compressed=True))
                else:
                    await self._write(_frame_bytes(opcode, data))
            elif kind == "websocket.close":
                self._send_close(message.get("code") or 1000, message.get("reason") or "")
            else:
                raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'.")
        elif state is _CLOSING and kind == "websocket.close":
            return  # already closing
        elif state is _HANDSHAKE:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' before the handshake.")
        else:
            raise ClientDisconnected()

    async def _write(self, data: bytes) -> None:
        """Write one ASGI message in order with the fast path: wait for a drained buffer and earlier sends."""
        while (self._paused or self._sending) and self._state is _OPEN and not self._aborted:
            await self._wait_drain()
        if self._state is not _OPEN or self._aborted:
            raise ClientDisconnected()
        self._write_pending_now()
        self.transport.write(data)

    async def _wait_drain(self) -> None:
        drain = self._drain
        if drain is None or drain.done():
            drain = self._drain = self._loop.create_future()
        await drain

    # ---- outbound: the raw Transport ---------------------------------------------------------------------

    def try_write(self, frame: Frame) -> bool:
        """Take ``frame`` for this socket's next coalesced write if the socket can take it without buffering
        past its mark; False: the connection queues it (and :meth:`send` writes it later, in order)."""
        if self._ready:
            pending = self._pending
            if pending is None:
                self._pending = [frame]
                self._batcher.add(self)
            elif len(pending) < PENDING_MAX:
                pending.append(frame)
            else:
                return False
            return True
        return False

    def _write_pending(self, joined: dict[tuple[object, ...], bytes]) -> None:
        """Write the frames :meth:`try_write` took, as one ``transport.write``; ``joined`` caches the bytes of
        frame runs already joined for other sockets in this flush."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._state is _CLOSED or self._aborted or self.transport.is_closing():
            return
        if len(pending) == 1:
            frame = pending[0]
            # the cached slot first: one attribute read instead of a property call per recipient
            self.transport.write(frame.wire_deflate if self._compress else (frame._wire or frame.wire))
            return
        # compressing and plain sockets never share a run: a compressing socket's key starts with True
        key: tuple[object, ...] = (True, *pending) if self._compress else tuple(pending)
        data = joined.get(key)
        if data is None:
            if self._compress:
                data = joined[key] = b"".join([frame.wire_deflate for frame in pending])
            else:
                data = joined[key] = b"".join([frame.wire for frame in pending])
        self.transport.write(data)

    def _write_pending_now(self) -> None:
        """Write frames taken by :meth:`try_write` ahead of anything else about to be written (order)."""
        if self._pending is not None:
            self._write_pending({})

    async def send(self, frames: Sequence[Frame]) -> None:
        """Write queued frames as one ``transport.write``, after the buffer has drained; in order with try_write."""
        self._sending = True
        self._ready = False
        self._write_pending_now()  # frames taken earlier go first
        try:
            while self._paused and self._state is _OPEN and not self._aborted:
                await self._wait_drain()
            if self._state is not _OPEN or self._aborted:
                raise ClientDisconnected()
            if self._compress:
                data = b"".join([frame.wire_deflate for frame in frames])
            else:
                data = b"".join([frame.wire for frame in frames])
            self.transport.write(data)
        finally:
            self._sending = False
            self._update_ready()
            drain = self._drain
            if drain is not None and not drain.done() and not self._paused:
                drain.set_result(None)  # an ASGI send waiting for this one

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame (ahead of any buffered backlog's end: it is appended to the socket's buffer)."""
        self._send_close(code, reason)

    def abort(self) -> None:
        """Stop serving a stalled client at once: no more data frames, and the application sees a disconnect now.

        The socket itself gets a short grace: a close frame sent right after (the connection's 4000 "slow
        consumer") is appended to the buffer and the TCP connection closed once that drains, so a client that
        resumes reading learns why; after :data:`ABORT_GRACE` seconds the buffer is discarded and the socket
        dropped.
        """
        self._ready = False
        self._pending = None
        state = self._state
        if state is _CLOSED or self.transport is None:
            return
        if state is not _OPEN or self._aborted:
            self._hard_abort()
            return
        self._aborted = True  # blocks writes from send() and ASGI sends; close() still goes out
        self._post_disconnect(1006, "aborted")
        self._cancel_timer()
        self._timer = self._loop.call_later(ABORT_GRACE, self._hard_abort)

    def _hard_abort(self) -> None:
        self._timer = None
        self._ready = False
        if self._state is not _CLOSED:
            self.transport.abort()

    # ---- closing ------------------------------------------------------------------------------------------

    def _send_close(self, code: int, reason: str) -> None:
        if self._state is not _OPEN:
            return
        reason = _truncate_reason(reason)
        try:
            self.conn.send_close(code, reason)
        except ProtocolError:  # not a code one may send
            code, reason = CloseCode.INTERNAL_ERROR, ""
            self.conn.send_close(code, reason)
        except InvalidState:
            return
        self._state = _CLOSING
        self._ready = False
        self._post_disconnect(code, reason)
        self._flush()
        if self._aborted:
            self.transport.close()  # aborted: no closing handshake, the grace timer is already running
        elif self._state is _CLOSING:
            self._cancel_timer()
            self._timer = self._loop.call_later(CLOSE_TIMEOUT, self._hard_abort)

    def _flush(self) -> None:
        """Write what the sans-I/O protocol produced; close the TCP connection when it says so."""
        writes = self.conn.data_to_send()
        if not writes:
            return
        self._write_pending_now()
        transport = self.transport
        if not transport.is_closing():
            data = b"".join(writes)
            if data:
                transport.write(data)
        if not writes[-1]:  # b"" marks the end of the stream: a server closes the TCP connection
            self._enter_closing()

    def _enter_closing(self) -> None:
        """Close the TCP connection after its buffer drains, and abort if it does not drain in time."""
        if self._state is not _CLOSED:
            self._state = _CLOSING
        self._ready = False
        transport = self.transport
        if not transport.is_closing():
            transport.close()
            self._cancel_timer()
            self._timer = self._loop.call_later(CLOSE_TIMEOUT, self._hard_abort)

    def shutdown(self) -> None:
        """Server shutdown (uvicorn): close with 1001 "Server shutting down", or refuse a pending handshake."""
        state = self._state
        if state is _OPEN:
            self._send_close(CloseCode.GOING_AWAY, "Server shutting down")
            self._enter_closing()
        elif state is _CONNECTING and self._response is not None:
            self._post_disconnect(CloseCode.GOING_AWAY, "Server shutting down")
            self._respond(HTTPStatus.SERVICE_UNAVAILABLE, [], b"Server shutting down")
        elif state is not _CLOSED:
            self._post_disconnect(CloseCode.GOING_AWAY, "Server shutting down")
            self._enter_closing()

    # ---- keepalive ----------------------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_ping(self) -> None:
        self._cancel_timer()
        interval = self.config.ws_ping_interval
        if interval is not None and interval > 0 and self._state is _OPEN:
            self._timer = self._loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self._timer = None
        if self._state is not _OPEN:
            return
        self._ping_payload = payload = os.urandom(4)
        self.conn.send_ping(payload)
        self._flush()
        timeout = self.config.ws_ping_timeout
        if timeout is not None and timeout > 0:
            self._timer = self._loop.call_later(timeout, self._ping_timed_out)
        else:
            self._ping_payload = None
            self._schedule_ping()

    def _ping_timed_out(self) -> None:
        self._timer = None
        if self._state is not _OPEN:
            return
        self._ping_payload = None
        self.conn.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._post_disconnect(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._flush()
        self._enter_closing()
