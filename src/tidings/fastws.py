"""Tidings' own uvicorn WebSocket protocol: an alias of :mod:`tidings.transport.protocol` (its old home).

The protocol is split along its seams in the :mod:`tidings.transport` package; this module keeps the old import
path (``tidings.fastws.TidingsWebSocketProtocol``, used by ``tidings.server`` and by tests) working.
"""

from __future__ import annotations

from tidings.transport.base import WebSocketState
from tidings.transport.fanout import ABORT_GRACE, PENDING_MAX, WriteBatcher
from tidings.transport.protocol import CLOSE_TIMEOUT, TRANSPORT_EXTENSION, TidingsWebSocketProtocol

__all__ = [
    "ABORT_GRACE",
    "CLOSE_TIMEOUT",
    "PENDING_MAX",
    "TRANSPORT_EXTENSION",
    "TidingsWebSocketProtocol",
    "WebSocketState",
    "WriteBatcher",
]
