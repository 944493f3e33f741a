"""The hub as a unit an application mounts: settings, node, routers, a lifespan, namespaces and hooks.

Mounting Tidings into an existing FastAPI app with its own users::

    from fastapi import FastAPI
    from starlette.requests import HTTPConnection
    from tidings import Namespace, Tidings, UserInfo

    async def authenticate(conn: HTTPConnection) -> UserInfo | None:
        user = await my_session_user(conn.cookies.get("session"))      # the app's own login
        return None if user is None else UserInfo(id=user.uuid, username=user.name, role=user.role)

    hub = Tidings(authenticate=authenticate)          # no database, no tables, no files, nothing printed
    hub.namespace("orders", Namespace(subscribe=may_see_order, model=OrderEvent))
    app = FastAPI(lifespan=hub.lifespan)              # or: async with hub.run(): ... inside your own lifespan
    app.include_router(hub.router)

    # anywhere in your code
    await hub.publish("orders:42", {"status": "shipped"})

Without ``authenticate``, the built-in users (:mod:`tidings.users`, the ``[users]`` extra) are used: a SQL
database (``TIDINGS_DATABASE_URL``), ``POST /auth/token``, account administration and a first administrator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tidings.api.rest import build_rest_router
from tidings.api.ws import websocket_routes
from tidings.asyncapi import asyncapi_document
from tidings.auth import Authenticate
from tidings.broker import Broker, Publication
from tidings.channels import CONTROL_CHANNEL, ChannelRules, Namespace
from tidings.connection import UserId, UserInfo
from tidings.hooks import ConnectHook, DisconnectHook, Hooks, PresenceHook, StatusProvider, SubscribeHook
from tidings.logs import install_redaction
from tidings.metrics import render_metrics
from tidings.node import Node
from tidings.protocol import CloseCode
from tidings.settings import Settings

if TYPE_CHECKING:
    from tidings.db import Database
    from tidings.users.service import BuiltinUsers

__all__ = ["Tidings"]

logger = logging.getLogger("tidings")

H = TypeVar("H", bound=Callable[..., Any])


class Tidings:
    """Everything the hub needs, wired together; ``router`` and ``lifespan`` plug into any FastAPI app.

    * ``authenticate``: ``async (HTTPConnection) -> UserInfo | None``; None refuses (WebSocket 1008
      "Authentication required", REST 401). Without it, the built-in users and tokens are used.
    * ``is_admin``: who may use the admin endpoints and receives ``admin_notification``; default
      ``user.role == "admin"``.
    * ``namespaces``: channels to declare now (see :meth:`namespace`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        authenticate: Authenticate | None = None,
        is_admin: Callable[[UserInfo], bool] | None = None,
        namespaces: dict[str, Namespace] | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.hooks = Hooks()
        self.rules = ChannelRules(is_admin=is_admin)
        self.users: BuiltinUsers | None = None
        if authenticate is None:
            from tidings.users.service import BuiltinUsers  # the [users] extra: SQLAlchemy, Alembic, pwdlib

            self.users = BuiltinUsers(self.settings)
        self.node = Node(
            self.settings,
            broker=broker,
            authenticator=None if self.users is None else self.users.authenticator,
            authenticate=authenticate,
            rules=self.rules,
            hooks=self.hooks,
        )
        for name, namespace in (namespaces or {}).items():
            self.namespace(name, namespace)
        self.router = self._build_router()

    @property
    def db(self) -> Database:
        """The built-in users' database (only without ``authenticate``)."""
        if self.users is None:
            raise AttributeError("this hub has no database: it was given its own authenticate")
        return self.users.db

    @property
    def admin_password(self) -> str | None:
        """The first administrator's password if this start created it (built-in users), else None."""
        return None if self.users is None else self.users.admin_password

    def _build_router(self) -> APIRouter:
        router = APIRouter()
        if self.users is not None:
            router.include_router(self.users.bind(self.node))
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
        )

    # ---- declaring -----------------------------------------------------------------------------------------
    def namespace(self, name: str, namespace: Namespace | None = None) -> Namespace:
        """Declare the channels ``name:<arg>`` (or the channel ``name`` with ``argument=False``) and who may do
        what on them; returns the namespace. Declaring a name again replaces it."""
        if name == CONTROL_CHANNEL:
            raise ValueError(f"{name!r} is reserved for the hub")
        if name in ("broadcast", "admins", "user"):
            raise ValueError(f"{name!r} is one of the hub's own channels")
        return self.rules.declare(name, namespace or Namespace())

    def status_provider(self, provider: StatusProvider) -> StatusProvider:
        """Register ``async provider(user) -> dict``, merged into every ``status_update`` (decorator-friendly)."""
        return self.node.add_status_provider(provider)

    def on_connect(self, hook: ConnectHook) -> ConnectHook:
        """Register ``async hook(user, conn_info)``, called once a connection is established."""
        self.hooks.on_connect.append(hook)
        return hook

    def on_disconnect(self, hook: DisconnectHook) -> DisconnectHook:
        """Register ``async hook(user, conn_info, code)``, called once for every connection that ends, however."""
        self.hooks.on_disconnect.append(hook)
        return hook

    def on_subscribe(self, hook: SubscribeHook) -> SubscribeHook:
        """Register ``async hook(user, conn_info, channel)``, called after a subscription is confirmed."""
        self.hooks.on_subscribe.append(hook)
        return hook

    def on_join(self, hook: PresenceHook) -> PresenceHook:
        """Register ``async hook(user, channel)``: a user's first connection entered a presence channel."""
        self.hooks.on_join.append(hook)
        return hook

    def on_leave(self, hook: PresenceHook) -> PresenceHook:
        """Register ``async hook(user, channel)``: a user's last connection left a presence channel."""
        self.hooks.on_leave.append(hook)
        return hook

    # ---- using ---------------------------------------------------------------------------------------------
    async def publish(self, channel: str, data: Any) -> Publication:
        """Publish ``data`` on ``channel`` (validated by the namespace's ``model``: ``ValueError`` if it fails)."""
        return await self.node.publish(channel, data)

    async def send_to_user(self, user_id: UserId, event: dict[str, Any]) -> Publication:
        """Send a typed event to every connection of ``user_id``, on every node."""
        return await self.node.send_to_user(user_id, event)

    async def disconnect_user(
        self, user_id: UserId, code: int = CloseCode.POLICY_VIOLATION, reason: str = "Disconnected"
    ) -> None:
        """Close every connection of ``user_id`` on every node (for example when the host revokes access):
        1008 is terminal for the clients, 4004 "Permissions changed" makes them reconnect."""
        await self.node.disconnect_user(user_id, code, reason)

    # ---- running -------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def run(self) -> AsyncIterator[Tidings]:
        """Start the node (and, with the built-in users, migrate their tables and create the first admin)."""
        install_redaction()
        async with AsyncExitStack() as stack:
            if self.users is not None:
                await stack.enter_async_context(self.users.run())
            await self.node.start()
            stack.push_async_callback(self.node.close)
            yield self

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        """A FastAPI lifespan running the hub for the life of ``app``."""
        async with self.run():
            yield {}
