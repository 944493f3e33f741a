"""The broker interface every implementation follows (a :class:`typing.Protocol`), and optional capabilities.

:class:`Broker` is what every broker does. Two optional capabilities, checked with ``isinstance`` (they are
``runtime_checkable``), are implemented by the Redis broker:

* :class:`ReapNotifier`: ``on_reaped(handler)``. When a node dies without saying goodbye (``kill -9``, a lost
  machine), its node-liveness lease (``TIDINGS_NODE_LEASE_TTL``) runs out and the first survivor to notice
  releases its connections (per-user counts, stats) at once. Every connection of the dead node is then handed,
  **once, cluster-wide** (exactly one survivor receives each), to the handler as a :class:`ReapedConnection`:
  the user, the user's public info, the channels the connection was present in, and in which of them the user
  has no connection left (``left``: the channels where a ``leave`` is due). The broker has already removed the
  presence entries when the handler runs. A survivor that dies while handling a batch loses it (the entries
  themselves are gone either way).
* :class:`CountedPresence`: presence with member counts and pages, for rooms of thousands (join and leave are
  O(1) in Redis, ``presence_page`` returns one page after a cursor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tidings.errors import BrokerUnavailable
from tidings.protocol import Frame

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "CountedPresence",
    "HistoryResult",
    "PresencePage",
    "Publication",
    "PublicationHandler",
    "ReapNotifier",
    "ReapedConnection",
    "ReapedHandler",
    "presence_score",
]


@dataclass(slots=True)
class Publication:
    """One message published on a channel: its position in the channel's stream and its encoded frame."""

    channel: str
    offset: int
    epoch: str
    frame: Frame
    #: True when the publish repeated an idempotency key: the original position, nothing was delivered.
    duplicate: bool = False


@dataclass(slots=True)
class HistoryResult:
    """Answer to a recovery request: the publications after the client's offset and whether that is all of them."""

    publications: list[Publication] = field(default_factory=list)
    offset: int = 0
    epoch: str = ""
    recovered: bool = True


@dataclass(slots=True)
class ReapedConnection:
    """A connection of a dead node, released by the broker (see :class:`ReapNotifier`).

    ``conn_id`` is the id the dead node gave the connection (``Connection.id`` there), ``info`` the user's public
    info as it was passed to ``connection_add``, ``channels`` the channels the connection was present in
    (``presence_add``), ``left`` those of them in which the user has no connection left on any node.
    """

    node_id: str
    conn_id: str
    user_id: UserId
    info: dict[str, Any]
    channels: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PresencePage:
    """One page of a channel's members (in user id order) and the exact member count."""

    users: list[dict[str, Any]]
    count: int
    cursor: int | None  # pass it back as ``after`` for the next page; None on the last page


PublicationHandler = Callable[[Publication], None]
ReapedHandler = Callable[[list[ReapedConnection]], Awaitable[None]]


class Broker(Protocol):
    """Publish with offsets, keep history, fan out across nodes, track presence and connections cluster-wide.

    A node calls :meth:`start` with a handler that receives every publication on the channels the node has
    :meth:`subscribe`-d to, in offset order per channel, including the node's own publications.
    """

    @property
    def healthy(self) -> bool:
        """True while the broker is reachable."""

    async def start(self, handler: PublicationHandler) -> None:
        """Connect and start delivering publications to ``handler``."""

    async def close(self) -> None:
        """Stop delivering and release connections."""

    async def publish(self, channel: str, body: bytes, *, idempotency_key: str | None = None) -> Publication:
        """Give ``body`` (an encoded JSON object) the channel's next offset, store it in history, fan it out.

        With ``idempotency_key``, a repeat of the key on the channel within the broker's idempotency TTL stores and
        delivers nothing and returns the original offset and epoch (``duplicate`` True).
        """

    async def subscribe(self, channel: str) -> None:
        """Start receiving the channel's publications on this node."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications on this node."""

    async def position(self, channel: str) -> tuple[int, str]:
        """The channel's latest offset and its epoch."""

    async def recover(self, channel: str, since_offset: int, since_epoch: str) -> HistoryResult:
        """Publications after ``since_offset`` still in history; ``recovered`` False if some are gone."""

    async def presence_add(self, channel: str, conn_id: str, info: dict[str, Any]) -> bool:
        """Record a connection in the channel; True when its user was not present before."""

    async def presence_remove(self, channel: str, conn_id: str, user_id: UserId) -> bool:
        """Forget a connection; True when its user has no connection left in the channel."""

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """Users present in the channel across all nodes, one entry per user."""

    async def connection_add(self, user_id: UserId, conn_id: str, info: dict[str, Any] | None = None) -> int:
        """Count a new connection of ``user_id`` cluster-wide; returns the user's count including it.

        ``info`` (the user's public info) is what a :class:`ReapNotifier` reports if this node dies with the
        connection open; other brokers ignore it."""

    async def connection_remove(self, user_id: UserId, conn_id: str) -> None:
        """Forget a connection."""

    async def stats(self) -> dict[str, int]:
        """Cluster totals: ``{"users": n, "connections": n}``."""

    def info(self) -> dict[str, Any]:
        """Health details for ``/healthz``."""


@runtime_checkable
class ReapNotifier(Protocol):
    """A broker that reports the connections of dead nodes once, cluster-wide (see the module docstring)."""

    def on_reaped(self, handler: ReapedHandler | None) -> None:
        """Call ``handler`` with each batch of a dead node's connections this node was chosen to handle."""


@runtime_checkable
class CountedPresence(Protocol):
    """Presence with exact member counts and pages (O(1) join/leave whatever the room size)."""

    async def presence_join(self, channel: str, conn_id: str, info: dict[str, Any]) -> tuple[bool, int]:
        """:meth:`Broker.presence_add`, and the channel's member count (users) after it."""

    async def presence_leave(self, channel: str, conn_id: str, user_id: UserId) -> tuple[bool, int]:
        """:meth:`Broker.presence_remove`, and the channel's member count after it."""

    async def presence_page(self, channel: str, after: int = 0, limit: int = 100) -> PresencePage:
        """Members with a user id above ``after``, at most ``limit`` of them, and the member count."""


def presence_score(user_id: UserId) -> int:
    """The presence index score of a user: an int id itself; a str id (UUIDs...) a stable 52-bit hash above
    2**52, so string ids page (in hash order) like int ones and scores stay exact in a double."""
    if isinstance(user_id, int):
        return user_id
    digest = hashlib.sha1(str(user_id).encode(), usedforsecurity=False).digest()
    return (1 << 52) + int.from_bytes(digest[:8], "big") % (1 << 52)
