"""Tidings: a real-time messaging hub for FastAPI.

``Tidings`` bundles a node, its routers and lifespan for mounting into an app; ``Node`` is the object that
publishes; :mod:`tidings.publisher` lets workers in other processes publish through the broker.

The names are imported lazily, so ``import tidings.crawler`` (for example in a crawl child process) does not
load the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidings.node import Node
    from tidings.service import Tidings
    from tidings.settings import Settings

__all__ = ["Node", "Settings", "Tidings"]
__version__ = "0.1.0"

_LAZY = {"Node": "tidings.node", "Tidings": "tidings.service", "Settings": "tidings.settings"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
