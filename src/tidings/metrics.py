"""Prometheus metrics, read from the node's counters at scrape time (nothing is counted twice on hot paths)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tidings.node import Node
from tidings.transport.fanout import write_stats

__all__ = ["NodeCollector", "render_metrics"]


class NodeCollector(Collector):
    """Exposes a node's hub and broker counters as ``tidings_*`` metrics."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the current values."""
        node, hub = self.node, self.node.hub
        yield GaugeMetricFamily("tidings_connections", "Open WebSocket connections on this node", len(hub.connections))
        yield GaugeMetricFamily("tidings_users", "Distinct connected users on this node", len(hub.by_user))
        yield GaugeMetricFamily("tidings_channels", "Channels with local subscribers", len(hub.subscribers))
        yield GaugeMetricFamily(
            "tidings_queued_frames",
            "Frames waiting in outbound queues",
            sum(c.queued for c in hub.connections.values()),
        )
        yield CounterMetricFamily(
            "tidings_publications", "Publications delivered to this node's subscribers", hub.publications_delivered
        )
        yield CounterMetricFamily("tidings_deliveries", "Frames handed to local connections", hub.deliveries)
        yield CounterMetricFamily(
            "tidings_slow_consumer_disconnects", "Connections closed because their queue overflowed", hub.slow_consumers
        )
        flushes, writes = write_stats()
        yield CounterMetricFamily(
            "tidings_transport_writes", "Socket writes of coalesced fan-out frames (fast transport)", writes
        )
        yield CounterMetricFamily("tidings_transport_flushes", "Coalesced write passes (fast transport)", flushes)
        yield CounterMetricFamily("tidings_messages_received", "Inbound client messages", node.messages_received)
        failures = CounterMetricFamily("tidings_auth_failures", "Rejected authentications", labels=["reason"])
        for reason, count in node.auth_failures.items():
            failures.add_metric([reason], count)
        yield failures
        rejections = CounterMetricFamily("tidings_rejections", "Connections refused by policy", labels=["reason"])
        for reason, count in node.rejections.items():
            rejections.add_metric([reason], count)
        yield rejections
        yield GaugeMetricFamily("tidings_broker_up", "1 while the broker is reachable", int(node.broker.healthy))
        info = node.broker.info()
        yield CounterMetricFamily(
            "tidings_broker_reconnects", "Broker connections re-established", int(info.get("reconnects", 0))
        )
        yield CounterMetricFamily(
            "tidings_broker_disconnects", "Times the broker connection was lost", int(info.get("disconnects", 0))
        )


def render_metrics(node: Node) -> bytes:
    """The Prometheus text exposition of ``node``'s metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return generate_latest(registry)
