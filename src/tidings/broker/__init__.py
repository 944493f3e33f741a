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
    url: str,
    *,
    prefix: str = "tidings",
    history_size: int = 1000,
    history_ttl: int = 86400,
    presence_ttl: int = 30,
    history_max_bytes: int = 1 << 20,
    history_budget_bytes: int = 32 << 20,
    max_channels: int = 10_000,
) -> Broker:
    """Build the broker named by ``url`` (``memory://`` or ``redis://...``).

    ``history_budget_bytes`` and ``max_channels`` bound the memory broker (one process holds every channel);
    ``history_max_bytes`` bounds each channel's history.
    """
    if url.startswith("memory:"):
        return MemoryBroker(
            history_size=history_size,
            history_ttl=history_ttl,
            history_max_bytes=history_max_bytes,
            history_budget_bytes=history_budget_bytes,
            max_channels=max_channels,
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tidings.broker.redis import RedisBroker

        return RedisBroker(
            url, prefix=prefix, history_size=history_size, history_ttl=history_ttl, presence_ttl=presence_ttl
        )
    raise ValueError(f"Unsupported broker URL: {url!r} (expected memory:// or redis://)")
