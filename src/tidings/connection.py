"""One client connection: its state, bounded outbound queue, writer task, rate limit and activity clock.

:meth:`Connection.enqueue` never awaits: it writes straight to the socket when the transport can take the frame
now, queues it otherwise, and disconnects the client with :attr:`CloseCode.SLOW_CONSUMER` when the queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tidings.handout import Handouts
from tidings.protocol import CloseCode, Frame
from tidings.transport import Transport

__all__ = ["Connection", "ConnectionState", "UserId", "UserInfo"]

logger = logging.getLogger("tidings.connection")
_ids = itertools.count(1)


#: A user's id: an ``int`` (the built-in users) or a ``str`` (a host's UUIDs, e-mail addresses...).
UserId = int | str


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The authenticated user behind a connection, as the host's ``authenticate`` returns it.

    ``id`` may be an ``int`` or a ``str``; it names the user's channel ``user:<id>`` and keys presence and the
    per-user connection limit. ``role`` ``"admin"`` lets the user use the admin endpoints and receive
    ``admin_notification`` (unless the host passes its own ``is_admin`` predicate to :class:`~tidings.Tidings`).
    """

    id: UserId
    username: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        """True for administrators."""
        return self.role == "admin"

    def public(self) -> dict[str, Any]:
        """What other users may see (presence)."""
        return {"user_id": self.id, "username": self.username}


class ConnectionState(Enum):
    """Life of a connection: OPEN -> CLOSING -> CLOSED."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_OPEN = ConnectionState.OPEN  # read once per delivery: a module global, not an attribute of the enum class
_NO_HANDOUTS = Handouts()  # a connection's until a hub registers it (nothing is ever deferred on it)


class Connection:
    """A client connection as the hub sees it."""

    __slots__ = (
        "_close_task",
        "_handouts",
        "_on_slow",
        "_queue",
        "_tokens",
        "_tokens_at",
        "_writer",
        "close_code",
        "close_reason",
        "id",
        "last_activity",
        "queue_max",
        "rate",
        "rate_burst",
        "rate_strikes",
        "state",
        "subscriptions",
        "transport",
        "user",
    )

    def __init__(
        self,
        user: UserInfo,
        transport: Transport,
        *,
        queue_max: int = 1024,
        rate: float = 50.0,
        rate_burst: int = 100,
        on_slow: Callable[[Connection], None] | None = None,
    ) -> None:
        self.id = f"c{next(_ids)}"
        self.user = user
        self.transport = transport
        self.queue_max = queue_max
        self.rate = rate
        self.rate_burst = rate_burst
        self.state = ConnectionState.OPEN
        self.subscriptions: set[str] = set()
        self.last_activity = time.monotonic()
        self.close_code: int | None = None
        self.close_reason = ""
        self._queue: list[Frame] = []  # a list: an empty deque costs ~600 bytes per idle connection
        self._writer: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._tokens = float(rate_burst)
        self._tokens_at = self.last_activity
        self.rate_strikes = 0
        self._on_slow = on_slow
        self._handouts = _NO_HANDOUTS  # the hub's (Hub.add): a fan-out it deferred goes out ahead of our frames

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user.username} {self.state.name}>"

    @property
    def queued(self) -> int:
        """Frames waiting to be written."""
        return len(self._queue)

    def enqueue(self, frame: Frame) -> None:
        """Send ``frame`` without waiting: write now, or queue, or disconnect a client that cannot keep up."""
        if self._handouts.pending is not None:
            self._handouts.hand_out()  # a fan-out deferred earlier in this loop pass goes first
        self.enqueue_unchecked(frame)

    def enqueue_unchecked(self, frame: Frame) -> None:
        """:meth:`enqueue` for the hub's fan-out, which hands out a deferred fan-out itself first."""
        if self.state is not _OPEN:
            return
        queue = self._queue
        if not queue and self.transport.try_write(frame):
            return
        if len(queue) >= self.queue_max:
            self._slow_consumer()
            return
        queue.append(frame)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def enqueue_now(self, frame: Frame) -> bool:
        """:meth:`enqueue` in a loop pass of its own (a deferred fan-out): True if the frame was written to the
        socket at once (nothing was waiting for it), False if it was dropped, queued or taken for the next write."""
        if self.state is not _OPEN:
            return False
        if not self._queue and self.transport.write_now(frame):
            return True
        self.enqueue_unchecked(frame)
        return False

    def send(self, message: dict[str, Any]) -> None:
        """Encode and enqueue one message meant for this connection only."""
        self.enqueue(Frame.of(message))

    async def _write_loop(self) -> None:
        queue = self._queue
        try:
            while queue and self.state is ConnectionState.OPEN:
                frames = list(queue)
                queue.clear()
                await self.transport.send(frames)
        except Exception as exc:  # the peer went away mid-write
            logger.debug("write to %s failed: %r", self, exc)
            self.state = ConnectionState.CLOSED
        finally:
            self._writer = None

    def _slow_consumer(self) -> None:
        logger.warning("%s: outbound queue full (%d frames), disconnecting", self, self.queue_max)
        self._queue.clear()
        if self._on_slow is not None:
            self._on_slow(self)
        writer = self._writer
        if writer is not None:
            writer.cancel()
        self.transport.abort()
        self.close(CloseCode.SLOW_CONSUMER, "Slow consumer: outbound queue overflow")

    def allow_message(self) -> bool:
        """Token-bucket rate limit on inbound messages; also marks activity."""
        now = time.monotonic()
        self.last_activity = now
        self._tokens = min(float(self.rate_burst), self._tokens + (now - self._tokens_at) * self.rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.rate_strikes += 1
            return False
        self._tokens -= 1.0
        self.rate_strikes = 0
        return True

    def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason`` after what is already queued (unless the queue overflowed)."""
        if self.state is not ConnectionState.OPEN:
            return
        if self._handouts.pending is not None:
            self._handouts.hand_out()  # a fan-out deferred before the close goes out before the close frame
        self.state = ConnectionState.CLOSING
        self.close_code = code
        self.close_reason = reason
        self._close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        writer = self._writer
        if writer is not None and not writer.cancelled():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(writer), 5)
        if self._queue:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.transport.send(list(self._queue)), 5)
            self._queue.clear()
        try:
            await asyncio.wait_for(self.transport.close(code, reason), 5)
        except Exception as exc:
            logger.debug("close of %s failed: %r", self, exc)
            self.transport.abort()
        self.state = ConnectionState.CLOSED

    async def wait_closed(self) -> None:
        """Wait for a close started by :meth:`close` to be sent."""
        if self._close_task is not None:
            with contextlib.suppress(BaseException):
                await self._close_task

    def mark_closed(self) -> None:
        """The peer disconnected: stop writing."""
        self.state = ConnectionState.CLOSED
        self._queue.clear()
        if self._writer is not None:
            self._writer.cancel()
