"""The wire protocol: close codes, error codes, parsing of client messages and encoding of replies.

Pure functions and data, no I/O: text in, a validated :class:`ClientMessage` (or a :class:`ProtocolError`) out;
dicts in, JSON bytes out. ``docs/protocol.md`` is the reference for every message here.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import orjson

__all__ = [
    "CHANNEL_RE",
    "ClientMessage",
    "CloseCode",
    "ErrorCode",
    "Frame",
    "ProtocolError",
    "deflate_message",
    "encode",
    "error_message",
    "parse_client_message",
    "with_position",
    "ws_text_frame",
]

CHANNEL_RE = re.compile(r"^[A-Za-z0-9_\-:.@]{1,128}$")


class CloseCode(IntEnum):
    """WebSocket close codes the server uses; :meth:`reconnect` tells a client whether to come back."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SLOW_CONSUMER = 4000
    IDLE_TIMEOUT = 4001
    RATE_LIMITED = 4002
    TOKEN_EXPIRED = 4003
    PERMISSIONS_CHANGED = 4004  #: the user's role changed: reconnect to get the new rights

    @property
    def reconnect(self) -> bool:
        """True when a client should reconnect after this close (and recover from history)."""
        return self in {
            CloseCode.GOING_AWAY,
            CloseCode.INTERNAL_ERROR,
            CloseCode.SLOW_CONSUMER,
            CloseCode.IDLE_TIMEOUT,
            CloseCode.RATE_LIMITED,
            CloseCode.TOKEN_EXPIRED,
            CloseCode.PERMISSIONS_CHANGED,
        }


class ErrorCode(StrEnum):
    """Machine-readable ``code`` of an ``error`` or ``subscription_error`` reply."""

    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    INVALID_SUBSCRIPTION = "invalid_subscription"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"


class ProtocolError(Exception):
    """A client message that cannot be served; becomes an ``error`` reply, the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, msg_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id


KNOWN_TYPES = frozenset({"ping", "subscribe", "unsubscribe", "request_status", "publish", "presence"})


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A validated client message."""

    type: str
    id: Any = None
    channel: str | None = None
    data: Any = None
    since_offset: int | None = None
    since_epoch: str | None = None
    cursor: int | None = None  # presence: members after this user id
    limit: int | None = None  # presence: page size


def _channel_field(obj: dict[str, Any], msg_type: str, msg_id: Any, *keys: str) -> str:
    for key in keys:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str):
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{key}' must be a string", msg_id)
            return value
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{keys[0]}' is required for {msg_type}", msg_id)


def _presence_message(obj: dict[str, Any], msg_id: Any, channel: str) -> ClientMessage:
    """``presence`` with its optional ``cursor`` (a user id from the previous page) and ``limit`` (1-1000)."""
    values: dict[str, int | None] = {}
    for key, low, high in (("cursor", 0, 2**63 - 1), ("limit", 1, 1000)):
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{key}' must be an integer from {low} to {high}", msg_id)
        values[key] = value
    return ClientMessage(type="presence", id=msg_id, channel=channel, cursor=values["cursor"], limit=values["limit"])


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse and validate one inbound text frame; raise :class:`ProtocolError` on bad input."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "Invalid JSON format") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "A message must be a JSON object")
    msg_id = obj.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int)):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'id' must be a string or an integer")
    msg_type = obj.get("type")
    if msg_type not in KNOWN_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown message type: {msg_type}", msg_id)
    if msg_type in {"ping", "request_status"}:
        return ClientMessage(type=msg_type, id=msg_id)
    if msg_type == "publish":
        channel = _channel_field(obj, msg_type, msg_id, "channel", "subscription")
        if "data" not in obj:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'data' is required for publish", msg_id)
        return ClientMessage(type=msg_type, id=msg_id, channel=channel, data=obj["data"])
    channel = _channel_field(obj, msg_type, msg_id, "subscription", "channel")
    if msg_type == "presence":
        return _presence_message(obj, msg_id, channel)
    if msg_type != "subscribe" or obj.get("since") is None:
        return ClientMessage(type=msg_type, id=msg_id, channel=channel)
    since = obj["since"]
    offset = since.get("offset") if isinstance(since, dict) else None
    epoch = since.get("epoch") if isinstance(since, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(epoch, str):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, '\'since\' must be {"offset": non-negative integer, "epoch": string}', msg_id
        )
    return ClientMessage(type=msg_type, id=msg_id, channel=channel, since_offset=offset, since_epoch=epoch)


def encode(obj: dict[str, Any]) -> bytes:
    """Encode one message as compact JSON (UTF-8 bytes)."""
    return orjson.dumps(obj)


def error_message(code: ErrorCode, message: str, msg_id: Any = None, **extra: Any) -> dict[str, Any]:
    """The ``error`` reply for a failed client message."""
    reply: dict[str, Any] = {"type": "error", "code": str(code), "message": message, **extra}
    if msg_id is not None:
        reply["id"] = msg_id
    return reply


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
