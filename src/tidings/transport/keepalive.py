"""Keepalive pings for every socket of a loop from one timer (a timing wheel), not one timer per socket.

A socket that sent a frame since it was last scheduled is alive and is not pinged; a silent one is.

Each open socket sits in one slot of the wheel; a tick every :attr:`Keepalive.tick` seconds takes the slot that is
due: sockets waiting for a pong time out (close 1011 "keepalive ping timeout"), the others get a ping and move to
the slot ``ws_ping_timeout`` ahead. A pong moves its socket ``ws_ping_interval`` ahead. The ping frame of one tick
(a random 4-byte payload) is built once and written to every socket pinged in that tick. An idle socket costs a
dict entry in one slot instead of a timer handle, and the loop wakes up once per tick instead of once per socket.
"""

from __future__ import annotations

import asyncio
import math
import os
import weakref
from typing import TYPE_CHECKING

from websockets.frames import Opcode

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback of a build without the C extension
    from websockets.utils import apply_mask

from tidings.protocol import CloseCode
from tidings.transport.base import OPEN, SocketBase
from tidings.transport.frames import ping_frame

__all__ = ["PONG_FRAME_SIZE", "Keepalive", "KeepaliveMixin", "keepalive_for"]

#: A client's pong to one of our pings, whole: FIN + PONG, MASK + 4-byte length, the mask, the 4 masked bytes.
PONG_FRAME_SIZE = 10
_PONG_HEAD = 0x80 | Opcode.PONG.value
_MASKED_4 = 0x80 | 4


class Keepalive:
    """The timing wheel of one loop and one (ping interval, ping timeout) pair."""

    __slots__ = ("__weakref__", "_handle", "_loop", "_next", "_pos", "_wheel", "count", "interval", "tick", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, timeout: float | None) -> None:
        self._loop = loop
        self.interval = interval
        self.timeout = timeout if timeout is not None and timeout > 0 else None
        self.tick = max(0.01, min(1.0, interval / 4, (self.timeout or interval) / 4))
        size = math.ceil(max(interval, self.timeout or 0) / self.tick) + 2
        self._wheel: list[dict[KeepaliveMixin, None]] = [{} for _ in range(size)]
        self._pos = 0  # the slot the next tick takes
        self._next = 0.0  # loop time of the next tick
        self._handle: asyncio.TimerHandle | None = None
        self.count = 0  # sockets in the wheel

    def schedule(self, proto: KeepaliveMixin, delay: float) -> None:
        """Call ``proto._keepalive_due`` about ``delay`` seconds from now (at most one tick early)."""
        self.cancel(proto)
        wheel = self._wheel
        if self._handle is None:
            self._next = self._loop.time() + self.tick
            self._handle = self._loop.call_at(self._next, self._run)
        ticks = min(len(wheel) - 1, max(1, math.ceil(delay / self.tick)))
        slot = (self._pos + ticks - 1) % len(wheel)
        wheel[slot][proto] = None
        proto._ka_slot = slot
        self.count += 1

    def cancel(self, proto: KeepaliveMixin) -> None:
        """Take ``proto`` out of the wheel."""
        slot = proto._ka_slot
        if slot >= 0:
            proto._ka_slot = -1
            if self._wheel[slot].pop(proto, 0) is None:
                self.count -= 1

    def _run(self) -> None:
        wheel = self._wheel
        now = self._loop.time()
        while True:
            pos = self._pos
            due = wheel[pos]
            self._pos = (pos + 1) % len(wheel)
            self._next += self.tick
            if due:
                wheel[pos] = {}
                self.count -= len(due)
                payload = os.urandom(4)
                frame = ping_frame(payload)
                for proto in due:
                    proto._ka_slot = -1
                    proto._keepalive_due(payload, frame)
            if self._next > now:
                break
        if self.count:
            self._handle = self._loop.call_at(self._next, self._run)
        else:
            self._handle = None


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[float, float | None], Keepalive]] = (
    weakref.WeakKeyDictionary()
)


def keepalive_for(loop: asyncio.AbstractEventLoop, interval: float | None, timeout: float | None) -> Keepalive | None:
    """The loop's wheel for this interval and timeout; None when keepalive pings are off."""
    if interval is None or interval <= 0:
        return None
    by_config = _wheels.get(loop)
    if by_config is None:
        by_config = _wheels[loop] = {}
    key = (interval, timeout)
    wheel = by_config.get(key)
    if wheel is None:
        wheel = by_config[key] = Keepalive(loop, interval, timeout)
    return wheel


class KeepaliveMixin(SocketBase):
    """Pings while open; close 1011 when a pong does not come back in time."""

    if not TYPE_CHECKING:  # the protocol class holds every field in its __slots__; mypy checks the fields here
        __slots__ = ()

    def _schedule_ping(self) -> None:
        """(Re)start the ping interval: after the handshake, and on each pong."""
        self._ping_payload = None
        self._heard = False
        keepalive = self._keepalive
        if keepalive is not None and self._state is OPEN:
            keepalive.schedule(self, keepalive.interval)

    def _stop_keepalive(self) -> None:
        keepalive = self._keepalive
        if keepalive is not None:
            keepalive.cancel(self)

    def _take_pong(self, data: bytes) -> bool:
        """The fast path for the read an idle socket makes most: a whole pong answering our ping, alone in one
        read, with the parser between frames (the caller checks that). True: taken, the parser need not see it.

        At 100,000 idle sockets one pong each per ping interval is most of the node's idle work; here it costs a
        few comparisons instead of the parser's generator chain, a frame object and an event list.
        """
        return data[0] == _PONG_HEAD and data[1] == _MASKED_4 and self._on_pong(apply_mask(data[6:], data[2:6]))

    def _on_pong(self, data: bytes | bytearray | memoryview) -> bool:
        """A pong's payload: True if it answers the ping outstanding on an open socket (which is rescheduled)."""
        if self._state is OPEN and self._ping_payload is not None and data == self._ping_payload:
            self._schedule_ping()
            return True
        return False

    def _keepalive_due(self, payload: bytes, frame: bytes) -> None:
        """The wheel's call: ping, or time out if the last ping is unanswered -- unless the peer sent a frame since
        the socket was last scheduled: that proves it alive as well as a pong would, so it is not pinged (a client
        with a heartbeat of its own shorter than the interval is never pinged)."""
        keepalive = self._keepalive
        if self._state is not OPEN or keepalive is None:
            return
        if self._heard:
            self._schedule_ping()
            return
        if self._ping_payload is not None:
            self._ping_timed_out()
            return
        self._write_pending_now()
        if not self.transport.is_closing():
            self.transport.write(frame)
        if keepalive.timeout is not None:
            self._ping_payload = payload
            keepalive.schedule(self, keepalive.timeout)
        else:
            keepalive.schedule(self, keepalive.interval)

    def _ping_timed_out(self) -> None:
        self._ping_payload = None
        self.conn.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._post_disconnect(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._flush()
        self._enter_closing()
