"""Offline API docs: ``/docs`` (Swagger UI), ``/redoc`` (ReDoc) and ``/asyncapi`` (the WebSocket protocol) load
their scripts and styles from the server itself, never from a CDN.

Swagger UI and ReDoc come from the ``fastapi-offline`` package (the ``docs`` extra, part of ``platform``); without
it :func:`install_offline_docs` leaves FastAPI's default (CDN) pages in place. The AsyncAPI viewer is Tidings' own
small page (``tidings/web/asyncapi``) rendering ``/asyncapi.json``: channels, messages with their schemas, the
close-code table.

Hosts mounting the hub on their own app call ``install_offline_docs(app)`` after creating it.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["ASYNCAPI_ASSETS", "DOCS_STATIC_PATH", "install_offline_docs", "offline_assets_dir"]

#: Where the Swagger UI / ReDoc files and the AsyncAPI viewer's files are served.
DOCS_STATIC_PATH = "/static/docs"
ASYNCAPI_ASSETS = Path(__file__).resolve().parent.parent / "web" / "asyncapi"


def offline_assets_dir() -> Path | None:
    """The directory holding ``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``redoc.standalone.js`` (from
    ``fastapi-offline``), or None when that package is not installed or lacks one of them."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
    return static if all((static / name).is_file() for name in needed) else None


def _drop_routes(app: FastAPI, paths: set[str]) -> None:
    def keep(route: BaseRoute) -> bool:
        return not (isinstance(route, (Route, Mount)) and route.path in paths)

    app.router.routes[:] = [route for route in app.router.routes if keep(route)]


def install_offline_docs(
    app: FastAPI,
    *,
    docs_url: str = "/docs",
    redoc_url: str = "/redoc",
    asyncapi_url: str | None = "/asyncapi",
    asyncapi_json_url: str = "/asyncapi.json",
    static_path: str = DOCS_STATIC_PATH,
) -> bool:
    """Serve ``docs_url`` and ``redoc_url`` with assets from ``static_path`` on this server, and the AsyncAPI viewer
    at ``asyncapi_url`` (None: not served). Replaces FastAPI's CDN pages at those paths. Returns False (and leaves
    FastAPI's defaults) when ``fastapi-offline`` is not installed; the AsyncAPI viewer is served either way."""
    assets = offline_assets_dir()
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    static = static_path.rstrip("/")
    if asyncapi_url:
        _drop_routes(app, {asyncapi_url})
        app.mount(f"{static}/asyncapi", StaticFiles(directory=ASYNCAPI_ASSETS), name="asyncapi-assets")
        page = _asyncapi_page(f"{title} WebSocket protocol", asyncapi_json_url, f"{static}/asyncapi")

        async def asyncapi_viewer() -> HTMLResponse:
            return HTMLResponse(page)

        app.add_api_route(asyncapi_url, asyncapi_viewer, include_in_schema=False, methods=["GET"])
    if assets is None:
        return False
    _drop_routes(app, {docs_url, redoc_url})
    app.mount(f"{static}/ui", StaticFiles(directory=assets), name="docs-assets")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{static}/ui/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/ui/swagger-ui.css",
            swagger_favicon_url=f"{static}/ui/favicon.png",
            oauth2_redirect_url=oauth2_redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{static}/ui/redoc.standalone.js",
            redoc_favicon_url=f"{static}/ui/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route(docs_url, swagger_ui, include_in_schema=False, methods=["GET"])
    app.add_api_route(redoc_url, redoc, include_in_schema=False, methods=["GET"])
    return True


def _asyncapi_page(title: str, spec_url: str, assets: str) -> str:
    esc = html.escape
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n"
        f'<meta name="asyncapi-url" content="{esc(spec_url)}">\n'
        f'<link rel="stylesheet" href="{esc(assets)}/asyncapi.css">\n</head>\n<body>\n'
        f'<header><h1 id="title">{esc(title)}</h1><p id="info"></p><p><a id="raw" href="{esc(spec_url)}">'
        "asyncapi.json</a></p></header>\n"
        '<main id="doc" data-ready="false">Loading…</main>\n'
        f'<script src="{esc(assets)}/asyncapi.js"></script>\n</body>\n</html>\n'
    )
