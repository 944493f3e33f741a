"""Lifecycle hooks a host registers, and status providers.

Hooks are async callables; an exception in one is logged and does not stop the others or the hub::

    @hub.on_connect
    async def connected(user: UserInfo, conn: ConnInfo) -> None: ...

    @hub.on_disconnect
    async def gone(user: UserInfo, conn: ConnInfo, code: int) -> None: ...

``on_disconnect`` fires once for every way a connection ends: the client closes or drops, idle timeout, slow
consumer, rate limit, token expiry, revocation, server shutdown, and (Redis broker) the death of the node that held
it, fired once cluster-wide by a surviving node when the dead node's lease expires (``code`` 1006 then).
``on_join`` / ``on_leave`` fire when a user's first connection enters, or last one leaves, a channel whose
namespace has ``presence=True``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tidings.connection import UserInfo

__all__ = [
    "ABNORMAL_CLOSE",
    "ConnInfo",
    "ConnectHook",
    "DisconnectHook",
    "Hooks",
    "PresenceHook",
    "StatusProvider",
    "SubscribeHook",
]

logger = logging.getLogger("tidings.hooks")

#: The code ``on_disconnect`` gets when no close code was exchanged (dropped TCP connection, dead node).
ABNORMAL_CLOSE = 1006


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What a hook learns about one connection."""

    id: str  #: unique in the cluster: ``<node>.<connection>``
    node: str  #: the node that held it
    connected_at: float = field(default_factory=time.time)  #: Unix time
    client: str | None = None  #: remote address as the server saw it, if known


ConnectHook = Callable[[UserInfo, ConnInfo], Awaitable[None]]
DisconnectHook = Callable[[UserInfo, ConnInfo, int], Awaitable[None]]
SubscribeHook = Callable[[UserInfo, ConnInfo, str], Awaitable[None]]
PresenceHook = Callable[[UserInfo, str], Awaitable[None]]
#: ``provider(user)`` -> fields merged into the ``status_update`` reply of ``request_status``.
StatusProvider = Callable[[UserInfo], Awaitable[dict[str, Any]]]


class Hooks:
    """The registered hooks, in registration order."""

    def __init__(self) -> None:
        self.on_connect: list[ConnectHook] = []
        self.on_disconnect: list[DisconnectHook] = []
        self.on_subscribe: list[SubscribeHook] = []
        self.on_join: list[PresenceHook] = []
        self.on_leave: list[PresenceHook] = []
        self.status_providers: list[StatusProvider] = []

    @property
    def presence(self) -> bool:
        """True if join or leave hooks are registered."""
        return bool(self.on_join or self.on_leave)

    async def fire(self, hooks: list[Any], *args: Any) -> None:
        """Await each hook with ``args``; log (never raise) what one of them raises."""
        for hook in hooks:
            try:
                await hook(*args)
            except Exception:
                logger.exception("hook %s failed", getattr(hook, "__qualname__", hook))

    async def status(self, user: UserInfo) -> dict[str, Any]:
        """The fields every status provider adds for ``user`` (a failing provider adds none)."""
        fields: dict[str, Any] = {}
        for provider in self.status_providers:
            try:
                fields.update(await provider(user))
            except Exception:
                logger.exception("status provider %s failed", getattr(provider, "__qualname__", provider))
        return fields
