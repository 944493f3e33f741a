"""WebSocket caps at the ASGI level: per node and per client address, closing with 1013 "Try again later".

These hold wherever the hub is mounted (plain uvicorn or another server); under ``tidings serve`` the TCP-level
caps of :mod:`tidings.guard` apply first, and this is what caps the clients of a trusted proxy, by the address
``X-Forwarded-For`` gives (the server's proxy-header handling puts it in ``scope["client"]``). A client whose
address is itself a trusted proxy (or local, with the default ``TIDINGS_FORWARDED_ALLOW_IPS``) is not capped per
IP, only in total.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from tidings.guard import CappedCounts, ProxyTrust, client_key

__all__ = ["SocketLimits"]

#: The key of a connection counted in the total only.
UNCAPPED = ""


class SocketLimits:
    """Counts of the hub's open WebSockets, in total and per client address."""

    def __init__(self, max_total: int, max_per_ip: int, trusted: ProxyTrust) -> None:
        self.counts = CappedCounts(max_total, max_per_ip)
        self.trusted = trusted

    def acquire(self, scope: MutableMapping[str, Any]) -> str | None:
        """Count a new WebSocket; its key for :meth:`release`, or None (not counted) when over a cap."""
        client = scope.get("client")
        host = client[0] if client else None
        key = UNCAPPED if not isinstance(host, str) or host in self.trusted else client_key(host)
        return key if self.counts.admit(key or None) else None

    def release(self, key: str | None) -> None:
        """A WebSocket counted by :meth:`acquire` is gone (None: it was not counted)."""
        if key is not None:
            self.counts.release(key or None)
