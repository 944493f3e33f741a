"""The raw fan-out transport of one socket (:class:`tidings.transport.Transport`), and write coalescing.

:meth:`FanoutMixin.try_write` never writes by itself: it parks the frame on the socket and registers the socket
with the loop's :class:`WriteBatcher`, which writes every registered socket's frames as one ``write()`` -- once
per loop pass, or, with a write delay, at most once per delay while the node is busy. The frames' bytes are
shared by every recipient (built once per publication), and a run of frames pending on many sockets is joined
once per flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from uvicorn.protocols.utils import ClientDisconnected

from tidings.transport.base import CLOSED, OPEN, SocketBase
from tidings.transport.frames import Frame

__all__ = ["ABORT_GRACE", "PENDING_MAX", "FanoutMixin", "WriteBatcher", "batcher_for", "write_stats"]

#: Seconds an aborted (stalled) connection keeps its socket so a final close frame can still reach the client.
ABORT_GRACE = 5.0
#: Frames a socket may hold for its next coalesced write; past that, the connection's own queue takes them.
PENDING_MAX = 64

logger = logging.getLogger("tidings.transport")


class WriteBatcher:
    """Coalesces fan-out writes: every socket that got frames since the last flush gets them in one ``write()``.

    One per event loop, write delay and window cap. The flush runs once per loop pass (``call_soon``), so frames
    reaching one socket in the same pass share a system call. While the node is busy the flush waits for a window
    after the previous one: ``window`` = the larger of ``delay`` and the time the previous flush took (at most
    ``window_max``). When the previous flush ended less than ``window`` ago (publications arriving back to back)
    the next one waits until ``window`` after it, so a busy node makes fewer, larger writes and spends at most
    about half its time writing while publications keep coming; an idle node (no flush within the window) flushes
    in the next pass, without waiting. Sockets waiting for the same run of frames get the same joined ``bytes``
    (built once per flush).
    """

    __slots__ = (
        "__weakref__",
        "_cost",
        "_dirty",
        "_last",
        "_loop",
        "_scheduled",
        "delay",
        "flushes",
        "window_max",
        "writes",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float = 0.0, window_max: float = 0.0) -> None:
        self._loop = loop
        self.delay = delay
        self.window_max = window_max
        self._dirty: list[FanoutMixin] = []
        self._scheduled = False
        self._last = -1e9  # loop time of the last flush
        self._cost = 0.0  # seconds the last flush took
        self.flushes = 0
        self.writes = 0

    @property
    def window(self) -> float:
        """Seconds after a flush during which the node counts as busy and the next flush waits."""
        cost = self._cost
        if cost > self.window_max:
            cost = self.window_max
        return cost if cost > self.delay else self.delay

    def idle(self) -> bool:
        """No flush is due and the last one ended more than a window ago: frames may go out at once."""
        return not self._scheduled and self._last + self.window <= self._loop.time()

    def note_writes(self, writes: int, seconds: float) -> None:
        """Count ``writes`` made outside a flush (a deferred fan-out's hand-out) as one flush that took
        ``seconds``: the window that follows is the same."""
        self.flushes += 1
        self.writes += writes
        self._last = self._loop.time()
        self._cost = seconds

    def add(self, proto: FanoutMixin) -> None:
        """``proto`` has its first pending frame: flush it with the others."""
        self._dirty.append(proto)
        if not self._scheduled:
            self._scheduled = True
            window = self.window
            if window > 0:
                due = self._last + window
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
        self.flushes += 1
        self.writes += len(dirty)
        start = time.perf_counter()
        joined: dict[bool, tuple[list[Frame], bytes]] = {}
        for proto in dirty:
            try:
                proto._write_pending(joined)
            except Exception:  # one broken socket must not hold the others' frames back
                logger.debug("coalesced write failed", exc_info=True)
        # when the flush ended: a large fan-out takes a while to write, and the node is busy until it is done
        self._last = self._loop.time()
        self._cost = time.perf_counter() - start


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[float, float], WriteBatcher]] = (
    weakref.WeakKeyDictionary()
)


def write_stats() -> tuple[int, int]:
    """(coalesced flushes, socket writes they made) on the running loop, over all its write delays."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return 0, 0
    batchers = _batchers.get(loop, {}).values()
    return sum(b.flushes for b in batchers), sum(b.writes for b in batchers)


def batcher_for(loop: asyncio.AbstractEventLoop, delay: float, window_max: float = 0.0) -> WriteBatcher:
    """The loop's :class:`WriteBatcher` for ``delay`` and ``window_max`` (created on first use)."""
    by_delay = _batchers.get(loop)
    if by_delay is None:
        by_delay = _batchers[loop] = {}
    batcher = by_delay.get((delay, window_max))
    if batcher is None:
        batcher = by_delay[delay, window_max] = WriteBatcher(loop, delay, window_max)
    return batcher


class FanoutMixin(SocketBase):
    """``try_write`` / ``send`` / ``close`` / ``abort``: the hub's raw transport for this socket."""

    if not TYPE_CHECKING:  # the protocol class holds every field in its __slots__; mypy checks the fields here
        __slots__ = ()

    def try_write(self, frame: Frame) -> bool:
        """Take ``frame`` for this socket's next coalesced write if the socket can take it without buffering past
        its mark; False: the connection queues it (and :meth:`send` writes it later, in order)."""
        if self._ready:
            pending = self._pending
            if pending is None:
                # the frame itself, not a one-item list: a list per socket per publication is a container the
                # cyclic GC tracks, and thousands of them alive at each collection lengthen every GC pause
                self._pending = frame
                batcher = self._batcher
                if batcher._scheduled:  # the flush is queued: join it (no call per recipient of a fan-out)
                    batcher._dirty.append(self)
                else:
                    batcher.add(self)
            elif pending.__class__ is list:
                if len(pending) >= PENDING_MAX:
                    return False
                pending.append(frame)
            else:
                # a run: in the socket's own list, kept for its life. A new list per socket per flush would
                # outlive a few young collections (it waits for the window), be promoted, and so bring on the
                # full collections that pause a node with thousands of sockets for 100 ms and more
                run = self._run
                if run is None:
                    run = self._run = []
                run.append(pending)  # type: ignore[arg-type]
                run.append(frame)
                self._pending = run
            return True
        return False

    def write_now(self, frame: Frame) -> bool:
        """Write ``frame`` at once when nothing is pending or buffered past the mark for this socket (the
        hand-out of a deferred fan-out, see :mod:`tidings.handout`); False: :meth:`try_write` decides."""
        if self._ready and self._pending is None:
            transport = self.transport
            if not transport.is_closing():
                transport.write(frame.wire_deflate if self._compress else (frame._wire or frame.wire))
                return True
        return False

    def write_idle(self) -> bool:
        """Whether this loop's write batcher has nothing due (see :meth:`WriteBatcher.idle`)."""
        return self._batcher.idle()

    def note_writes(self, writes: int, seconds: float) -> None:
        """See :meth:`WriteBatcher.note_writes`."""
        self._batcher.note_writes(writes, seconds)

    def _write_pending(self, joined: dict[bool, tuple[list[Frame], bytes]]) -> None:
        """Write the frames :meth:`try_write` took as one ``transport.write``. ``joined`` holds, per kind of socket
        (compressing or not), the last run joined in this flush and its bytes: sockets subscribed alike come one
        after another and share them."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._state is CLOSED or self._aborted or self.transport.is_closing():
            self._drop_pending()
            return
        compress = self._compress
        if pending.__class__ is not list:
            frame: Frame = pending  # type: ignore[assignment]
            # the cached slot first: one attribute read instead of a property call per recipient
            self.transport.write(frame.wire_deflate if compress else (frame._wire or frame.wire))
            return
        run: list[Frame] = pending
        last = joined.get(compress)
        if last is not None and last[0] == run:  # list ==: same frames (identity first, no Frame.__eq__)
            data = last[1]
        else:
            if compress:
                data = b"".join([frame.wire_deflate for frame in run])
            else:
                data = b"".join([frame.wire for frame in run])
            joined[compress] = (run.copy(), data)
        run.clear()
        self.transport.write(data)

    def _write_pending_now(self) -> None:
        """Write frames taken by :meth:`try_write` ahead of anything else about to be written (order)."""
        if self._pending is not None:
            self._write_pending({})

    def _drop_pending(self) -> None:
        """Forget the frames taken for the next write (the socket is gone or aborted)."""
        self._pending = None
        run = self._run
        if run:
            run.clear()

    async def send(self, frames: Sequence[Frame]) -> None:
        """Write queued frames as one ``transport.write``, after the buffer has drained; in order with try_write."""
        self._sending = True
        self._ready = False
        self._write_pending_now()  # frames taken earlier go first
        try:
            while self._paused and self._state is OPEN and not self._aborted:
                await self._wait_drain()
            if self._state is not OPEN or self._aborted:
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
        """Send a close frame (after the frames already taken; it is appended to the socket's buffer)."""
        self._send_close(code, reason)

    def abort(self) -> None:
        """Stop serving a stalled client at once: no more data frames, and the application sees a disconnect now.

        The socket itself gets a short grace: a close frame sent right after (the connection's 4000 "slow
        consumer") is appended to the buffer and the TCP connection closed once that drains, so a client that
        resumes reading learns why; after :data:`ABORT_GRACE` seconds the buffer is discarded and the socket
        dropped.
        """
        self._ready = False
        self._drop_pending()
        state = self._state
        if state is CLOSED or self.transport is None:
            return
        if state is not OPEN or self._aborted:
            self._hard_abort()
            return
        self._aborted = True  # blocks writes from send() and ASGI sends; close() still goes out
        self._post_disconnect(1006, "aborted")
        self._cancel_timer()
        self._timer = self._loop.call_later(ABORT_GRACE, self._hard_abort)

    def _hard_abort(self) -> None:
        self._timer = None
        self._ready = False
        if self._state is not CLOSED:
            self.transport.abort()
