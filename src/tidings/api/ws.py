"""The WebSocket endpoints, as thin raw-ASGI apps: handshake checks, then receive -> node.handle.

Authentication failures, a forbidden ``Origin`` and connection limits are reported after accepting, with close
code 1008 and a reason, because browsers cannot read the status of a refused handshake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.routing import WebSocketRoute

from tidings.api.socket_limits import SocketLimits
from tidings.connection import Connection
from tidings.guard import ProxyTrust
from tidings.node import ConnectionRejected, Node
from tidings.protocol import CloseCode, ErrorCode, Frame, error_reply
from tidings.transport import ASGITransport, Transport

__all__ = ["TRANSPORT_EXTENSION", "WebSocketEndpoint", "websocket_routes"]

logger = logging.getLogger("tidings.ws")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: ASGI scope extension a server may offer: a callable returning a raw :class:`Transport` for this socket.
TRANSPORT_EXTENSION = "tidings.transport"

_BINARY_REFUSED = Frame.of_message(
    error_reply(ErrorCode.BAD_REQUEST, "Binary frames are not supported; send JSON text")
)
_RATE_LIMITED = Frame.of_message(error_reply(ErrorCode.RATE_LIMITED, "Too many messages; slow down"))


def _refuse_binary(conn: Connection) -> None:
    """Answer a binary frame with an error; it counts against the rate limit like any message (flood: 4002)."""
    if conn.allow_message():
        conn.enqueue(_BINARY_REFUSED)
    elif conn.rate_strikes > conn.rate_burst:
        conn.close(CloseCode.RATE_LIMITED, "Rate limit exceeded")
    else:
        conn.enqueue(_RATE_LIMITED)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def extract_token(scope: Scope, headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The bearer token and the subprotocol to select: subprotocol pair, Authorization header, or query."""
    # ASGI servers list the offered subprotocols in the scope; some (uvicorn's wsproto) drop the header itself
    protocols = [str(p).strip() for p in scope.get("subprotocols") or () if str(p).strip()] or [
        p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()
    ]
    if len(protocols) >= 2 and protocols[0].lower() == "bearer":
        return protocols[1], protocols[0]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), None
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if key == "token":
            return value, None
    return None, None


def origin_allowed(origin: str | None, headers: dict[str, str], allowed: list[str], scheme: str) -> bool:
    """The server's own origin (the ``Host`` the client connected to) always; plus the ``ALLOWED_ORIGINS`` list
    ('*' allows any). No Origin (not a browser): allowed."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    host = headers.get("host", "")
    same_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme) == parts.scheme
    return same_scheme and parts.netloc.lower() == host.lower()


def origin_refused_reason(origin: str) -> str:
    """The 1008 close reason for a refused ``Origin``: what to set (close reasons are at most 123 bytes)."""
    shown = origin.rstrip("/")
    reason = f"Origin not allowed: add {shown} to TIDINGS_ALLOWED_ORIGINS"
    if len(reason.encode()) > 123:
        reason = "Origin not allowed: add this page's origin to TIDINGS_ALLOWED_ORIGINS"
    return reason


class WebSocketEndpoint:
    """One of ``/ws/authenticated`` and ``/ws/{user_id}`` (``match_path_user`` True for the latter)."""

    def __init__(self, node: Node, *, match_path_user: bool = False, limits: SocketLimits | None = None) -> None:
        self.node = node
        self.match_path_user = match_path_user
        s = node.settings
        self.limits = limits or SocketLimits(
            s.max_connections, s.max_connections_per_ip, ProxyTrust(s.forwarded_allow_ips)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        serving = asyncio.current_task()
        aborted = False

        def abort() -> None:  # a stalled client (see ASGITransport.abort): stop waiting for it, forget it
            nonlocal aborted
            if serving is not None and not aborted:
                aborted = True
                serving.cancel()

        slot = self.limits.acquire(scope)  # None: over the node's or this address's cap (closed with 1013)
        try:
            # the handshake's locals (headers, token, the accept message) live in _open's frame, gone once it
            # returns: this coroutine's frame stays for the life of the connection
            conn = await self._open(scope, receive, send, abort, slot is not None)
            if conn is None:
                return
            try:
                await self._serve(conn, receive)
            except asyncio.CancelledError:
                if not aborted or serving is None:
                    raise
                serving.uncancel()
            finally:
                aborted = True  # from here on an abort must not interrupt the cleanup
                await self.node.disconnect(conn)
        finally:
            self.limits.release(slot)

    async def _open(
        self, scope: Scope, receive: Receive, send: Send, abort: Callable[[], None], within_limits: bool = True
    ) -> Connection | None:
        """Accept, authenticate and register the connection; None if it was refused (and closed)."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return None
        node = self.node
        headers = _headers(scope)
        token, subprotocol = extract_token(scope, headers)
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol:
            accept["subprotocol"] = subprotocol
        await send(accept)
        factory = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
        transport: Transport = factory() if factory is not None else ASGITransport(send, on_abort=abort)
        try:
            if not within_limits:
                raise ConnectionRejected(CloseCode.TRY_AGAIN_LATER, "Try again later")
            origin = headers.get("origin")
            if not origin_allowed(origin, headers, node.settings.allowed_origins, scope["scheme"]):
                rejected = node.reject("Origin not allowed")
                raise ConnectionRejected(rejected.code, origin_refused_reason(origin or ""))
            if not node.running:
                raise ConnectionRejected(CloseCode.GOING_AWAY, "Server shutting down")
            identity = await node.authenticate_handshake(scope, token)  # the host's authenticate, or the token
            user = identity.user
            if self.match_path_user and str(scope.get("path_params", {}).get("user_id")) != str(user.id):
                raise node.reject("User id mismatch")
            client = scope.get("client")
            return await node.connect(
                user, transport, identity.expires_at, token_id=identity.token_id, client=client[0] if client else None
            )
        except ConnectionRejected as exc:
            await send({"type": "websocket.close", "code": exc.code, "reason": exc.reason})
            return None

    async def _serve(self, conn: Any, receive: Receive) -> None:
        node = self.node
        limit = node.settings.max_message_bytes
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is None:
                    if len(message.get("bytes") or b"") > limit:
                        conn.close(CloseCode.MESSAGE_TOO_BIG, "Message too big")
                        continue
                    _refuse_binary(conn)
                    continue
                if len(text) > limit // 4 and len(text.encode()) > limit:
                    conn.close(CloseCode.MESSAGE_TOO_BIG, f"Message too big (limit {limit} bytes)")
                    continue
                await node.handle(conn, text)
            elif kind == "websocket.disconnect":
                if conn.close_code is None:  # the client closed (or dropped): its code for on_disconnect
                    conn.close_code = message.get("code", 1005)
                return


def websocket_routes(node: Node) -> list[WebSocketRoute]:
    """Routes for ``/ws/authenticated`` and ``/ws/{user_id}`` (sharing one :class:`SocketLimits`)."""
    authenticated = WebSocketEndpoint(node)
    return [
        WebSocketRoute("/ws/authenticated", authenticated, name="ws_authenticated"),
        WebSocketRoute(
            "/ws/{user_id}", WebSocketEndpoint(node, match_path_user=True, limits=authenticated.limits), name="ws_user"
        ),
    ]
