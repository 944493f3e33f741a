"""Brokers carry publications between nodes and keep per-channel history, presence and connection counts.

``memory://`` serves one process; ``redis://`` ties several processes together. :func:`create_broker` picks one
from a URL.
"""

from __future__ import annotations

from tidings.broker.base import Broker, BrokerUnavailable, HistoryResult, Publication, PublicationHandler
from tidings.broker.memory import MemoryBroker

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "HistoryResult",
    "MemoryBroker",
    "Publication",
    "PublicationHandler",
    "create_broker",
]


def create_broker(
    url: str, *, prefix: str = "tidings", history_size: int = 1000, history_ttl: int = 86400, presence_ttl: int = 30
) -> Broker:
    """Build the broker named by ``url`` (``memory://`` or ``redis://...``)."""
    if url.startswith("memory:"):
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tidings.broker.redis import RedisBroker

        return RedisBroker(
            url, prefix=prefix, history_size=history_size, history_ttl=history_ttl, presence_ttl=presence_ttl
        )
    raise ValueError(f"Unsupported broker URL: {url!r} (expected memory:// or redis://)")
