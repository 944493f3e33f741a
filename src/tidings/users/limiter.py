"""Failed-login limits: a sliding window of attempts per key (client IP, username), bounded in memory."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """At most ``limit`` counted attempts per key in any ``window`` seconds; tracks at most ``max_keys`` keys.

    An attempt is counted when it starts (so concurrent guesses count too); :meth:`forgive` takes back the last
    one of a key (a successful login).
    """

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        now = time.monotonic() if now is None else now
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return 0.0
        return hits[0] + self.window - now if len(hits) >= self.limit else 0.0

    def hit(self, key: str, now: float | None = None) -> float:
        """Count an attempt of ``key`` unless it is over the limit; returns :meth:`retry_after` (0: counted)."""
        now = time.monotonic() if now is None else now
        wait = self.retry_after(key, now)
        if wait > 0:
            return wait
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._hits.popitem(last=False)  # the least recently active key
            hits = self._hits[key] = deque()
        else:
            self._hits.move_to_end(key)
        hits.append(now)
        return 0.0

    def forgive(self, key: str) -> None:
        """Take back the last counted attempt of ``key``."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()
            if not hits:
                del self._hits[key]

    def reset(self, key: str) -> None:
        """Forget every attempt of ``key``."""
        self._hits.pop(key, None)
