"""Deferred hand-out: on an idle node, a large fan-out's frame reaches each socket as it is handed out.

A publication's frame is normally handed to every recipient at once (:meth:`Connection.enqueue` parks it on the
socket) and written by the write batcher's flush in the next loop pass, so the first socket is written only after
the last recipient has been handed the frame: about half a microsecond per recipient, 2-3 ms at 5,000. When nothing
else is waiting to be written (the batcher is idle), :meth:`Handouts.defer` keeps the frame and a snapshot of the
recipients instead and hands it out in the next loop pass, where the same loop writes each socket in turn
(:meth:`Connection.enqueue_now`): the first recipients are written at once, and each socket still gets one
``write()``.

Order and coalescing are those of the immediate hand-out. Anything else about to reach one of the hub's connections
before that pass -- another publication, a direct message, a close -- first hands the deferred frame out the usual
way (:meth:`Handouts.hand_out`), so it goes out ahead, in the same write as what follows. A busy node (the batcher
scheduled or inside its window) never defers: its frames wait for the coalesced flush as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.connection import Connection
    from tidings.transport.frames import Frame

__all__ = ["DEFER_MIN", "Handouts"]

logger = logging.getLogger("tidings.handout")

#: Fewest recipients for which a fan-out is deferred: below it the hand-out takes a few microseconds anyway.
DEFER_MIN = 32


class Handouts:
    """The fan-out of one hub waiting to be handed out in the next loop pass (at most one at a time)."""

    __slots__ = ("deferred", "pending")

    def __init__(self) -> None:
        #: (frame, recipients) waiting for the next loop pass, or None.
        self.pending: tuple[Frame, list[Connection]] | None = None
        #: Fan-outs handed out by the deferred pass (the others were handed out early, by something else).
        self.deferred = 0

    def defer(self, frame: Frame, recipients: Collection[Connection]) -> bool:
        """Hand ``frame`` to ``recipients`` (a snapshot is taken) in the next loop pass if nothing is waiting to be
        written; False: hand it out now (after the fan-out already deferred, if any), or the node is busy."""
        if self.pending is not None or not recipients or not next(iter(recipients)).transport.write_idle():
            return False
        self.pending = (frame, list(recipients))
        asyncio.get_running_loop().call_soon(self._run)
        return True

    def hand_out(self) -> None:
        """Hand the deferred frame out now, the usual way (its recipients' next coalesced write takes it)."""
        item = self.pending
        if item is None:
            return
        self.pending = None
        frame, recipients = item
        for conn in recipients:
            conn.enqueue_unchecked(frame)

    def _run(self) -> None:
        item = self.pending
        if item is None:  # handed out already, ahead of something else for one of its recipients
            return
        self.pending = None
        frame, recipients = item
        start = time.perf_counter()
        written = 0
        for conn in recipients:
            try:
                if conn.enqueue_now(frame):
                    written += 1
            except Exception:  # one broken socket must not hold the others' frame back
                logger.debug("deferred hand-out to %s failed", conn, exc_info=True)
        self.deferred += 1
        recipients[0].transport.note_writes(written, time.perf_counter() - start)
