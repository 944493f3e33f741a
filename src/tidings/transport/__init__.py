"""Transports move frames to one socket. The hub only ever calls :meth:`Transport.try_write` (never awaits).

- :class:`ASGITransport` works under any ASGI server through ``send``.
- Tidings' own uvicorn protocol (:mod:`tidings.fastws`) exposes a raw transport through the ASGI scope extension
  ``"tidings.transport"``, which writes a frame's prebuilt bytes straight to the socket when it can take them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from tidings.transport.frames import Frame

__all__ = ["ASGITransport", "Transport"]

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class Transport(Protocol):
    """How a connection's frames reach its socket."""

    def try_write(self, frame: Frame) -> bool:
        """Write ``frame`` now without blocking if the socket can take it; False means queue it instead."""

    def write_now(self, frame: Frame) -> bool:
        """Write ``frame`` to the socket at once if nothing is waiting to be written there; False otherwise."""

    def write_idle(self) -> bool:
        """Whether nothing waits to be written on this transport's loop: a fan-out may then be written as it is
        handed out (:mod:`tidings.handout`)."""

    def note_writes(self, writes: int, seconds: float) -> None:
        """``writes`` sockets were written by :meth:`write_now` in one pass that took ``seconds`` (counted as a
        flush: the node is busy for a while after it)."""

    async def send(self, frames: Sequence[Frame]) -> None:
        """Write queued frames in order (coalesced where possible), waiting for the socket to drain."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason``."""

    def abort(self) -> None:
        """Drop the connection at once (for clients that stopped reading)."""


class ASGITransport:
    """The portable transport: ``websocket.send`` events through the ASGI server."""

    __slots__ = ("_closed", "_on_abort", "_send")

    def __init__(self, send: ASGISend, on_abort: Callable[[], None] | None = None) -> None:
        self._send = send
        self._closed = False
        self._on_abort = on_abort

    def try_write(self, frame: Frame) -> bool:
        """ASGI sends are awaitables: always queue."""
        return False

    def write_now(self, frame: Frame) -> bool:
        """ASGI sends are awaitables: always queue."""
        return False

    def write_idle(self) -> bool:
        """No write batcher: fan-outs are handed out at once."""
        return False

    def note_writes(self, writes: int, seconds: float) -> None:
        """Nothing to count."""

    async def send(self, frames: Sequence[Frame]) -> None:
        """Send each frame as a text message."""
        for frame in frames:
            await self._send({"type": "websocket.send", "text": frame.text})

    async def close(self, code: int, reason: str) -> None:
        """Send ``websocket.close`` once."""
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def abort(self) -> None:
        """ASGI has no abort: ``on_abort`` stops serving the connection, so the hub forgets it at once and the
        server closes the socket once what it buffered is flushed (or the peer goes away)."""
        if self._on_abort is not None:
            self._on_abort()
