"""Brokers carry publications between nodes and keep per-channel history, presence and connection counts.

``memory://`` serves one process; ``redis://`` (one Redis), ``redis+sentinel://`` and ``redis+cluster://`` tie
several processes together (:mod:`tidings.broker.urls`). :func:`create_broker` picks one from a URL.
"""

from __future__ import annotations

from tidings.broker.base import (
    Broker,
    BrokerUnavailable,
    CountedPresence,
    HistoryResult,
    PresencePage,
    Publication,
    PublicationHandler,
    ReapedConnection,
    ReapNotifier,
)
from tidings.broker.memory import MemoryBroker
from tidings.broker.urls import is_redis_url

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "CountedPresence",
    "HistoryResult",
    "MemoryBroker",
    "PresencePage",
    "Publication",
    "PublicationHandler",
    "ReapNotifier",
    "ReapedConnection",
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
    node_lease_ttl: float = 6.0,
    idempotency_ttl: int = 300,
    idempotency_max_keys: int = 100_000,
) -> Broker:
    """Build the broker named by ``url`` (``memory://``, ``redis://``, ``redis+sentinel://``, ``redis+cluster://``).

    ``history_budget_bytes`` and ``max_channels`` bound the memory broker (one process holds every channel);
    ``history_max_bytes`` bounds each channel's history; ``node_lease_ttl`` is the Redis broker's node lease.
    """
    if url.startswith("memory:"):
        return MemoryBroker(
            history_size=history_size,
            history_ttl=history_ttl,
            history_max_bytes=history_max_bytes,
            history_budget_bytes=history_budget_bytes,
            max_channels=max_channels,
            idempotency_ttl=idempotency_ttl,
            idempotency_max_keys=idempotency_max_keys,
        )
    if is_redis_url(url):
        from tidings.broker.redis import RedisBroker

        return RedisBroker(
            url,
            prefix=prefix,
            history_size=history_size,
            history_ttl=history_ttl,
            history_max_bytes=history_max_bytes,
            presence_ttl=presence_ttl,
            node_lease_ttl=node_lease_ttl,
            idempotency_ttl=idempotency_ttl,
        )
    raise ValueError(
        f"Unsupported broker URL: {url!r} (expected memory://, redis://, redis+sentinel://host:port/service "
        "or redis+cluster://host:port[,host:port])"
    )
