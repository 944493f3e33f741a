"""The ASGI side of one socket: inbound events (``receive``, or a handler once detached) and ASGI ``send``."""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import ClientDisconnected
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode

from tidings.transport.base import CLOSED, CLOSING, CONNECTING, HANDSHAKE, OPEN, Message, SocketBase
from tidings.transport.frames import OP_BINARY, OP_TEXT, deflate_asgi_message, frame_bytes
from tidings.transport.handshake import describe

__all__ = ["INBOX_HIGH", "INBOX_LOW", "ASGIMixin"]

#: Inbound events buffered for an application that is not reading before the socket stops being read.
INBOX_HIGH = 16
#: Buffered inbound events under which reading resumes.
INBOX_LOW = 4

logger = logging.getLogger("uvicorn.error")
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class ASGIMixin(SocketBase):
    """``receive`` / ``send`` of the ASGI WebSocket contract, and :meth:`detach` for callback-driven serving."""

    if not TYPE_CHECKING:  # the protocol class holds every field in its __slots__; mypy checks the fields here
        __slots__ = ()

    # ---- inbound --------------------------------------------------------------------------------------------

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
            self._state = CLOSING
            self._ready = False
            self.conn.fail(1007, f"invalid UTF-8 at position {exc.start}")
            self._post_disconnect(1007, "invalid UTF-8")

    def _post(self, event: Message) -> None:
        handler = self._handler
        if handler is not None:
            handler(event)
            return
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
        if len(inbox) >= INBOX_HIGH:
            self.pause_inbound()

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
            if len(inbox) <= INBOX_LOW:
                self.resume_inbound()
        elif self._disconnect is not None:
            future.set_result(self._disconnect)
        else:
            self._waiter = future
        return future

    def detach(self, handler: Callable[[Message], None]) -> None:
        """Serve this socket by callbacks from now on: every inbound event (``websocket.receive``, then one
        ``websocket.disconnect``) is passed to ``handler`` as it is parsed, and the application's coroutine may
        return without closing the socket -- an idle connection then holds no coroutine, task or future.

        Events already waiting are handed over first, in order. ``receive`` must not be used afterwards. The
        handler must not block; :meth:`pause_inbound` / :meth:`resume_inbound` apply backpressure and
        :meth:`spawn` runs its coroutines as tasks the server waits for on shutdown.
        """
        self._handler = handler
        self._waiter = None
        inbox, self._inbox = self._inbox, None
        for event in inbox or ():
            handler(event)

    def pause_inbound(self) -> None:
        """Stop reading the socket (too many inbound events wait for the application)."""
        if not self._read_paused and self._state is not CLOSED:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_inbound(self) -> None:
        """Read the socket again."""
        if self._read_paused and self._state is not CLOSED:
            self._read_paused = False
            self.transport.resume_reading()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of this server (uvicorn waits for it on shutdown)."""
        task = self._loop.create_task(coro)
        tasks = self._server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    # ---- ASGI send ------------------------------------------------------------------------------------------

    async def asgi_send(self, message: Message) -> None:
        """ASGI ``send``: accept, close (HTTP 403 before accepting), denial responses, messages."""
        kind = message["type"]
        state = self._state
        if state is CONNECTING and self._response is not None:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                logger.info('%s - "WebSocket %s" 403', *describe(self.scope, self.client))
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
        elif state is CONNECTING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'.")
            parts = self._parts
            assert parts is not None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                self._parts = None
                self._respond(parts[0], parts[1], b"".join(parts[2:]))
        elif state is OPEN:
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is not None:
                    opcode = OP_BINARY
                else:
                    text = message.get("text")
                    if text is None:
                        raise RuntimeError("websocket.send needs 'text' or 'bytes'")
                    data, opcode = text.encode(), OP_TEXT
                if self._window_bits:
                    await self._write(frame_bytes(opcode, deflate_asgi_message(data, self._window_bits), True))
                else:
                    await self._write(frame_bytes(opcode, data))
            elif kind == "websocket.close":
                self._send_close(message.get("code") or 1000, message.get("reason") or "")
            else:
                raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'.")
        elif state is CLOSING and kind == "websocket.close":
            return  # already closing
        elif state is HANDSHAKE:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' before the handshake.")
        else:
            raise ClientDisconnected()

    async def _write(self, data: bytes) -> None:
        """Write one ASGI message in order with the fast path: wait for a drained buffer and earlier sends."""
        while (self._paused or self._sending) and self._state is OPEN and not self._aborted:
            await self._wait_drain()
        if self._state is not OPEN or self._aborted:
            raise ClientDisconnected()
        self._write_pending_now()
        self.transport.write(data)

    async def _wait_drain(self) -> None:
        drain = self._drain
        if drain is None or drain.done():
            drain = self._drain = self._loop.create_future()
        await drain

    # implemented by the protocol class
    def _accept(self, message: Message) -> None:
        raise NotImplementedError

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        raise NotImplementedError
