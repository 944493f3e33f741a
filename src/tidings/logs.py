"""Log hygiene: tokens redacted and control characters escaped in every record of uvicorn's and Tidings' loggers.

Two rules, applied to the arguments of each record when it is created (a log-record factory, so every handler
and formatter sees the clean values, whichever logger or child logger the record comes from):

- **Tokens are redacted.** The value of any query parameter whose name, once percent-decoded (repeatedly) and
  lower-cased, contains ``token`` (``token``, ``%74oken``, ``Access_Token``...) becomes ``[redacted]``, and so
  does anything shaped like a JWT (``eyJ...``.``...``.``...``), wherever it appears.
- **No input can start a log line.** Control characters (C0, DEL, C1, U+2028/U+2029) in the arguments (paths,
  headers, usernames, reprs of objects holding them) are written as ``\\r``, ``\\n``, ``\\t`` or ``\\xNN`` /
  ``\\uNNNN`` escapes.

Only records of loggers named ``uvicorn*`` and ``tidings*`` are touched; a host application's own records are
left alone. Format strings (``record.msg``) are code, not input, and are only redacted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["RedactTokens", "escape_controls", "install_redaction", "redact", "sanitize"]

REDACTED = "[redacted]"

#: ``key=value`` pairs of a query string (or of text carrying one, such as an access-log request line).
_PAIR_RE = re.compile(r"(?P<sep>^|[?&;\s\"'])(?P<key>[^=&?;\s\"']+)=(?P<value>[^&;\s\"']*)")
#: A JSON Web Token: three base64url segments, the first one a JSON object (``{"`` -> ``eyJ``).
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _decoded_key(key: str) -> str:
    for _ in range(4):  # %2574oken -> %74oken -> token
        decoded = unquote_plus(key)
        if decoded == key:
            break
        key = decoded
    return key.lower()


def _redact_pair(match: re.Match[str]) -> str:
    if "token" not in _decoded_key(match["key"]):
        return match[0]
    return f"{match['sep']}{match['key']}={REDACTED}"


def redact(text: str) -> str:
    """``text`` with the values of token-like query parameters, and anything shaped like a JWT, redacted."""
    if "=" in text:
        text = _PAIR_RE.sub(_redact_pair, text)
    if "eyJ" in text:
        text = _JWT_RE.sub(REDACTED, text)
    return text


def _escape_char(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape, so it stays on one log line."""
    return _CONTROL_RE.sub(_escape_char, text)


def sanitize(text: str) -> str:
    """Redact tokens, then escape control characters."""
    return escape_controls(redact(text))


class _Clean:
    """A log argument that is not a string: ``%s`` and ``%r`` render it, then sanitize the text."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return sanitize(str(self.value))

    def __repr__(self) -> str:
        return sanitize(repr(self.value))

    def __format__(self, spec: str) -> str:
        return sanitize(format(self.value, spec))


def _clean_arg(value: object) -> object:
    if isinstance(value, str):
        return sanitize(value)
    if value is None or isinstance(value, int | float | Decimal):  # numbers (and bool) keep %d / %f working
        return value
    return _Clean(value)


def _clean_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(_clean_arg(arg) for arg in args)
    if isinstance(args, Mapping):
        return {key: _clean_arg(value) for key, value in args.items()}
    return args


def _ours(name: str) -> bool:
    return name.startswith(("uvicorn", "tidings"))


class RedactTokens(logging.Filter):
    """A filter applying the same rules to records of any logger it is attached to (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Sanitize ``record`` in place."""
        _clean_record(record)
        return True


def _clean_record(record: logging.LogRecord) -> None:
    if getattr(record, "_tidings_clean", False):
        return
    record._tidings_clean = True
    if record.args:
        record.args = _clean_args(record.args)
    if isinstance(record.msg, str) and ("=" in record.msg or "eyJ" in record.msg):
        record.msg = redact(record.msg)


def install_redaction() -> None:
    """Sanitize every record of the ``uvicorn*`` and ``tidings*`` loggers from now on (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_tidings_sanitizing", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _ours(record.name):
            _clean_record(record)
        return record

    factory_fn: Callable[..., logging.LogRecord] = factory
    factory_fn._tidings_sanitizing = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory_fn)
