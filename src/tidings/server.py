"""Serving with uvicorn: Tidings' settings applied, clients closed with 1001 on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import importlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from fastapi import FastAPI
from starlette.routing import Match, WebSocketRoute
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from tidings.api.bodies import BodyLimit
from tidings.guard import ConnectionGuard, ProxyTrust, fd_budget, guarded_protocols
from tidings.logs import install_redaction
from tidings.settings import Settings

__all__ = ["TidingsServer", "WebSocketFastLane", "serve", "uvicorn_config"]

logger = logging.getLogger("tidings.server")


class TidingsServer(uvicorn.Server):
    """A uvicorn server that closes WebSocket clients with 1001 (going away) before its own shutdown."""

    #: Called once the shutdown is complete (the profiling hook of :func:`serve` uses it).
    after_shutdown: Callable[[], object] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start uvicorn (the app's lifespan included), then move everything allocated so far out of the GC's way.

        ``gc.freeze()`` puts the start-up objects (modules, the app, its routes, the ORM's metadata) in a permanent
        generation that collections no longer traverse, so a full collection during a fan-out only walks what the
        server allocated since.
        """
        await super().startup(sockets)
        _record_listen_addresses(self)
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, close every hub connection with 1001, then let uvicorn finish."""
        for server in self.servers:
            server.close()
        app = self.config.loaded_app
        hub = getattr(getattr(getattr(app, "app", app), "state", None), "tidings", None)
        target = app
        while hub is None and hasattr(target, "app"):
            target = target.app
            hub = getattr(getattr(target, "state", None), "tidings", None)
        if hub is not None:
            try:
                await hub.node.close_connections()
            except Exception:
                logger.exception("closing connections on shutdown failed")
        await super().shutdown(sockets)
        if self.after_shutdown is not None:
            self.after_shutdown()


def _record_listen_addresses(server: uvicorn.Server) -> None:
    """Put the (host, port) pairs the server listens on in the app's ``state.listen_addresses`` (the crawler's
    egress policy lets jobs crawl this server's own sample site, and nothing else on loopback)."""
    addresses = []
    for listener in getattr(server, "servers", ()):
        for sock in listener.sockets or ():
            name = sock.getsockname()
            if isinstance(name, tuple) and len(name) >= 2:
                addresses.append((str(name[0]), int(name[1])))
    target = server.config.loaded_app
    while target is not None:
        state = getattr(target, "state", None)
        if state is not None and hasattr(state, "tidings"):
            state.listen_addresses = addresses
            return
        target = getattr(target, "app", None)


class WebSocketFastLane:
    """An ASGI front for a FastAPI app: a WebSocket scope matching one of the app's WebSocket routes goes straight
    to that route; everything else (HTTP, lifespan, other WebSockets) to the app.

    Starlette's error and exception middleware and router add a dozen coroutines (and their closures) to every
    connection for as long as it is open, and do nothing for Tidings' raw-ASGI WebSocket endpoints: skipping them
    saves several KiB per idle connection. Used with Tidings' own WebSocket protocol (``fast_transport``).
    """

    def __init__(self, app: FastAPI, http: Any = None) -> None:
        self.app = app
        self.http = http if http is not None else app  # where everything but the fast lane goes
        self._routes: list[WebSocketRoute] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Dispatch one ASGI connection."""
        if scope["type"] == "websocket":
            routes = self._routes
            if routes is None:
                routes = self._routes = _websocket_routes(self.app)
            for route in routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    scope.setdefault("app", self.app)
                    await route.handle(scope, receive, send)
                    return
        await self.http(scope, receive, send)


def _websocket_routes(app: FastAPI) -> list[WebSocketRoute]:
    """The hub's WebSocket routes (``app.state.tidings.router``, included without a prefix), else the app's own."""
    hub = getattr(app.state, "tidings", None)
    routes = [*getattr(getattr(hub, "router", None), "routes", ()), *app.router.routes]
    return [route for route in routes if type(route) is WebSocketRoute]


def uvicorn_config(
    app: FastAPI, settings: Settings, host: str, port: int, *, guard: bool = True, **extra: object
) -> uvicorn.Config:
    """A uvicorn configuration carrying Tidings' limits: WebSocket sizes, request bodies (:class:`BodyLimit`),
    and -- unless ``guard`` is False -- the handshake deadline and connection caps of :mod:`tidings.guard`."""
    ws_class: type[asyncio.Protocol] | None = None
    if settings.fast_transport:
        try:
            ws_class = importlib.import_module("tidings.fastws").TidingsWebSocketProtocol.configured(
                write_delay=settings.write_delay, write_window_max=settings.write_window_max
            )
        except ImportError:
            ws_class = None
    fast = ws_class is not None
    http_class: type[asyncio.Protocol] = AutoHTTPProtocol
    if ws_class is None and AutoWebSocketsProtocol is not None:
        ws_class = cast(type[asyncio.Protocol], AutoWebSocketsProtocol)
    if guard and ws_class is not None:
        connection_guard = ConnectionGuard(
            max_connections=fd_budget(settings.max_connections),
            max_per_ip=settings.max_connections_per_ip,
            handshake_timeout=settings.handshake_timeout,
            trusted_proxies=ProxyTrust(settings.forwarded_allow_ips),
        )
        http_class, ws_class = guarded_protocols(http_class, ws_class, connection_guard)
    http_app = BodyLimit(app, settings.max_body_bytes)
    return uvicorn.Config(
        WebSocketFastLane(app, http=http_app) if fast else http_app,
        host=host,
        port=port,
        http=http_class,
        ws=ws_class if ws_class is not None else "none",
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.per_message_deflate,
        ws_ping_interval=settings.ping_interval or None,
        ws_ping_timeout=settings.ping_timeout,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        interface="asgi3",  # BodyLimit is an ASGI3 instance: uvicorn would guess ASGI2 from its signature
        **extra,  # type: ignore[arg-type]
    )


def serve(app: FastAPI, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``app`` until SIGINT/SIGTERM."""
    install_redaction()
    server = TidingsServer(uvicorn_config(app, settings, host, port))
    profile_path = os.environ.get("TIDINGS_PROFILE")  # a diagnostics hook: cProfile the server, stats dumped here
    if profile_path:
        profiler = cProfile.Profile()
        # dumped at the end of the graceful shutdown: uvicorn re-raises SIGTERM afterwards, ending the process

        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        server.after_shutdown = dump
        profiler.enable()
    # uvicorn re-raises the signal it caught once shut down: Ctrl-C surfaces as KeyboardInterrupt (as in uvicorn.run)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
