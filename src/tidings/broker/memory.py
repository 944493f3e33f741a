"""The in-memory broker: one process, no dependencies; history and presence live in dictionaries.

Memory is bounded three ways, so no client can make a node grow without limit:

* per channel: at most ``history_size`` publications and ``history_max_bytes`` bytes of history;
* per node: at most ``history_budget_bytes`` bytes of history over all channels; above it the least recently
  used channel loses its history first;
* per node: at most ``max_channels`` channels with any state (offset, epoch, history); above it the least
  recently used channel that no local connection is subscribed to is forgotten.

A channel that loses its history this way gets a new epoch, so a client recovering from it is told
``recovered: false`` instead of silently missing publications.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidings.broker.base import HistoryResult, Publication, PublicationHandler
from tidings.broker.idempotency import IdempotencyCache
from tidings.protocol import Frame, with_position

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = ["ENTRY_OVERHEAD", "MemoryBroker"]

ENTRY_OVERHEAD = 160
"""Bytes charged per history entry on top of its payload (the Publication and Frame objects, the deque slot)."""


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    last_publish: float = 0.0
    nbytes: int = 0
    history: deque[Publication] = field(default_factory=deque)


def _cost(pub: Publication) -> int:
    return len(pub.frame.payload) + ENTRY_OVERHEAD


class MemoryBroker:
    """A broker for a single process: publications go straight to the local node's handler."""

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 86400,
        history_max_bytes: int = 1 << 20,
        history_budget_bytes: int = 32 << 20,
        max_channels: int = 10_000,
        idempotency_ttl: float = 300.0,
        idempotency_max_keys: int = 100_000,
    ) -> None:
        self.idempotency = IdempotencyCache(idempotency_ttl, idempotency_max_keys)
        self.history_size = history_size
        #: ``channel -> size`` (None: ``history_size``): a namespace's own history size, set by the node
        self.history_limit: Callable[[str], int | None] | None = None
        self.history_ttl = history_ttl
        self.history_budget_bytes = max(1, history_budget_bytes)
        self.history_max_bytes = max(1, min(history_max_bytes, self.history_budget_bytes))
        self.max_channels = max(1, max_channels)
        self.epoch = secrets.token_hex(4)
        self.history_bytes = 0
        self.evictions = 0
        self._generation = 0
        self._streams: OrderedDict[str, _Stream] = OrderedDict()  # least recently used first
        self._handler: PublicationHandler | None = None
        self._subscribed: set[str] = set()
        self._presence: dict[str, dict[str, dict[str, Any]]] = {}
        self._connections: dict[UserId, set[str]] = {}

    @property
    def healthy(self) -> bool:
        """Always True: nothing to lose contact with."""
        return True

    @property
    def channel_count(self) -> int:
        """Channels with state (offset, epoch or history) on this node."""
        return len(self._streams)

    async def start(self, handler: PublicationHandler) -> None:
        """Remember the node's publication handler."""
        self._handler = handler

    async def close(self) -> None:
        """Stop delivering."""
        self._handler = None

    # ---- channel state -------------------------------------------------------------------------------
    def _new_epoch(self) -> str:
        self._generation += 1
        return f"{self.epoch}-{self._generation:x}"

    def _stream(self, channel: str) -> _Stream:
        """The channel's state (created if needed), marked most recently used; expired history is dropped."""
        stream = self._streams.get(channel)
        if stream is None:
            self._make_room()
            stream = self._streams[channel] = _Stream(self._new_epoch())
        else:
            self._streams.move_to_end(channel)
            if stream.history and time.monotonic() - stream.last_publish > self.history_ttl:
                self._drop_history(stream)
        return stream

    def _make_room(self) -> None:
        """Forget least recently used channels until one more fits under ``max_channels``."""
        scanned = 0
        while len(self._streams) >= self.max_channels and scanned < len(self._streams):
            channel, stream = next(iter(self._streams.items()))
            if channel in self._subscribed:
                self._streams.move_to_end(channel)
                scanned += 1
                continue
            if stream.history:
                self.evictions += 1
            self._forget(channel, stream)

    def _forget(self, channel: str, stream: _Stream) -> None:
        self.history_bytes -= stream.nbytes
        del self._streams[channel]

    def _drop_history(self, stream: _Stream) -> None:
        """Empty a stream's history; a new epoch tells recovering clients that publications are gone."""
        self.history_bytes -= stream.nbytes
        stream.nbytes = 0
        stream.history.clear()
        stream.epoch = self._new_epoch()

    def _size(self, channel: str) -> int:
        size = None if self.history_limit is None else self.history_limit(channel)
        return self.history_size if size is None else size

    def _trim(self, stream: _Stream, size: int | None = None) -> None:
        """Apply the per-channel bounds (count and bytes) to ``stream``, oldest first."""
        history = stream.history
        size = self.history_size if size is None else size
        while history and (len(history) > size or stream.nbytes > self.history_max_bytes):
            cost = _cost(history.popleft())
            stream.nbytes -= cost
            self.history_bytes -= cost

    def _enforce_budget(self) -> None:
        """Evict least recently used channels' history until the node's history fits its budget."""
        while self.history_bytes > self.history_budget_bytes and self._streams:
            channel, stream = next(iter(self._streams.items()))
            if channel in self._subscribed:
                self._drop_history(stream)
                self._streams.move_to_end(channel)
            else:
                self._forget(channel, stream)
            self.evictions += 1

    def forget(self, channel: str) -> None:
        """Drop everything kept about ``channel`` (its next incarnation has a new epoch)."""
        stream = self._streams.get(channel)
        if stream is not None:
            self._forget(channel, stream)

    # ---- broker interface ------------------------------------------------------------------------------
    async def publish(self, channel: str, body: bytes, *, idempotency_key: str | None = None) -> Publication:
        """Assign the next offset, keep the publication in history and deliver it to the node.

        A repeated ``idempotency_key`` (within ``idempotency_ttl``) returns the original position, delivering nothing.
        """
        if idempotency_key is not None:
            seen = self.idempotency.get(channel, idempotency_key)
            if seen is not None:
                return Publication(channel, seen[0], seen[1], Frame(with_position(body, *seen)), duplicate=True)
        stream = self._stream(channel)
        stream.offset += 1
        stream.last_publish = time.monotonic()
        payload = with_position(body, stream.offset, stream.epoch)
        pub = Publication(channel, stream.offset, stream.epoch, Frame(payload))
        size = self._size(channel)
        if size:
            # A frame of its own: the delivered one caches its wire bytes for the sockets; history keeps the payload.
            kept = Publication(channel, stream.offset, stream.epoch, Frame(payload))
            cost = _cost(kept)
            if cost <= self.history_max_bytes:
                stream.history.append(kept)
                stream.nbytes += cost
                self.history_bytes += cost
            else:
                self.history_bytes -= stream.nbytes
                stream.history.clear()
                stream.nbytes = 0
            self._trim(stream, size)
            self._enforce_budget()
        if idempotency_key is not None:
            self.idempotency.put(channel, idempotency_key, stream.offset, stream.epoch)
        if self._handler is not None and channel in self._subscribed:
            self._handler(pub)
        return pub

    async def subscribe(self, channel: str) -> None:
        """Deliver the channel's publications to the node."""
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering the channel's publications."""
        self._subscribed.discard(channel)

    async def position(self, channel: str) -> tuple[int, str]:
        """The channel's latest offset and its epoch."""
        stream = self._stream(channel)
        return stream.offset, stream.epoch

    async def recover(self, channel: str, since_offset: int, since_epoch: str) -> HistoryResult:
        """Publications after ``since_offset``; not recovered if the epoch differs or history is too short."""
        stream = self._stream(channel)
        if since_epoch != stream.epoch:
            return HistoryResult([], stream.offset, stream.epoch, recovered=False)
        pubs = [
            Publication(p.channel, p.offset, p.epoch, Frame(p.frame.payload))
            for p in stream.history
            if p.offset > since_offset
        ]
        complete = since_offset >= stream.offset or (bool(pubs) and pubs[0].offset == since_offset + 1)
        return HistoryResult(pubs, stream.offset, stream.epoch, recovered=complete)

    async def presence_add(self, channel: str, conn_id: str, info: dict[str, Any]) -> bool:
        """Record a connection in the channel; True if its user is new there."""
        members = self._presence.setdefault(channel, {})
        new_user = all(entry["user_id"] != info["user_id"] for entry in members.values())
        members[conn_id] = info
        return new_user

    async def presence_remove(self, channel: str, conn_id: str, user_id: UserId) -> bool:
        """Forget a connection; True if its user has left the channel entirely."""
        members = self._presence.get(channel)
        if not members or members.pop(conn_id, None) is None:
            return False
        if not members:
            del self._presence[channel]
            return True
        return all(entry["user_id"] != user_id for entry in members.values())

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """One entry per user present in the channel."""
        users: dict[UserId, dict[str, Any]] = {}
        for entry in self._presence.get(channel, {}).values():
            users.setdefault(entry["user_id"], entry)
        return sorted(users.values(), key=lambda e: (isinstance(e["user_id"], str), e["user_id"]))

    async def connection_add(self, user_id: UserId, conn_id: str, info: dict[str, Any] | None = None) -> int:
        """Count a connection; returns the user's connection count (``info`` is not needed in one process)."""
        conns = self._connections.setdefault(user_id, set())
        conns.add(conn_id)
        return len(conns)

    async def connection_remove(self, user_id: UserId, conn_id: str) -> None:
        """Forget a connection."""
        conns = self._connections.get(user_id)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self._connections[user_id]

    async def stats(self) -> dict[str, int]:
        """Users and connections of this process."""
        return {"users": len(self._connections), "connections": sum(map(len, self._connections.values()))}

    def info(self) -> dict[str, Any]:
        """Health details."""
        return {
            "kind": "memory",
            "healthy": True,
            "epoch": self.epoch,
            "channels": len(self._streams),
            "history_bytes": self.history_bytes,
            "history_evictions": self.evictions,
        }
