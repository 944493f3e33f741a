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

from tidings.guard import ProxyTrust, client_key

__all__ = ["SocketLimits"]

#: The key of a connection counted in the total only.
UNCAPPED = ""


class SocketLimits:
    """Counts of the hub's open WebSockets, in total and per client address."""

    def __init__(self, max_total: int, max_per_ip: int, trusted: ProxyTrust) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.trusted = trusted
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def acquire(self, scope: MutableMapping[str, Any]) -> str | None:
        """Count a new WebSocket; its key for :meth:`release`, or None (not counted) when over a cap."""
        if self.total >= self.max_total:
            return None
        client = scope.get("client")
        host = client[0] if client else None
        key = UNCAPPED if not isinstance(host, str) or host in self.trusted else client_key(host)
        if key:
            count = self.per_ip.get(key, 0)
            if count >= self.max_per_ip:
                return None
            self.per_ip[key] = count + 1
        self.total += 1
        return key

    def release(self, key: str | None) -> None:
        """A WebSocket counted by :meth:`acquire` is gone (None: it was not counted)."""
        if key is None:
            return
        self.total -= 1
        if key:
            count = self.per_ip.get(key, 0) - 1
            if count > 0:
                self.per_ip[key] = count
            else:
                self.per_ip.pop(key, None)
