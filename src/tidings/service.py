"""The hub as a unit an application mounts: settings, database, node, routers and a lifespan.

Mounting Tidings into an existing FastAPI app::

    from fastapi import FastAPI
    from tidings import Tidings

    hub = Tidings()                       # settings from TIDINGS_* variables
    app = FastAPI(lifespan=hub.lifespan)  # or: async with hub.run(): ... inside your own lifespan
    app.include_router(hub.router)

    # anywhere in your code
    await hub.node.publish("room:lobby", {"text": "hello"})
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tidings.api.auth import build_auth_router
from tidings.api.rest import build_rest_router
from tidings.api.ws import websocket_routes
from tidings.asyncapi import asyncapi_document
from tidings.auth import TokenAuthenticator
from tidings.broker import Broker
from tidings.channels import NAMESPACED
from tidings.db import Database
from tidings.logs import install_redaction
from tidings.metrics import render_metrics
from tidings.node import Node
from tidings.settings import Settings

__all__ = ["Tidings"]

logger = logging.getLogger("tidings")


#: Seconds a token-authenticated user is reused before the database is asked again (deactivation takes effect
#: within it); the signature and expiry of every token are still checked on every request.
USER_CACHE_TTL = 0.0  # off: role changes and deactivations take effect on the next request


class Tidings:
    """Everything the hub needs, wired together; ``router`` and ``lifespan`` plug into any FastAPI app."""

    def __init__(self, settings: Settings | None = None, *, broker: Broker | None = None) -> None:
        self.settings = settings or Settings()
        self.db = Database(self.settings.resolved_database_url)
        self.node = Node(
            self.settings,
            broker=broker,
            authenticator=TokenAuthenticator(
                self.settings.resolved_secret_key, self.db.active_user, cache_ttl=USER_CACHE_TTL
            ),
        )
        self.router = self._build_router()
        self.admin_password: str | None = None

    def _build_router(self) -> APIRouter:
        router = APIRouter()
        router.include_router(build_auth_router(self.db, self.settings))
        router.include_router(build_rest_router(self.node))
        router.routes.extend(websocket_routes(self.node))

        @router.get("/asyncapi.json", tags=["protocol"], response_model=None)
        async def asyncapi(request: Request) -> JSONResponse:
            """The AsyncAPI 3.0 document of the WebSocket protocol (messages, auth, namespaces, close codes)."""
            return JSONResponse(self.asyncapi(request.url.netloc, "wss" if request.url.scheme == "https" else "ws"))

        @router.get("/metrics", tags=["ops"], include_in_schema=False)
        async def metrics() -> Response:
            return Response(render_metrics(self.node), media_type="text/plain; version=0.0.4; charset=utf-8")

        return router

    def asyncapi(self, host: str = "localhost:8000", scheme: str = "ws") -> dict[str, Any]:
        """The AsyncAPI 3.0 document of this hub's WebSocket protocol (served at ``GET /asyncapi.json``)."""
        from tidings import __version__

        return asyncapi_document(
            version=__version__,
            host=host,
            scheme=scheme,
            rules=self.node.rules,
            token_cookie=getattr(self.settings, "token_cookie", None) or None,
            namespaced=NAMESPACED,
        )

    @asynccontextmanager
    async def run(self) -> AsyncIterator[Tidings]:
        """Migrate the database, create the first admin if needed, start the node; close all on exit."""
        install_redaction()
        await self.db.migrate()
        self.admin_password = await self.db.ensure_admin(self.settings.admin_username)
        if self.admin_password is not None:
            banner = (
                f"Created the administrator account: username '{self.settings.admin_username}', "
                f"password '{self.admin_password}' (shown once; change it with 'tidings users passwd')"
            )
            print(banner, flush=True)
        await self.node.start()
        try:
            yield self
        finally:
            await self.node.close()
            await self.db.dispose()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        """A FastAPI lifespan running the hub for the life of ``app``."""
        async with self.run():
            yield {}
