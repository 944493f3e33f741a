"""The opening handshake: websockets' sans-I/O server protocol as configured here, the ASGI scope of an upgrade
request, the 101 response's headers on accept, and HTTP responses refusing an upgrade."""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from types import GeneratorType
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import get_local_addr, is_ssl
from websockets.datastructures import Headers
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from tidings.transport.frames import DEFLATE_WINDOW_BITS

__all__ = [
    "TRANSPORT_EXTENSION",
    "accept_response",
    "asgi_scope",
    "negotiated_deflate",
    "parser_between_frames",
    "refusal",
    "restart_frame_parser",
    "sansio_protocol",
]

#: The ASGI scope extension holding a zero-argument callable that returns this socket's raw transport.
TRANSPORT_EXTENSION = "tidings.transport"

#: The sans-I/O protocol logs every open and close at INFO; keep that out of the server log unless asked for.
wire_logger = logging.getLogger("tidings.fastws.wire")
if wire_logger.level == logging.NOTSET:
    wire_logger.setLevel(logging.WARNING)

_STATUS_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class _ServerProtocol(ServerProtocol):
    """``websockets``' sans-I/O server protocol, accepting a close frame in the middle of a fragmented message.

    RFC 6455 section 5.4 lets control frames interleave with fragments; the unfinished message is dropped and the
    closing handshake completes normally (Autobahn case 7.1.5) instead of failing with 1002.
    """

    def recv_frame(self, frame: WSFrame) -> None:
        """Process one parsed frame."""
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


def sansio_protocol(config: Config) -> ServerProtocol:
    """The sans-I/O protocol for one socket: uvicorn's size limit; permessage-deflate, when enabled, always without
    context takeover on either side (so one compressed frame can be shared by every recipient)."""
    extensions: list[ServerExtensionFactory] = []
    if config.ws_per_message_deflate:
        extensions.append(
            ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)
        )
    return _ServerProtocol(extensions=extensions, max_size=config.ws_max_size, logger=wire_logger)


def asgi_scope(
    request: Request,
    transport: asyncio.Transport,
    config: Config,
    client: tuple[str, int] | None,
    app_state: dict[str, Any],
    raw_transport: Callable[[], object],
) -> dict[str, Any]:
    """The ASGI ``websocket`` scope of an upgrade request, with the raw transport extension."""
    raw_path, _, query = request.path.partition("?")
    subprotocols: list[str] = []
    for header in request.headers.get_all("Sec-WebSocket-Protocol"):
        subprotocols.extend(token.strip() for token in header.split(","))
    root_path = config.root_path
    return {
        "type": "websocket",
        "asgi": {"version": config.asgi_version, "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "wss" if is_ssl(transport) else "ws",
        "server": get_local_addr(transport),
        "client": client,
        "root_path": root_path,
        "path": root_path + unquote(raw_path),
        "raw_path": root_path.encode("ascii") + raw_path.encode("ascii"),
        "query_string": query.encode("ascii"),
        "headers": [(k.lower().encode("ascii"), v.encode("latin-1")) for k, v in request.headers.raw_items()],
        "subprotocols": subprotocols,
        "state": app_state.copy(),
        "extensions": {"websocket.http.response": {}, TRANSPORT_EXTENSION: raw_transport},
    }


def describe(scope: dict[str, Any] | None, client: tuple[str, int] | None) -> tuple[str, str]:
    """Client address and path (with query; tokens are redacted by Tidings' log filter) for access logs."""
    peer = f"{client[0]}:{client[1]}" if client else "-"
    if scope is None:
        return peer, "-"
    path = scope["path"]
    query = scope["query_string"].decode("ascii")
    return peer, f"{path}?{query}" if query else path


def accept_response(
    response: Response, default_headers: Iterable[tuple[bytes, bytes]], message: dict[str, Any]
) -> None:
    """Complete the 101 response for ``websocket.accept``: uvicorn's default headers, the application's headers
    and subprotocol."""
    del response.headers["Date"]
    for name, value in (*default_headers, *message.get("headers", ())):
        response.headers[name.decode("latin-1")] = value.decode("latin-1")
    subprotocol = message.get("subprotocol")
    if subprotocol:
        response.headers["Sec-WebSocket-Protocol"] = subprotocol


def negotiated_deflate(conn: ServerProtocol) -> tuple[int, bool]:
    """(server window bits for ASGI messages or 0, whether shared compressed fan-out frames may be sent)."""
    for extension in conn.extensions:
        if isinstance(extension, PerMessageDeflate):
            # Shared compressed frames need the client to accept our window size; otherwise send plain frames.
            bits = extension.local_max_window_bits
            return bits, bits >= DEFLATE_WINDOW_BITS
    return 0, False


def restart_frame_parser(conn: ServerProtocol) -> None:
    """Drop the handshake parser's generator (it keeps the Request, headers and all, alive in its frame for the
    connection's life) and start the frame parser afresh. Only when nothing is half-parsed."""
    if not conn.reader.buffer:
        conn.parser = Protocol.parse(conn)
        next(conn.parser)


#: The code of the sans-I/O reader's end-of-stream check: the frame parser waits in it between frames, and only there.
_BETWEEN_FRAMES = StreamReader.at_eof.__code__


def parser_between_frames(conn: ServerProtocol) -> bool:
    """True when the frame parser has consumed every byte it was fed and waits for the next frame's first byte.

    Only then may a whole frame arriving in one read be handled without the parser (the keepalive's pong fast path):
    mid-frame (a header read, its payload not yet) or after a close (the parser is replaced) the bytes are the
    parser's to interpret.
    """
    waiting = cast("GeneratorType[None, None, None]", conn.parser).gi_yieldfrom  # None unless suspended in one
    return getattr(waiting, "gi_code", None) is _BETWEEN_FRAMES and not conn.reader.buffer


def refusal(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    """An HTTP response refusing the upgrade (the TCP connection is closed after it)."""
    response_headers = Headers(headers)
    response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
    response_headers.setdefault("Connection", "close")
    response_headers.setdefault("Content-Length", str(len(body)))
    response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    return Response(status, _STATUS_PHRASES.get(status, ""), response_headers, body)
