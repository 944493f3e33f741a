"""Logging setup, including redaction of tokens from access logs."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactTokens", "install_redaction"]

_TOKEN_RE = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace the value of ``token=`` query parameters with ``[redacted]``."""
    return _TOKEN_RE.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """A filter that removes tokens from log records' arguments and messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "token" in record.msg.lower():
            record.msg = redact(record.msg)
        return True


def install_redaction() -> None:
    """Add the redaction filter to uvicorn's loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
