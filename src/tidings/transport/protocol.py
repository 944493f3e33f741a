"""Tidings' own uvicorn WebSocket protocol: the full ASGI WebSocket contract plus a raw transport for fan-out.

``uvicorn.Config(app, ws=TidingsWebSocketProtocol)`` (``tidings serve`` does it when ``TIDINGS_FAST_TRANSPORT`` is
on). The WebSocket protocol itself (handshake validation, frame parsing, masking, control frames, fragmentation
limits, permessage-deflate negotiation and inflation) is the ``websockets`` library's sans-I/O
:class:`~websockets.server.ServerProtocol`; this class wires it to an :class:`asyncio.Protocol` and to ASGI. Its
seams are modules of their own:

- :mod:`tidings.transport.handshake`: the sans-I/O protocol's configuration, the ASGI scope, accept and refusal;
- :mod:`tidings.transport.asgi`: ``websocket.receive`` / ``websocket.send`` and the other ASGI events, and
  :meth:`~tidings.transport.asgi.ASGIMixin.detach` (callback-driven serving, no coroutine while idle);
- :mod:`tidings.transport.fanout`: the raw :class:`tidings.transport.Transport` (``try_write`` / ``send`` /
  ``close`` / ``abort``) and write coalescing;
- :mod:`tidings.transport.keepalive`: pings from one timing wheel per loop;
- :mod:`tidings.transport.frames`: frame bytes and permessage-deflate.

This module: the socket's life (connection, parsing, closing handshake, shutdown) and the protocol class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_remote_addr
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState, ProtocolError
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response

from tidings.protocol import CloseCode
from tidings.transport.asgi import ASGIMixin
from tidings.transport.base import CLOSED, CLOSING, CONNECTING, HANDSHAKE, OPEN, Message, WebSocketState
from tidings.transport.fanout import FanoutMixin, batcher_for
from tidings.transport.frames import truncate_reason
from tidings.transport.handshake import (
    TRANSPORT_EXTENSION,
    accept_response,
    asgi_scope,
    describe,
    negotiated_deflate,
    parser_between_frames,
    refusal,
    restart_frame_parser,
    sansio_protocol,
)
from tidings.transport.keepalive import PONG_FRAME_SIZE, KeepaliveMixin, keepalive_for

__all__ = ["CLOSE_TIMEOUT", "TRANSPORT_EXTENSION", "TidingsWebSocketProtocol", "WebSocketState"]

#: Seconds to wait for the peer's closing handshake (or for a closed socket's buffer to drain) before aborting.
CLOSE_TIMEOUT = 10.0

logger = logging.getLogger("uvicorn.error")


class TidingsWebSocketProtocol(ASGIMixin, FanoutMixin, KeepaliveMixin):
    """One WebSocket connection under uvicorn; also this socket's raw :class:`tidings.transport.Transport`."""

    #: Seconds a busy node may hold fan-out frames to coalesce writes (see :class:`~.fanout.WriteBatcher`);
    #: 0: the frames of one loop pass share a write.
    write_delay: float = 0.0
    #: Upper bound of the adaptive window (as long as the last coalesced write took); 0: ``write_delay`` only.
    write_window_max: float = 0.0

    __slots__ = (
        "_aborted",
        "_app",
        "_batcher",
        "_compress",
        "_decoder",
        "_disconnect",
        "_drain",
        "_handler",
        "_heard",
        "_inbox",
        "_ka_slot",
        "_keepalive",
        "_loop",
        "_parts",
        "_paused",
        "_pending",
        "_ping_payload",
        "_read_paused",
        "_ready",
        "_response",
        "_run",
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
        self._loop = loop = _loop or asyncio.get_event_loop()
        self._server_state = server_state
        self.app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client = None
        self.scope = None  # the ASGI scope, until the socket is open (the application keeps its own reference)
        self.conn = sansio_protocol(config)
        self._state = HANDSHAKE
        self._ready = False  # OPEN, the write buffer below its high-water mark, and no send() in progress
        self._paused = False  # the transport asked us to stop writing (pause_writing)
        self._sending = False
        self._aborted = False
        self._compress = False  # shared frames go out as ``wire_deflate``
        self._window_bits = 0  # permessage-deflate's server window for ASGI messages; 0: not negotiated
        self._response: Response | None = None  # the 101 response, until the application accepts
        self._inbox = None  # events the application has not asked for yet
        self._waiter = None
        self._handler = None  # set by detach()
        self._drain = None
        self._disconnect = None  # set once the application has been told
        self._read_paused = False
        self._timer = None  # closing handshake / abort grace
        self._parts = None  # fragments of a message being received
        self._decoder = None
        self._pending = None  # fan-out frames for the next coalesced write
        self._run = None
        self._batcher = batcher_for(loop, self.write_delay, self.write_window_max)
        self._keepalive = keepalive_for(loop, config.ws_ping_interval, config.ws_ping_timeout)
        self._ka_slot = -1
        self._ping_payload = None
        self._heard = False

    @classmethod
    def configured(
        cls, *, write_delay: float = 0.0, write_window_max: float = 0.0
    ) -> type[TidingsWebSocketProtocol]:
        """This protocol class with Tidings' transport settings (uvicorn instantiates the class it is given)."""
        if write_delay == cls.write_delay and write_window_max == cls.write_window_max:
            return cls
        attrs = {
            "__slots__": (),
            "write_delay": write_delay,
            "write_window_max": write_window_max,
            "__module__": cls.__module__,
        }
        return cast("type[TidingsWebSocketProtocol]", type(cls.__name__, (cls,), attrs))

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
        self._state = CLOSED
        self._ready = False
        self._drop_pending()
        self._cancel_timer()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if state is not HANDSHAKE:
            self._post_disconnect(1006 if self.conn.close_rcvd is None else self.conn.close_rcvd.code)

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
        """Feed the sans-I/O protocol and act on what it parsed (a keepalive pong alone in a read skips it)."""
        conn = self.conn
        if len(data) == PONG_FRAME_SIZE and parser_between_frames(conn) and self._take_pong(data):
            return
        conn.receive_data(data)
        self._process()

    def _process(self) -> None:
        conn = self.conn
        for event in conn.events_received():
            if type(event) is WSFrame:
                self._on_frame(event)
            else:
                self._on_request(cast(Request, event))
        self._flush()
        if conn.parser_exc is not None and self._state is not CLOSED:
            close = conn.close_sent
            if close is not None and self._state is not HANDSHAKE:
                self._post_disconnect(close.code, close.reason)
            self._enter_closing()

    def _on_frame(self, frame: WSFrame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._heard = True
            if self._state is OPEN:
                self._on_data(frame)
        elif opcode is Opcode.PONG:
            self._on_pong(frame.data)
        elif opcode is Opcode.CLOSE:
            close = self.conn.close_rcvd
            if close is not None:
                self._post_disconnect(close.code, close.reason)
            self._state = CLOSING
            self._ready = False
        # PING: the sans-I/O protocol has queued the pong; _flush() writes it.

    # ---- handshake ----------------------------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        conn = self.conn
        response = conn.accept(request)
        if response.status_code != 101:
            conn.send_response(response)
            self._state = CLOSING
            return
        self._response = response
        self._state = CONNECTING
        self.scope = scope = asgi_scope(
            request, self.transport, self.config, self.client, self.app_state, self._raw_transport
        )
        self._post({"type": "websocket.connect"})
        # the application's coroutine is the task itself (no wrapper coroutine: less memory per connection)
        task = self._loop.create_task(cast(Coroutine[Any, Any, None], self._app(scope, self.receive, self.asgi_send)))
        self._server_state.tasks.add(task)
        task.add_done_callback(self._app_done)

    def _raw_transport(self) -> TidingsWebSocketProtocol:
        return self

    def _app_done(self, task: asyncio.Task[None]) -> None:
        """The application returned (close 1000 if it left the socket open, unless it detached), failed (1011 /
        HTTP 500) or was cancelled (abort)."""
        self._server_state.tasks.discard(task)
        if task.cancelled():
            self._hard_abort()
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ClientDisconnected):
            logger.error("Exception in ASGI application\n", exc_info=exc)
            self._app_failed(1011)
        elif exc is None and self._state is CONNECTING and self._response is not None:
            logger.error("ASGI callable returned without completing handshake.")
            self._app_failed(1000)
        elif exc is None and self._state is OPEN and not self._aborted and self._handler is None:
            self._send_close(1000, "")
        if self._state is CONNECTING:  # an unfinished denial response
            self._enter_closing()

    def _app_failed(self, code: int) -> None:
        if self._state is CONNECTING and self._response is not None:
            self._respond(HTTPStatus.INTERNAL_SERVER_ERROR, [], b"Internal Server Error")
        elif self._state is OPEN:
            self._send_close(code, "")

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Refuse the upgrade with an HTTP response (then close the TCP connection)."""
        self._response = None
        self.conn.send_response(refusal(status, headers, body))
        self._state = CLOSING
        self._post_disconnect(1006)
        self._flush()

    def _accept(self, message: Message) -> None:
        response = self._response
        assert response is not None
        self._response = None
        logger.info('%s - "WebSocket %s" [accepted]', *describe(self.scope, self.client))
        accept_response(response, self._server_state.default_headers, message)
        conn = self.conn
        conn.send_response(response)
        self._window_bits, self._compress = negotiated_deflate(conn)
        self._state = OPEN
        self._update_ready()
        restart_frame_parser(conn)
        self.scope = None  # the application has its own reference, for as long as it needs the scope
        self._flush()
        self._schedule_ping()

    # ---- closing ------------------------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        """Stop the closing/abort timer and the keepalive."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_keepalive()

    def _send_close(self, code: int, reason: str) -> None:
        if self._state is not OPEN:
            return
        reason = truncate_reason(reason)
        try:
            self.conn.send_close(code, reason)
        except ProtocolError:  # not a code one may send
            code, reason = CloseCode.INTERNAL_ERROR, ""
            self.conn.send_close(code, reason)
        except InvalidState:
            return
        self._state = CLOSING
        self._ready = False
        self._post_disconnect(code, reason)
        self._flush()
        if self._aborted:
            self.transport.close()  # aborted: no closing handshake, the grace timer is already running
        elif self._state is CLOSING:
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
        if self._state is not CLOSED:
            self._state = CLOSING
        self._ready = False
        transport = self.transport
        if not transport.is_closing():
            transport.close()
            self._cancel_timer()
            self._timer = self._loop.call_later(CLOSE_TIMEOUT, self._hard_abort)

    def shutdown(self) -> None:
        """Server shutdown (uvicorn): close with 1001 "Server shutting down", or refuse a pending handshake."""
        state = self._state
        if state is OPEN:
            self._send_close(CloseCode.GOING_AWAY, "Server shutting down")
            self._enter_closing()
        elif state is CONNECTING and self._response is not None:
            self._post_disconnect(CloseCode.GOING_AWAY, "Server shutting down")
            self._respond(HTTPStatus.SERVICE_UNAVAILABLE, [], b"Server shutting down")
        elif state is not CLOSED:
            self._post_disconnect(CloseCode.GOING_AWAY, "Server shutting down")
            self._enter_closing()
