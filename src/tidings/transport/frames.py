"""Frame building and permessage-deflate for server-to-client WebSocket frames: one place for both.

- :class:`Frame`: one outbound message, encoded once and shared by every recipient; its framed bytes (``wire``,
  ``wire_deflate``) are built on first use and cached.
- :func:`frame_bytes` / :func:`ws_text_frame`: final, unmasked frames (RFC 6455 section 5.2); ``compressed``
  sets RSV1 (RFC 7692).
- :func:`deflate_message`: the shared fan-out compressor (level 6, full 15-bit window, no context takeover);
  :func:`deflate_asgi_message`: per-message compression of ASGI ``websocket.send`` messages with the negotiated
  window (fast level).

``tidings.protocol`` re-exports :class:`Frame`, :func:`ws_text_frame`, :func:`deflate_message` and the
``DEFLATE_*`` constants under their old names.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "DEFLATE_MIN_BYTES",
    "DEFLATE_WINDOW_BITS",
    "Frame",
    "deflate_asgi_message",
    "deflate_message",
    "frame_bytes",
    "ping_frame",
    "truncate_reason",
    "ws_text_frame",
]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_PING = 0x9

#: Payloads shorter than this are sent uncompressed even on permessage-deflate connections.
DEFLATE_MIN_BYTES = 96
#: LZ77 window of the shared compressor; connections that negotiated a smaller ``server_max_window_bits`` get
#: uncompressed frames.
DEFLATE_WINDOW_BITS = 15


def frame_bytes(opcode: int, payload: bytes, compressed: bool = False) -> bytes:
    """A final, unmasked frame (server to client) with ``payload``; ``compressed`` sets RSV1."""
    first = 0x80 | opcode | (0x40 if compressed else 0)
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def ws_text_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """Frame ``payload`` as a final, unmasked WebSocket text frame (RFC 6455 section 5.2).

    ``compressed`` sets RSV1: the payload is a permessage-deflate message (RFC 7692).
    """
    return frame_bytes(OP_TEXT, payload, compressed)


def ping_frame(payload: bytes) -> bytes:
    """A ping frame with ``payload`` (at most 125 bytes)."""
    return frame_bytes(OP_PING, payload)


def truncate_reason(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8 after the code)."""
    encoded = reason.encode()
    if len(encoded) <= 123:
        return reason
    return encoded[:123].decode(errors="ignore")


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


_asgi_deflaters: dict[int, Any] = {}


def deflate_asgi_message(payload: bytes, window_bits: int) -> bytes:
    """Compress one ASGI message for permessage-deflate without context takeover (fast level, any window).

    Every message is compressed once negotiated, small or not (some clients mishandle uncompressed text on a
    compressing connection). Shared fan-out frames use :attr:`Frame.wire_deflate` instead.
    """
    deflater = _asgi_deflaters.get(window_bits)
    if deflater is None:
        deflater = _asgi_deflaters[window_bits] = zlib.compressobj(1, zlib.DEFLATED, -window_bits, 8)
    data: bytes = deflater.compress(payload) + deflater.flush(zlib.Z_FULL_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


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
        from tidings.messages import encode_message  # the message models import this module's Frame

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
