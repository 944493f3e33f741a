"""The hub routers' one error handler: :class:`~tidings.errors.BrokerUnavailable` becomes ``503``.

A route class rather than an app-level exception handler, so it works wherever the routers are mounted (Tidings'
own app or an application's ``include_router``), with nothing to install.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from tidings.errors import BrokerUnavailable

__all__ = ["UNAVAILABLE_DETAIL", "TidingsRoute", "broker_unavailable_response"]

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
