"""Exception handlers turning client input the database cannot take into 4xx replies instead of 500s."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

__all__ = ["install_error_handlers"]

logger = logging.getLogger("tidings.api")


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
