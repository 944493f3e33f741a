"""The in-memory broker: one process, no dependencies; history and presence live in dictionaries."""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidings.broker.base import HistoryResult, Publication, PublicationHandler
from tidings.protocol import Frame, with_position

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = ["MemoryBroker"]


@dataclass(slots=True)
class _Stream:
    offset: int = 0
    last_publish: float = 0.0
    history: deque[Publication] = field(default_factory=deque)


class MemoryBroker:
    """A broker for a single process: publications go straight to the local node's handler."""

    def __init__(self, *, history_size: int = 1000, history_ttl: float = 86400) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.epoch = secrets.token_hex(4)
        self._streams: dict[str, _Stream] = {}
        self._handler: PublicationHandler | None = None
        self._subscribed: set[str] = set()
        self._presence: dict[str, dict[str, dict[str, Any]]] = {}
        self._connections: dict[UserId, set[str]] = {}

    @property
    def healthy(self) -> bool:
        """Always True: nothing to lose contact with."""
        return True

    async def start(self, handler: PublicationHandler) -> None:
        """Remember the node's publication handler."""
        self._handler = handler

    async def close(self) -> None:
        """Stop delivering."""
        self._handler = None

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(history=deque(maxlen=self.history_size or None))
        elif stream.history and time.monotonic() - stream.last_publish > self.history_ttl:
            stream.history.clear()
        return stream

    async def publish(self, channel: str, body: bytes) -> Publication:
        """Assign the next offset, keep the publication in history and deliver it to the node."""
        stream = self._stream(channel)
        stream.offset += 1
        stream.last_publish = time.monotonic()
        pub = Publication(channel, stream.offset, self.epoch, Frame(with_position(body, stream.offset, self.epoch)))
        if self.history_size:
            stream.history.append(pub)
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
        """The channel's latest offset and the epoch."""
        stream = self._streams.get(channel)
        return (stream.offset if stream else 0), self.epoch

    async def recover(self, channel: str, since_offset: int, since_epoch: str) -> HistoryResult:
        """Publications after ``since_offset``; not recovered if the epoch differs or history is too short."""
        stream = self._stream(channel)
        if since_epoch != self.epoch:
            return HistoryResult([], stream.offset, self.epoch, recovered=False)
        pubs = [p for p in stream.history if p.offset > since_offset]
        complete = since_offset >= stream.offset or (bool(pubs) and pubs[0].offset == since_offset + 1)
        return HistoryResult(pubs, stream.offset, self.epoch, recovered=complete)

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

    async def connection_add(self, user_id: UserId, conn_id: str) -> int:
        """Count a connection; returns the user's connection count."""
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
        return {"kind": "memory", "healthy": True, "epoch": self.epoch}
