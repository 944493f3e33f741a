"""Tidings: a real-time messaging hub for FastAPI.

``Tidings`` bundles a node, its routers and lifespan for mounting into an app; ``Node`` is the object that
publishes; ``Publisher``/``SyncPublisher`` let workers in other processes publish through the broker.
"""

from tidings.node import Node
from tidings.service import Tidings
from tidings.settings import Settings

__all__ = ["Node", "Settings", "Tidings"]
__version__ = "0.1.0"
