"""Tidings: a real-time messaging hub for FastAPI.

The public face::

    from tidings import Tidings, UserInfo, Namespace

* :class:`Tidings` -- the hub an app mounts (``router``, ``lifespan``), with its own ``authenticate`` or the
  built-in users; ``namespace()`` declares channels, ``on_connect``/``on_disconnect``/... register hooks,
  ``status_provider`` adds ``request_status`` fields, ``publish`` / ``send_to_user`` / ``disconnect_user`` act.
* :class:`UserInfo` -- who a connection is (``id`` an ``int`` or a ``str``, ``username``, ``role``).
* :class:`Namespace` -- who may subscribe and publish on a family of channels, history, presence, a data model.
* :class:`ConnInfo` -- what hooks learn about a connection. :class:`Node` -- the object that publishes.
* :mod:`tidings.publisher` lets workers in other processes publish through the Redis broker.

The names are imported lazily, so ``import tidings.crawler`` (for example in a crawl child process) does not
load the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidings.channels import InvalidPublication, Namespace, PublishRule, SubscribeRule
    from tidings.connection import UserInfo
    from tidings.hooks import ConnInfo
    from tidings.node import Node
    from tidings.service import Tidings
    from tidings.settings import Settings

__all__ = [
    "ConnInfo",
    "InvalidPublication",
    "Namespace",
    "Node",
    "PublishRule",
    "Settings",
    "SubscribeRule",
    "Tidings",
    "UserInfo",
]
__version__ = "0.1.0"

_LAZY = {
    "ConnInfo": "tidings.hooks",
    "InvalidPublication": "tidings.channels",
    "Namespace": "tidings.channels",
    "Node": "tidings.node",
    "PublishRule": "tidings.channels",
    "Settings": "tidings.settings",
    "SubscribeRule": "tidings.channels",
    "Tidings": "tidings.service",
    "UserInfo": "tidings.connection",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
