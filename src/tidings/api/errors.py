"""The hub routers' error handling, in one place.

- :class:`TidingsRoute`: the route class of the hub's routers; :class:`~tidings.errors.BrokerUnavailable` raised
  by any endpoint becomes one ``503 {"detail": ...}`` answer. A route class rather than an app-level handler, so
  it works wherever the routers are mounted (Tidings' own app or an application's ``include_router``).
- :func:`install_error_handlers`: client input the database cannot take becomes a 4xx reply instead of a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from tidings.errors import BrokerUnavailable

__all__ = ["UNAVAILABLE_DETAIL", "TidingsRoute", "broker_unavailable_response", "install_error_handlers"]

logger = logging.getLogger("tidings.api")

#: The ``detail`` of the 503 answer while the broker is down.
UNAVAILABLE_DETAIL = "Broker unavailable; try again shortly"


def broker_unavailable_response() -> JSONResponse:
    """The HTTP answer to a request that needed the broker while it was down."""
    return JSONResponse({"detail": UNAVAILABLE_DETAIL}, status_code=503, headers={"Retry-After": "1"})


class TidingsRoute(APIRoute):
    """An ``APIRoute`` answering ``503 {"detail": ...}`` when its endpoint raises :class:`BrokerUnavailable`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler of this route, wrapped."""
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except BrokerUnavailable:
                return broker_unavailable_response()

        return route_handler


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    """An integer (an id, an offset) beyond what the database stores (SQLite and PostgreSQL: 64 bits)."""
    logger.info("%s %s: integer out of range (%s)", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "Integer out of range (at most 9223372036854775807)"},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (``create_app`` does; a host application may too)."""
    app.add_exception_handler(OverflowError, _out_of_range)
