"""Routine requests at DEBUG in the access log: a dashboard's successful GETs are not worth an INFO line each."""

from __future__ import annotations

import logging

__all__ = ["RoutineRequestsAtDebug", "install_routine_request_filter"]

ROUTINE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RoutineRequestsAtDebug(logging.Filter):
    """Demote uvicorn access records of successful ``GET``/``HEAD`` requests (status < 400) to DEBUG, and drop them
    unless the access logger is enabled for DEBUG. Writes, errors and every other record are untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep or demote one record."""
        args = record.args
        if not isinstance(args, tuple) or len(args) < 5:
            return True
        method, status = args[1], args[4]
        if method not in ROUTINE_METHODS or not isinstance(status, int) or status >= 400:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install_routine_request_filter() -> None:
    """Add the filter to ``uvicorn.access`` (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RoutineRequestsAtDebug) for f in logger.filters):
        logger.addFilter(RoutineRequestsAtDebug())
