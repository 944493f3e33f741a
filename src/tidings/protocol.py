"""The wire protocol's core: parsing of client messages, errors, encoding and framing.

Pure functions and data, no I/O: text in, a validated message model (:mod:`tidings.messages`) or a
:class:`ProtocolError` out; models or dicts in, JSON bytes and WebSocket frames out. The close codes live in
:mod:`tidings.close_codes` (re-exported here); docs/protocol.md and ``GET /asyncapi.json`` are generated from the
models.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from pydantic import ValidationError

from tidings.close_codes import CloseAction, CloseCode
from tidings.errors import TidingsError
from tidings.messages import CLIENT_MESSAGES, ClientMessage, Error, ErrorCode, encode_message

# framing and deflate live with the transport; re-exported here under their old names
from tidings.transport.frames import (
    DEFLATE_MIN_BYTES,
    DEFLATE_WINDOW_BITS,
    Frame,
    deflate_message,
    ws_text_frame,
)

__all__ = [
    "CHANNEL_RE",
    "DEFLATE_MIN_BYTES",
    "DEFLATE_WINDOW_BITS",
    "ClientMessage",
    "CloseAction",
    "CloseCode",
    "ErrorCode",
    "Frame",
    "ProtocolError",
    "deflate_message",
    "encode",
    "encode_message",
    "error_message",
    "error_reply",
    "parse_client_message",
    "with_position",
    "ws_text_frame",
]

CHANNEL_RE = re.compile(r"^[A-Za-z0-9_\-:.@]{1,128}$")


class ProtocolError(TidingsError):
    """A client message that cannot be served; becomes an ``error`` reply, the connection stays open.

    ``field`` names the offending field of a ``bad_request`` (``subscription``, ``since.offset``).
    """

    def __init__(self, code: ErrorCode, message: str, msg_id: Any = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id
        self.field = field


KNOWN_TYPES = frozenset(CLIENT_MESSAGES)

#: How a pydantic error type reads in a ``bad_request`` message: ``'<field>' <text>``.
_ERROR_TEXT = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "greater_than_equal": "must be a non-negative integer",
    "less_than_equal": "is too large",
    "model_type": "must be an object",
    "dict_type": "must be an object",
}


def _bad_request(error: ValidationError, msg_type: str, msg_id: Any) -> ProtocolError:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "type"
    if first["type"] == "missing":
        text = f"'{field}' is required for {msg_type}"
    else:
        text = f"'{field}' {_ERROR_TEXT.get(first['type'], first['msg'][0].lower() + first['msg'][1:])}"
    return ProtocolError(ErrorCode.BAD_REQUEST, text, msg_id, field=field)


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse and validate one inbound text frame into its model; raise :class:`ProtocolError` on bad input.

    Errors, in this order: ``invalid_json``; ``bad_request`` (not an object, or a bad ``id``); ``unknown_type``
    (echoing the ``id``); ``bad_request`` naming the first offending field (``field`` in the reply).
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "Invalid JSON format") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "A message must be a JSON object")
    msg_id = obj.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int)):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'id' must be a string or an integer", field="id")
    msg_type = obj.get("type")
    model = CLIENT_MESSAGES.get(msg_type) if isinstance(msg_type, str) else None
    if model is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown message type: {msg_type}", msg_id, field="type")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise _bad_request(exc, str(msg_type), msg_id) from None


def encode(obj: dict[str, Any]) -> bytes:
    """Encode one message as compact JSON (UTF-8 bytes)."""
    return orjson.dumps(obj)


def error_reply(code: ErrorCode, message: str, msg_id: Any = None, field: str | None = None) -> Error:
    """The ``error`` reply (a model) for a failed client message."""
    return Error(code=code, message=message, id=msg_id, field=field)


def error_message(code: ErrorCode, message: str, msg_id: Any = None, field: str | None = None) -> dict[str, Any]:
    """The ``error`` reply for a failed client message, as a dict."""
    return error_reply(code, message, msg_id, field).model_dump(mode="json", exclude_none=True)


def now() -> float:
    """Wall-clock timestamp used in messages (seconds since the epoch)."""
    return time.time()


def with_position(body: bytes, offset: int, epoch: str) -> bytes:
    """Append ``offset`` and ``epoch`` to an encoded JSON object without decoding it again."""
    head = body.rstrip()[:-1].rstrip()
    sep = b"" if head.endswith(b"{") else b","
    return b'%s%s"offset":%d,"epoch":"%s"}' % (head, sep, offset, epoch.encode())
