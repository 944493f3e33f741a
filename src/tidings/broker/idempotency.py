"""Idempotency keys of publications: a repeat of a key within the TTL gets the original position back.

Used by the memory broker (one process); the Redis broker keeps the same record in Redis, inside its publish
script, so a key is honoured cluster-wide.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["IdempotencyCache"]


class IdempotencyCache:
    """``(channel, key) -> (offset, epoch)`` for ``ttl`` seconds, at most ``max_keys`` entries (oldest go first)."""

    def __init__(self, ttl: float = 300.0, max_keys: int = 100_000) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self._entries: OrderedDict[tuple[str, str], tuple[float, int, str]] = OrderedDict()

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first[0] > now:
                break
            entries.popitem(last=False)

    def get(self, channel: str, key: str) -> tuple[int, str] | None:
        """The ``(offset, epoch)`` recorded for ``key`` on ``channel``, if it has not expired."""
        self._expire(time.monotonic())
        entry = self._entries.get((channel, key))
        return None if entry is None else (entry[1], entry[2])

    def put(self, channel: str, key: str, offset: int, epoch: str) -> None:
        """Record the position a publication with ``key`` got."""
        now = time.monotonic()
        self._expire(now)
        self._entries[(channel, key)] = (now + self.ttl, offset, epoch)
        self._entries.move_to_end((channel, key))
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
