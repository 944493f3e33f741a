"""``create_app()``: the complete Tidings application (hub, crawler platform, dashboard)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tidings import __version__
from tidings.api.docs import install_offline_docs
from tidings.api.errors import install_error_handlers
from tidings.crawler.service import install_platform
from tidings.durable_history import DurableHistory, DurableHistoryBroker
from tidings.service import Tidings
from tidings.settings import Settings
from tidings.web.access_log import install_routine_request_filter
from tidings.web.routes import mount_dashboard
from tidings.web.stats import StatsPusher

__all__ = ["create_app"]

WEB = Path(__file__).resolve().parent / "web"


class ClientFiles(StaticFiles):
    """The JS client's files, without its tests and test fakes (``test/``, ``test-support/``)."""

    def lookup_path(self, path: str) -> tuple[str, Any]:
        if Path(path).parts[:1] and Path(path).parts[0].startswith("test"):
            return "", None
        return super().lookup_path(path)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application with its lifespan; ``app.state.tidings`` is the hub."""
    hub = Tidings(settings)
    if hub.settings.durable_channels:  # chat rooms survive restarts: their publications are kept in the database
        history = DurableHistory(hub.db, hub.settings.durable_channels, hub.settings.durable_history_size)
        hub.node.broker = DurableHistoryBroker(hub.node.broker, history)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_routine_request_filter()  # successful GETs (the dashboard's) at DEBUG in the access log
        async with hub.run(), platform.run(), stats.run():
            yield

    app = FastAPI(title="Tidings", version=__version__, lifespan=lifespan)
    app.state.tidings = hub
    install_error_handlers(app)  # ids and offsets >= 2**63: 422, not a 500
    app.include_router(hub.router)
    platform = install_platform(app, hub)  # jobs, properties, workers, /sample-site (tidings.crawler.service)
    client_dir = WEB / "client"
    if client_dir.is_dir():
        app.mount("/static/client", ClientFiles(directory=client_dir), name="client")
    stats = StatsPusher(hub.node, hub.settings.stats_interval)  # stats_update on dashboard_stats (tidings.web.stats)
    StatsPusher.register(hub.node)
    mount_dashboard(app, hub.node)  # /login, /dashboard, /dashboard/static, JSON for charts (tidings.web.routes)
    install_offline_docs(app)  # /docs, /redoc, /asyncapi with assets served here, no CDN (tidings.api.docs)
    return app
