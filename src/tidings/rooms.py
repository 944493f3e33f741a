"""Limits on what clients create and send: chat rooms per node, rooms and publish bytes per user.

A chat room is a channel clients may publish to (``room:<name>`` by default). It comes into existence on this node
when someone first subscribes or publishes to it. :class:`RoomRegistry` keeps the rooms known to the node, least
recently used first, and at ``max_rooms`` forgets the least recently used room nobody here is subscribed to.
:class:`UserLimits` holds one token bucket per user for bytes published and one for rooms created; a bucket that
has refilled is dropped (:meth:`UserLimits.prune`), so the state stays bounded by the users active lately, and
reconnecting does not refill a bucket early.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = ["RoomRegistry", "TokenBucket", "UserLimits"]


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; :meth:`take` spends them if there are enough."""

    rate: float
    capacity: float
    tokens: float = -1.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity
        self.stamp = time.monotonic()

    def full(self) -> bool:
        """Whether the bucket has refilled (forgetting it changes nothing)."""
        return self.tokens + (time.monotonic() - self.stamp) * self.rate >= self.capacity

    def take(self, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens; False (nothing spent) when the bucket does not hold that many."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


class RoomRegistry:
    """The chat rooms this node knows, least recently used first, at most ``max_rooms`` of them."""

    def __init__(self, max_rooms: int) -> None:
        self.max_rooms = max(1, max_rooms)
        self._rooms: OrderedDict[str, None] = OrderedDict()
        self.created = 0
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, channel: object) -> bool:
        return channel in self._rooms

    def touch(self, channel: str) -> bool:
        """Mark a known room as used now; False if the room is not known."""
        if channel not in self._rooms:
            return False
        self._rooms.move_to_end(channel)
        return True

    def evictable(self, in_use: Callable[[str], bool]) -> str | None:
        """The least recently used room for which ``in_use`` is False, or None when every room is in use."""
        for channel in self._rooms:
            if not in_use(channel):
                return channel
        return None

    def full(self) -> bool:
        """Whether creating a room needs another one forgotten first."""
        return len(self._rooms) >= self.max_rooms

    def add(self, channel: str) -> None:
        """Record a new room (the caller made space first)."""
        self._rooms[channel] = None
        self.created += 1

    def discard(self, channel: str) -> None:
        """Forget a room."""
        if self._rooms.pop(channel, 0) is None:
            self.forgotten += 1


class UserLimits:
    """Per-user token buckets: bytes published per second and rooms created per minute."""

    def __init__(self, *, bytes_per_second: float, burst_bytes: float, rooms_per_minute: float) -> None:
        self.bytes_per_second = bytes_per_second
        self.burst_bytes = burst_bytes
        self.rooms_per_minute = rooms_per_minute
        self._bytes: dict[UserId, TokenBucket] = {}
        self._rooms: dict[UserId, TokenBucket] = {}

    def allow_bytes(self, user_id: UserId, nbytes: int) -> bool:
        """Spend ``nbytes`` of the user's publish budget; False when over the rate."""
        bucket = self._bytes.get(user_id)
        if bucket is None:
            bucket = self._bytes[user_id] = TokenBucket(self.bytes_per_second, self.burst_bytes)
        return bucket.take(nbytes)

    def allow_room(self, user_id: UserId) -> bool:
        """Spend one of the user's room creations; False when over the rate."""
        bucket = self._rooms.get(user_id)
        if bucket is None:
            bucket = self._rooms[user_id] = TokenBucket(self.rooms_per_minute / 60.0, self.rooms_per_minute)
        return bucket.take(1.0)

    def prune(self) -> None:
        """Drop the buckets that have refilled."""
        for buckets in (self._bytes, self._rooms):
            for user_id in [uid for uid, bucket in buckets.items() if bucket.full()]:
                del buckets[user_id]

    def __len__(self) -> int:
        return len(self._bytes.keys() | self._rooms.keys())
