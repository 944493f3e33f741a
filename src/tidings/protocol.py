"""The wire protocol's core: parsing of client messages, errors, encoding and framing.

Pure functions and data, no I/O: text in, a validated message model (:mod:`tidings.messages`) or a
:class:`ProtocolError` out; models or dicts in, JSON bytes and WebSocket frames out. The close codes live in
:mod:`tidings.close_codes` (re-exported here); docs/protocol.md and ``GET /asyncapi.json`` are generated from the
models.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from tidings.close_codes import CloseAction, CloseCode
from tidings.errors import TidingsError
from tidings.messages import CLIENT_MESSAGES, ClientMessage, Error, ErrorCode, encode_message

__all__ = [
    "CHANNEL_RE",
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


class Frame:
    """One outbound message, encoded once and shared by every recipient.

    ``payload`` is the JSON text as UTF-8 bytes. ``text`` (for ASGI servers) and ``wire`` (the complete unmasked
    WebSocket text frame, for transports that write raw bytes) are computed on first use and cached, so a
    publication to many sockets is encoded and framed once.
    """

    __slots__ = ("_text", "_wire", "_wire_deflate", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._text: str | None = None
        self._wire: bytes | None = None
        self._wire_deflate: bytes | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Frame:
        """Encode a message dict into a frame."""
        return cls(orjson.dumps(obj))

    @classmethod
    def of_message(cls, message: BaseModel) -> Frame:
        """Encode a message model into a frame."""
        return cls(encode_message(message))

    @property
    def text(self) -> str:
        """The payload as ``str`` (decoded once)."""
        if self._text is None:
            self._text = self.payload.decode()
        return self._text

    @property
    def wire(self) -> bytes:
        """The payload as one complete, unmasked, uncompressed WebSocket text frame (built once)."""
        if self._wire is None:
            self._wire = ws_text_frame(self.payload)
        return self._wire

    @property
    def wire_deflate(self) -> bytes:
        """The frame for a permessage-deflate connection (negotiated with ``server_no_context_takeover``).

        Compressed once (RSV1 set) and shared by every compressing recipient; ``wire`` itself when compressing
        does not pay (short payloads), which RFC 7692 allows message by message.
        """
        if self._wire_deflate is None:
            compressed = deflate_message(self.payload)
            self._wire_deflate = self.wire if compressed is None else ws_text_frame(compressed, compressed=True)
        return self._wire_deflate


def with_position(body: bytes, offset: int, epoch: str) -> bytes:
    """Append ``offset`` and ``epoch`` to an encoded JSON object without decoding it again."""
    head = body.rstrip()[:-1].rstrip()
    sep = b"" if head.endswith(b"{") else b","
    return b'%s%s"offset":%d,"epoch":"%s"}' % (head, sep, offset, epoch.encode())


def ws_text_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """Frame ``payload`` as a final, unmasked WebSocket text frame (RFC 6455 section 5.2).

    ``compressed`` sets RSV1: the payload is a permessage-deflate message (RFC 7692).
    """
    first = 0xC1 if compressed else 0x81
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = bytes((first, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + length.to_bytes(8, "big")
    return header + payload


#: Payloads shorter than this are sent uncompressed even on permessage-deflate connections.
DEFLATE_MIN_BYTES = 96
#: LZ77 window of the shared compressor; connections that negotiated a smaller ``server_max_window_bits`` get
#: uncompressed frames.
DEFLATE_WINDOW_BITS = 15

_deflate_lock = threading.Lock()
_deflater = zlib.compressobj(6, zlib.DEFLATED, -DEFLATE_WINDOW_BITS, 8)


def deflate_message(payload: bytes) -> bytes | None:
    """Compress one message for permessage-deflate without context takeover; None if that would not shrink it.

    One process-wide compressor is reused: a full flush after each message resets its dictionary, so every
    message decompresses on its own (what ``server_no_context_takeover`` promises the client).
    """
    if len(payload) < DEFLATE_MIN_BYTES:
        return None
    with _deflate_lock:
        data = _deflater.compress(payload) + _deflater.flush(zlib.Z_FULL_FLUSH)
    if data.endswith(b"\x00\x00\xff\xff"):
        data = data[:-4]
    return data if len(data) < len(payload) else None
