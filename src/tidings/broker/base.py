"""The broker interface every implementation follows (a :class:`typing.Protocol`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tidings.protocol import Frame

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = ["Broker", "BrokerUnavailable", "HistoryResult", "Publication", "PublicationHandler"]


class BrokerUnavailable(Exception):
    """The broker cannot be reached; publishing fails loudly instead of dropping (HTTP 503)."""


@dataclass(slots=True)
class Publication:
    """One message published on a channel: its position in the channel's stream and its encoded frame."""

    channel: str
    offset: int
    epoch: str
    frame: Frame


@dataclass(slots=True)
class HistoryResult:
    """Answer to a recovery request: the publications after the client's offset and whether that is all of them."""

    publications: list[Publication] = field(default_factory=list)
    offset: int = 0
    epoch: str = ""
    recovered: bool = True


PublicationHandler = Callable[[Publication], None]


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

    async def publish(self, channel: str, body: bytes) -> Publication:
        """Give ``body`` (an encoded JSON object) the channel's next offset, store it in history, fan it out."""

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

    async def connection_add(self, user_id: UserId, conn_id: str) -> int:
        """Count a new connection of ``user_id`` cluster-wide; returns the user's count including it."""

    async def connection_remove(self, user_id: UserId, conn_id: str) -> None:
        """Forget a connection."""

    async def stats(self) -> dict[str, int]:
        """Cluster totals: ``{"users": n, "connections": n}``."""

    def info(self) -> dict[str, Any]:
        """Health details for ``/healthz``."""
