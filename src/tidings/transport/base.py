"""What the parts of :class:`tidings.transport.protocol.TidingsWebSocketProtocol` share: its states and fields.

The protocol class is assembled from mixins, one per seam (ASGI events and send, raw fan-out writes, keepalive);
each mixin declares the fields it uses here and the concrete class holds them all in its ``__slots__``.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from uvicorn.server import ServerState

if TYPE_CHECKING:
    from websockets.http11 import Response
    from websockets.server import ServerProtocol

    from tidings.transport.fanout import WriteBatcher
    from tidings.transport.frames import Frame
    from tidings.transport.keepalive import Keepalive

__all__ = ["Message", "SocketBase", "WebSocketState"]

Message = dict[str, Any]


class WebSocketState(Enum):
    """Life of one socket: HANDSHAKE -> CONNECTING -> OPEN -> CLOSING -> CLOSED (or straight to CLOSED)."""

    HANDSHAKE = 0  # waiting for the HTTP upgrade request
    CONNECTING = 1  # request received, the application decides (accept, close, or a denial response)
    OPEN = 2  # accepted: messages flow both ways
    CLOSING = 3  # a close frame was sent or received; no more data frames
    CLOSED = 4  # the TCP connection is gone


HANDSHAKE = WebSocketState.HANDSHAKE
CONNECTING = WebSocketState.CONNECTING
OPEN = WebSocketState.OPEN
CLOSING = WebSocketState.CLOSING
CLOSED = WebSocketState.CLOSED


class SocketBase(asyncio.Protocol):
    """Fields and cross-seam methods of the protocol (declared for the mixins; implemented by the class)."""

    if not TYPE_CHECKING:  # the protocol class holds every field in its __slots__; mypy checks the fields here
        __slots__ = ()

    transport: asyncio.Transport
    conn: ServerProtocol
    scope: dict[str, Any] | None
    client: tuple[str, int] | None
    _loop: asyncio.AbstractEventLoop
    _server_state: ServerState
    _state: WebSocketState
    _ready: bool
    _paused: bool
    _sending: bool
    _aborted: bool
    _compress: bool
    _window_bits: int
    _response: Response | None
    _inbox: list[Message] | None
    _waiter: asyncio.Future[Message] | None
    _handler: Callable[[Message], None] | None
    _drain: asyncio.Future[None] | None
    _disconnect: Message | None
    _read_paused: bool
    _timer: asyncio.TimerHandle | None
    _parts: list[Any] | None
    _decoder: codecs.IncrementalDecoder | None
    _pending: Frame | list[Frame] | None  # one frame as itself: no list (a GC-tracked object) per delivery
    _run: list[Frame] | None  # the socket's own list for a run of pending frames, kept and reused (see fanout)
    _batcher: WriteBatcher
    _keepalive: Keepalive | None
    _ka_slot: int
    _ping_payload: bytes | None
    _heard: bool  # a data frame came in since the keepalive last scheduled this socket

    def _update_ready(self) -> None:
        self._ready = self._state is OPEN and not (self._paused or self._sending or self._aborted)

    def _cancel_timer(self) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _enter_closing(self) -> None:
        raise NotImplementedError

    def _send_close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _hard_abort(self) -> None:
        raise NotImplementedError

    def _post_disconnect(self, code: int, reason: str = "") -> None:
        raise NotImplementedError

    def _write_pending_now(self) -> None:
        raise NotImplementedError

    def _drop_pending(self) -> None:
        raise NotImplementedError

    async def _wait_drain(self) -> None:
        raise NotImplementedError
