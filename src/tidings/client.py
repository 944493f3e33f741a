"""An asyncio client for Tidings servers, on the ``websockets`` library; it behaves like the browser client.

It keeps one authenticated WebSocket open and handles the unhappy paths:

- reconnects with exponential backoff and jitter (capped), and stops for good on terminal close codes
  (1008, 1009, 4500-4999) with a :class:`TerminalError`;
- sends ``{"type": "ping"}`` heartbeats and replaces a connection that stays silent after one;
- resubscribes after a reconnect with ``{"since": {"offset", "epoch"}}`` from the last offset seen per channel,
  and reports ``recovered: false`` (``recovery_failed``) when the server could not replay what was missed;
- drops duplicates (a channel offset not above the last one seen in the same epoch);
- keeps what is sent while offline in a bounded queue (oldest dropped first) and sends it once connected;
- matches replies to requests by ``id``.

Usage::

    async with TidingsClient("ws://127.0.0.1:8000/ws/authenticated", token) as client:
        await client.subscribe("room:lobby")
        await client.request({"type": "publish", "channel": "room:lobby", "data": {"text": "hi"}})
        async for message in client:
            print(message)

Exceptions::

    TidingsClientError
     +-- TerminalError        the server closed with a terminal code (or reconnect attempts ran out);
     |                        ``sign_in`` is True when the user must sign in again (4003 token expired)
     +-- ClientClosed         the client was closed (by close(), or a 1000 from the server)
     +-- RequestError         an ``error`` / ``subscription_error`` reply (``.code``, ``.reply``)
     +-- RequestTimeout       no reply in time
     +-- ConnectionLost       the connection dropped after a request was sent
     +-- MessageDropped       the offline queue overflowed and dropped the request
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
import random
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeGuard

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

from tidings.close_codes import CloseCode, signs_out
from tidings.close_codes import close_action as _close_action
from tidings.errors import TidingsError

__all__ = [
    "ClientClosed",
    "ClientState",
    "ConnectionLost",
    "MessageDropped",
    "RequestError",
    "RequestTimeout",
    "TerminalError",
    "TidingsClient",
    "TidingsClientError",
    "backoff_delay",
    "close_action",
    "listen",
    "publish_rest",
]

logger = logging.getLogger("tidings.client")

Message = dict[str, Any]
TokenSource = str | Callable[[], str | Awaitable[str]] | None
Handler = Callable[[Message], Any]
Listener = Callable[[Any], Any]

#: Replies that may carry ``channel``/``offset`` but are not part of a channel's stream (never deduplicated).
NOT_STREAM = frozenset(
    {
        "publish_ack",
        "subscription_confirmed",
        "subscription_error",
        "unsubscribed",
        "presence",
        "error",
        "pong",
        "connection_established",
    }
)
#: Reply types that make :meth:`TidingsClient.request` raise :class:`RequestError`.
ERROR_REPLIES = frozenset({"error", "subscription_error"})
#: Client events a listener may register for with :meth:`TidingsClient.on_event`.
EVENTS = frozenset(
    {"state", "connected", "disconnected", "reconnecting", "terminal", "recovery_failed", "queue_overflow", "error"}
)

ABNORMAL = 1006


class TidingsClientError(TidingsError):
    """Root of the client's exceptions (itself a :class:`tidings.errors.TidingsError`)."""


class TerminalError(TidingsClientError):
    """The client stopped for good: a terminal close code, or ``max_reconnect_attempts`` exhausted."""

    def __init__(self, code: int | None, reason: str, *, gave_up: bool = False) -> None:
        what = "gave up reconnecting" if gave_up else "terminal close"
        super().__init__(f"{what}: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
        self.gave_up = gave_up
        #: True when the credentials are no longer good: the user must sign in again.
        self.sign_in = not gave_up and signs_out(code, reason)


class ClientClosed(TidingsClientError):
    """The client is closed: :meth:`TidingsClient.close` was called or the server closed with 1000."""


class RequestError(TidingsClientError):
    """The server answered a request with ``error`` or ``subscription_error``."""

    def __init__(self, reply: Message) -> None:
        super().__init__(str(reply.get("message") or reply.get("type")))
        self.code: str | None = reply.get("code")
        self.reply = reply


class RequestTimeout(TidingsClientError):
    """No reply arrived in time."""


class ConnectionLost(TidingsClientError):
    """The connection dropped after the request was sent; whether it was served is unknown."""


class MessageDropped(TidingsClientError):
    """The offline queue was full and dropped this message (the oldest one) to make room."""


class ClientState(enum.StrEnum):
    """Connection state of a :class:`TidingsClient`; ``offline`` stays until :meth:`TidingsClient.connect`."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


def close_action(code: int, reason: str = "") -> str:
    """What to do after a close: ``stop``, ``reconnect``, ``pause``, ``refresh`` or ``terminal``.

    Read from the one close-code table, :mod:`tidings.close_codes`.
    """
    return str(_close_action(code, reason))


def backoff_delay(
    attempt: int,
    *,
    min_delay: float,
    max_delay: float,
    factor: float,
    jitter: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1-based), capped at ``max_delay``.

    ``base = min(max_delay, min_delay * factor ** (attempt - 1))``; the delay is uniform in
    ``[base * (1 - jitter), base * (1 + jitter))``, then clamped to ``[0, max_delay]``.
    """
    exponent = max(0, attempt - 1)
    try:
        base = min(max_delay, min_delay * factor**exponent)
    except OverflowError:
        base = max_delay
    spread = base * jitter * (2 * rand() - 1) if jitter > 0 else 0.0
    return min(max_delay, max(0.0, base + spread))


@dataclass(slots=True)
class _Outgoing:
    """A message waiting to go out; ``reply`` is set for requests."""

    text: str
    reply: asyncio.Future[Message] | None = None
    msg_id: str | int | None = None


@dataclass(slots=True)
class _Subscription:
    """A remembered channel and the callers waiting for its confirmation."""

    confirmed: bool = False
    confirmation: Message | None = None
    waiters: list[asyncio.Future[Message]] = field(default_factory=list)


class _Closed(Exception):
    """Internal: one connection ended with ``code``/``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class _MessageStream:
    """An async iterator over every message the client receives from the moment it was created."""

    def __init__(self, client: TidingsClient, maxsize: int) -> None:
        self._client = client
        self._queue: deque[Message] = deque(maxlen=maxsize or None)
        self._wakeup = asyncio.Event()
        self.dropped = 0
        client._streams.add(self)

    def push(self, message: Message) -> None:
        if self._queue.maxlen is not None and len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(message)
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    def __aiter__(self) -> _MessageStream:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._queue:
                return self._queue.popleft()
            client = self._client
            if client._terminal is not None:
                self.close()
                raise client._terminal
            if client.state is ClientState.OFFLINE or client._closing:
                self.close()
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        """Stop receiving messages."""
        self._client._streams.discard(self)


class TidingsClient:
    """One reconnecting, authenticated connection to a Tidings server (``/ws/authenticated``).

    :param url: ``ws://`` or ``wss://`` URL of the WebSocket endpoint.
    :param token: a JWT, or a callable (sync or async) returning one; a callable is called before every connect
        and reconnect, so it can fetch a fresh token. Sent as ``Authorization: Bearer <token>``.
    :param min_reconnect_delay: base delay of the first reconnect attempt, seconds (default 0.5).
    :param max_reconnect_delay: cap of every reconnect delay, jitter included, seconds (default 30).
    :param reconnect_factor: growth of the base delay per attempt (default 2).
    :param jitter: spread around the base delay as a fraction of it, 0..1 (default 0.5).
    :param max_reconnect_attempts: consecutive failed attempts before giving up; None (default) never gives up.
    :param ping_interval: heartbeat period, seconds; 0 disables it (default 25).
    :param pong_timeout: silence after a ping that marks the connection dead, seconds (default 10).
    :param connect_timeout: an attempt without ``connection_established`` by then is abandoned (default 10).
    :param request_timeout: default timeout of :meth:`request`, seconds; 0 disables it (default 10).
    :param max_offline_queue: messages kept while not connected; the oldest is dropped when full (default 100).
    :param max_stream_queue: messages buffered per iterator before the oldest is dropped (default 10000).
    """

    def __init__(
        self,
        url: str,
        token: TokenSource = None,
        *,
        min_reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        reconnect_factor: float = 2.0,
        jitter: float = 0.5,
        max_reconnect_attempts: int | None = None,
        ping_interval: float = 25.0,
        pong_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        max_offline_queue: int = 100,
        max_stream_queue: int = 10_000,
    ) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be within 0..1")
        if reconnect_factor < 1:
            raise ValueError("reconnect_factor must be >= 1")
        self.url = url
        self.token = token
        self.min_reconnect_delay = min_reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.reconnect_factor = reconnect_factor
        self.jitter = jitter
        self.max_reconnect_attempts = max_reconnect_attempts
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_offline_queue = max_offline_queue
        self.max_stream_queue = max_stream_queue

        self.state = ClientState.IDLE
        #: The ``connection_established`` message of the current (or last) connection.
        self.session: Message | None = None
        #: Completed connections so far (1 after the first connect, 2 after one reconnect, ...).
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._established = False
        self._closing = False
        self._terminal: TerminalError | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[Message] | None = None
        self._queue: deque[_Outgoing] = deque()
        self._channels: dict[str, _Subscription] = {}
        self._positions: dict[str, tuple[int, str]] = {}
        self._unsubscribing: dict[str, list[asyncio.Future[Message]]] = {}
        self._requests: dict[str | int, asyncio.Future[Message]] = {}
        self._in_flight: set[str | int] = set()
        self._ids = itertools.count(1)
        self._handlers: dict[str, list[Handler]] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._streams: set[_MessageStream] = set()
        self._last_received = 0.0
        self._outbox: asyncio.Queue[str] | None = None
        self._dead: ClientConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._token_used: str | None = None
        self._expired_token: str | None = None
        self._stale_token = False

    # ---- public API ------------------------------------------------------------------------------------
    @property
    def subscriptions(self) -> list[str]:
        """Channels remembered by :meth:`subscribe`; resubscribed after every reconnect."""
        return list(self._channels)

    @property
    def queue_size(self) -> int:
        """Messages waiting in the offline queue."""
        return len(self._queue)

    def position(self, channel: str) -> tuple[int, str] | None:
        """The last ``(offset, epoch)`` seen on ``channel`` (sent as ``since`` when resubscribing)."""
        return self._positions.get(channel)

    async def connect(self, *, wait: bool = True) -> Message | None:
        """Start connecting (or restart after ``offline``); with ``wait``, return ``connection_established``.

        Raises :class:`TerminalError` if the client stops for good before connecting, :class:`ClientClosed` if
        :meth:`close` is called first.
        """
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done():
            self._closing = False
            self._terminal = None
            self._ready = loop.create_future()
            self._runner = loop.create_task(self._run(), name="tidings-client")
        if not wait:
            return None
        if self._established and self.session is not None:
            return self.session
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop reconnecting (state ``offline``); remembered channels are kept."""
        self._closing = True
        ws, outbox = self._ws, self._outbox
        if ws is not None:
            if outbox is not None and ws.state is State.OPEN:  # what was sent goes out before the close frame
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.join(), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code, reason), 5)
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._finish(ClientClosed("client closed"))

    async def __aenter__(self) -> TidingsClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def send(self, message: Message) -> bool:
        """Send now when connected (True), else keep it in the offline queue (False)."""
        return self._send(_Outgoing(json.dumps(message)))

    def publish(self, channel: str, data: Any) -> bool:
        """Send ``{"type": "publish", "channel", "data"}`` (queued while offline)."""
        return self.send({"type": "publish", "channel": channel, "data": data})

    async def request(self, message: Message, *, timeout: float | None = None) -> Message:
        """Send ``message`` with an ``id`` (``"r1"``, ``"r2"``… unless set) and return the reply echoing it.

        Raises :class:`RequestError` on an ``error``/``subscription_error`` reply, :class:`RequestTimeout`,
        :class:`ConnectionLost` if the connection dropped after sending, :class:`MessageDropped` if the offline
        queue dropped it.
        """
        msg = dict(message)
        msg_id = msg.setdefault("id", f"r{next(self._ids)}")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._requests[msg_id] = future
        self._send(_Outgoing(json.dumps(msg), reply=future, msg_id=msg_id))
        limit = self.request_timeout if timeout is None else timeout
        try:
            if limit:
                return await asyncio.wait_for(asyncio.shield(future), limit)
            return await future
        except TimeoutError:
            raise RequestTimeout(f"no reply to {msg.get('type')} {msg_id!r} within {limit}s") from None
        finally:
            self._requests.pop(msg_id, None)
            self._in_flight.discard(msg_id)
            if not future.done():
                future.cancel()  # timed out or cancelled: nobody will look at it any more

    async def subscribe(self, channel: str) -> Message:
        """Subscribe and remember ``channel``; return ``subscription_confirmed``.

        While offline the subscription is made on the next connect. Raises :class:`RequestError` on
        ``subscription_error`` (the channel is then forgotten).
        """
        if not channel:
            raise ValueError("channel must be a non-empty string")
        sub = self._channels.get(channel)
        if sub is not None and sub.confirmed and self._is_open() and sub.confirmation is not None:
            return sub.confirmation
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        if sub is None:
            sub = self._channels[channel] = _Subscription()
            if self._is_open():
                self._send_subscribe(channel)
        sub.waiters.append(future)
        return await future

    async def unsubscribe(self, channel: str) -> Message | None:
        """Unsubscribe and forget ``channel`` and its position; the ``unsubscribed`` reply, or None offline."""
        sub = self._channels.pop(channel, None)
        self._positions.pop(channel, None)
        if sub is not None:
            for waiter in sub.waiters:
                if not waiter.done():
                    waiter.set_exception(ClientClosed(f"unsubscribed from {channel} before confirmation"))
        if not self._is_open():
            return None
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._unsubscribing.setdefault(channel, []).append(future)
        self._transmit(json.dumps({"type": "unsubscribe", "subscription": channel}))
        try:
            return await asyncio.wait_for(future, self.request_timeout or None)
        except (TimeoutError, ConnectionLost):
            return None

    def on(self, msg_type: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(message)`` for messages of ``msg_type`` (``"*"``: all); it may be async.

        Returns a function removing the handler.
        """
        return self._add(self._handlers, msg_type, handler)

    def on_event(self, event: str, listener: Listener) -> Callable[[], None]:
        """Listen to a client event (:data:`EVENTS`): ``state``, ``connected``, ``disconnected``,
        ``reconnecting``, ``terminal``, ``recovery_failed``, ``queue_overflow``, ``error``.

        Returns a function removing the listener.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {sorted(EVENTS)}")
        return self._add(self._listeners, event, listener)

    def messages(self) -> _MessageStream:
        """An async iterator over every message received from now on; ends when the client is closed and
        raises :class:`TerminalError` when it stopped for good."""
        return _MessageStream(self, self.max_stream_queue)

    def __aiter__(self) -> _MessageStream:
        return self.messages()

    # ---- connection loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        first = True
        while not self._closing:
            self._set_state(ClientState.CONNECTING if first else ClientState.RECONNECTING)
            try:
                await self._connect_once()
                code, reason = ABNORMAL, "connection ended"
            except _Closed as closed:
                code, reason = closed.code, closed.reason
            except Exception as exc:  # a bug must not kill the reconnect loop silently
                logger.exception("tidings client connection failed")
                code, reason = ABNORMAL, repr(exc)
            finally:
                self._drop_connection()
            if self._closing:
                break
            was_established, self._established = self._established, False
            if was_established:
                attempt = 0
            action = close_action(code, reason)
            if action == "refresh":
                # the token expired: only a token function can give a new one; the same token again is terminal
                if callable(self.token) and not self._stale_token:
                    self._expired_token = self._token_used
                else:
                    action = "terminal"
            self._stale_token = False
            will_reconnect = action in ("reconnect", "pause", "refresh")
            attempt += 1
            gave_up = self.max_reconnect_attempts is not None and attempt > self.max_reconnect_attempts
            if gave_up:
                will_reconnect = False
            self._emit("disconnected", {"code": code, "reason": reason, "will_reconnect": will_reconnect})
            if action == "stop":
                self._set_state(ClientState.OFFLINE, code, reason)
                self._finish(ClientClosed(f"closed by the server: {code} {reason}".rstrip()))
                return
            if action == "terminal" or gave_up:
                error = TerminalError(code, reason, gave_up=gave_up)
                self._terminal = error
                self._set_state(ClientState.OFFLINE, code, reason)
                self._emit(
                    "terminal",
                    {"code": code, "reason": reason, "gave_up": gave_up, "attempts": attempt, "sign_in": error.sign_in},
                )
                self._finish(error)
                return
            first = False
            delay = 0.0 if action == "refresh" else self._delay(attempt, pause=action == "pause")
            self._set_state(ClientState.RECONNECTING, code, reason)
            self._emit("reconnecting", {"attempt": attempt, "delay": delay, "code": code, "reason": reason})
            logger.info("connection closed (%s %s); reconnecting in %.2fs", code, reason, delay)
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, *, pause: bool) -> float:
        return backoff_delay(
            10**6 if pause else attempt,
            min_delay=self.min_reconnect_delay,
            max_delay=self.max_reconnect_delay,
            factor=self.reconnect_factor,
            jitter=self.jitter,
        )

    async def _token(self) -> str | None:
        source = self.token
        if source is None or isinstance(source, str):
            return source
        value = source()
        if isinstance(value, Awaitable):
            value = await value
        return value

    async def _connect_once(self) -> None:
        """One connection, from the handshake until it ends; always raises :class:`_Closed`."""
        try:
            token = await self._token()
        except Exception as exc:
            self._emit("error", {"source": "token", "error": exc})
            raise _Closed(ABNORMAL, f"token callable failed: {exc}") from None
        if self._expired_token is not None and token == self._expired_token:
            self._stale_token = True  # the token function gave the expired token again: sign in again
            raise _Closed(CloseCode.TOKEN_EXPIRED, "Token expired")
        self._token_used, self._expired_token = token, None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await websockets.connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.connect_timeout or None,
                ping_interval=None,
                max_size=None,
                close_timeout=2,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise _Closed(ABNORMAL, f"connect failed: {exc}") from None
        self._ws = ws
        outbox: asyncio.Queue[str] = asyncio.Queue()
        self._outbox = outbox
        self._last_received = time.monotonic()
        loop = asyncio.get_running_loop()
        helpers = [loop.create_task(self._heartbeat(ws)), loop.create_task(_write(ws, outbox))]
        try:
            await self._read(ws)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _read(self, ws: ClientConnection) -> None:
        deadline = time.monotonic() + self.connect_timeout if self.connect_timeout else None
        while True:
            try:
                if not self._established and deadline is not None:
                    text = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
                else:
                    text = await ws.recv()
            except TimeoutError:
                await _abort(ws)
                raise _Closed(ABNORMAL, "Connect timeout") from None
            except ConnectionClosed as exc:
                if self._dead is ws:
                    raise _Closed(ABNORMAL, "Heartbeat timeout") from None
                rcvd = exc.rcvd
                raise _Closed(rcvd.code if rcvd else ABNORMAL, rcvd.reason if rcvd else "connection lost") from None
            self._last_received = time.monotonic()
            if isinstance(text, bytes):
                self._emit("error", {"source": "parse", "error": ValueError("binary frame")})
                continue
            try:
                message = json.loads(text)
            except ValueError as exc:
                self._emit("error", {"source": "parse", "error": exc, "data": text})
                continue
            if not isinstance(message, dict):
                self._emit("error", {"source": "parse", "error": ValueError("not an object"), "data": text})
                continue
            self._handle(message)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        if not self.ping_interval:
            return
        while True:
            await asyncio.sleep(self.ping_interval)
            if not self._established:
                continue
            sent = time.monotonic()
            self._transmit(json.dumps({"type": "ping"}))
            await asyncio.sleep(self.pong_timeout)
            if self._last_received < sent:
                logger.warning("no message within %.1fs of a ping: the connection is dead", self.pong_timeout)
                self._dead = ws
                await _abort(ws)
                return

    def _drop_connection(self) -> None:
        """Forget the socket; requests sent on it fail with :class:`ConnectionLost`."""
        self._ws = None
        self._outbox = None
        self._dead = None
        for msg_id in list(self._in_flight):
            future = self._requests.get(msg_id)
            if future is not None and not future.done():
                future.set_exception(ConnectionLost(f"connection lost before the reply to {msg_id!r}"))
        self._in_flight.clear()
        for waiters in self._unsubscribing.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(ConnectionLost("connection lost"))
        self._unsubscribing.clear()
        for sub in self._channels.values():
            sub.confirmed = False

    def _finish(self, error: TidingsClientError) -> None:
        """The client stopped: fail what waits for a connection, end the iterators."""
        if self.state is not ClientState.OFFLINE:
            self._set_state(ClientState.OFFLINE)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: nobody may be waiting
        for entry in [e for e in self._queue if e.reply is not None]:
            self._queue.remove(entry)
            if entry.reply is not None and not entry.reply.done():
                entry.reply.set_exception(error)
        for sub in self._channels.values():
            for waiter in sub.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            sub.waiters.clear()
        for stream in list(self._streams):
            stream.wake()

    # ---- inbound ---------------------------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        if not self._advance(message):
            return
        msg_type = message.get("type")
        if msg_type == "connection_established":
            if self._established:
                return
            self._on_established(message)
        elif msg_type == "subscription_confirmed":
            self._on_confirmed(message)
        elif msg_type == "subscription_error":
            self._on_subscription_error(message)
        elif msg_type == "unsubscribed":
            for future in self._unsubscribing.pop(str(message.get("subscription")), []):
                if not future.done():
                    future.set_result(message)
        msg_id = message.get("id")
        if isinstance(msg_id, str | int) and msg_id in self._requests:
            future = self._requests[msg_id]
            if not future.done():
                if msg_type in ERROR_REPLIES:
                    future.set_exception(RequestError(message))
                else:
                    future.set_result(message)
        for stream in list(self._streams):
            stream.push(message)
        for handler in [*self._handlers.get(str(msg_type), ()), *self._handlers.get("*", ())]:
            self._call(handler, message, "handler")

    def _advance(self, message: Message) -> bool:
        """Track the channel position; False for a duplicate (offset not above the last one, same epoch)."""
        channel, offset = message.get("channel"), message.get("offset")
        if not isinstance(channel, str) or not _is_int(offset) or message.get("type") in NOT_STREAM:
            return True
        last = self._positions.get(channel)
        epoch = message.get("epoch", last[1] if last else None)
        if not isinstance(epoch, str):
            return True
        if last is not None and last[1] == epoch and offset <= last[0]:
            return False
        self._positions[channel] = (offset, epoch)
        return True

    def _on_established(self, message: Message) -> None:
        self._established = True
        self.session = message
        self.connections += 1
        for channel in self._channels:
            self._send_subscribe(channel)
        while self._queue and self._is_open():
            entry = self._queue.popleft()
            self._transmit_entry(entry)
        self._set_state(ClientState.CONNECTED)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(message)
        self._emit("connected", message)

    def _on_confirmed(self, message: Message) -> None:
        channel = str(message.get("subscription"))
        sub = self._channels.get(channel)
        if sub is None:
            return
        offset, epoch = message.get("offset"), message.get("epoch")
        if _is_int(offset) and isinstance(epoch, str):
            last = self._positions.get(channel)
            if last is None or last[1] != epoch or offset > last[0]:
                self._positions[channel] = (offset, epoch)
        sub.confirmed = True
        sub.confirmation = message
        for waiter in sub.waiters:
            if not waiter.done():
                waiter.set_result(message)
        sub.waiters.clear()
        if message.get("recovered") is False:
            self._emit("recovery_failed", {"channel": channel, "offset": offset, "epoch": epoch})

    def _on_subscription_error(self, message: Message) -> None:
        channel = str(message.get("subscription"))
        sub = self._channels.pop(channel, None)
        if sub is None:
            return
        for waiter in sub.waiters:
            if not waiter.done():
                waiter.set_exception(RequestError(message))

    # ---- outbound --------------------------------------------------------------------------------------
    def _is_open(self) -> bool:
        return self._ws is not None and self._established

    def _send(self, entry: _Outgoing) -> bool:
        if self._is_open() and self._transmit_entry(entry):
            return True
        if self.max_offline_queue <= 0:
            self._drop(entry)
            return False
        if len(self._queue) >= self.max_offline_queue:
            dropped = self._queue.popleft()
            self._drop(dropped)
            self._emit("queue_overflow", {"dropped": json.loads(dropped.text), "queued": len(self._queue)})
        self._queue.append(entry)
        return False

    @staticmethod
    def _drop(entry: _Outgoing) -> None:
        if entry.reply is not None and not entry.reply.done():
            entry.reply.set_exception(MessageDropped("the offline queue was full"))

    def _transmit_entry(self, entry: _Outgoing) -> bool:
        if not self._transmit(entry.text):
            return False
        if entry.msg_id is not None and entry.msg_id in self._requests:
            self._in_flight.add(entry.msg_id)
        return True

    def _transmit(self, text: str) -> bool:
        """Hand ``text`` to the connection's writer (in order, without waiting); False if there is none."""
        if self._ws is None or self._outbox is None:
            return False
        self._outbox.put_nowait(text)
        return True

    def _send_subscribe(self, channel: str) -> None:
        message: Message = {"type": "subscribe", "subscription": channel}
        pos = self._positions.get(channel)
        if pos is not None:
            message["since"] = {"offset": pos[0], "epoch": pos[1]}
        self._transmit(json.dumps(message))

    # ---- events ----------------------------------------------------------------------------------------
    def _set_state(self, state: ClientState, code: int | None = None, reason: str | None = None) -> None:
        if state is self.state:
            return
        previous, self.state = self.state, state
        self._emit("state", {"state": state, "previous": previous, "code": code, "reason": reason})

    def _emit(self, event: str, payload: Any) -> None:
        for listener in list(self._listeners.get(event, ())):
            self._call(listener, payload, "listener")

    def _call(self, fn: Callable[[Any], Any], arg: Any, source: str) -> None:
        try:
            result = fn(arg)
        except Exception as exc:
            self._report(exc, source)
            return
        if asyncio.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            self._tasks.add(task)

            def done(t: asyncio.Task[Any]) -> None:
                self._tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    self._report(t.exception(), source)

            task.add_done_callback(done)

    def _report(self, exc: BaseException | None, source: str) -> None:
        if source != "listener" and self._listeners.get("error"):
            self._emit("error", {"source": source, "error": exc})
        else:
            logger.error("a tidings client %s failed", source, exc_info=exc)

    @staticmethod
    def _add(table: dict[str, list[Any]], key: str, fn: Any) -> Callable[[], None]:
        table.setdefault(key, []).append(fn)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                table.get(key, []).remove(fn)

        return remove


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


async def _write(ws: ClientConnection, outbox: asyncio.Queue[str]) -> None:
    """The writer of one connection: sends the outbox in order until the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            text = await outbox.get()
            try:
                await ws.send(text)
            finally:
                outbox.task_done()


async def _abort(ws: ClientConnection) -> None:
    """Drop a dead connection without a closing handshake."""
    ws.transport.abort()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.wait_closed(), 2)


# ---- command-line helpers (``tidings listen`` / ``tidings publish``) ----------------------------------------
async def listen(
    url: str,
    token: TokenSource,
    channels: list[str],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    **options: Any,
) -> int:
    """Subscribe to ``channels`` and write every channel event as one JSON line to ``out`` until cancelled.

    Status lines (connected, subscribed, reconnecting, recovery failures) go to ``err``. Returns the exit status:
    0 when the server closed normally, 2 on a terminal close.
    """
    out = out or sys.stdout
    err = err or sys.stderr

    def status(kind: str, payload: Any) -> None:
        print(json.dumps({"event": kind, **payload}, default=str), file=err, flush=True)

    client = TidingsClient(url, token, **options)
    client.on_event("connected", lambda m: status("connected", {"username": m.get("username")}))
    client.on_event("reconnecting", lambda p: status("reconnecting", p))
    client.on_event("recovery_failed", lambda p: status("recovery_failed", p))
    client.on("subscription_confirmed", lambda m: status("subscribed", {k: v for k, v in m.items() if k != "type"}))
    client.on("subscription_error", lambda m: status("subscription_error", m))
    stream = client.messages()
    try:
        await client.connect()
        for channel in channels:
            with contextlib.suppress(RequestError):  # reported by the subscription_error handler
                await client.subscribe(channel)
        async for message in stream:
            if isinstance(message.get("channel"), str) and message.get("type") not in NOT_STREAM:
                print(json.dumps(message), file=out, flush=True)
    except TerminalError as exc:
        status("terminal", {"code": exc.code, "reason": exc.reason})
        return 2
    except ClientClosed:
        return 0
    finally:
        stream.close()
        # bounded: an interrupted listener (Ctrl-C) must exit even if the server does not answer the close
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(client.close(), 5)
    return 0


def publish_rest(
    base_url: str,
    token: str,
    channel: str,
    data: Any,
    *,
    timeout: float = 10.0,
    idempotency_key: str | None = None,
) -> Message:
    """Publish ``data`` on ``channel`` through ``POST /api/publish`` (an administrator's token); the reply.

    ``idempotency_key`` is sent as the ``Idempotency-Key`` header: retrying with it cannot publish twice.
    """
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    response = httpx.post(
        f"{base_url.rstrip('/')}/api/publish",
        json={"channel": channel, "data": data},
        headers=headers,
        timeout=timeout,
    )
    response.raise_for_status()
    result: Message = response.json()
    return result
