"""The WebSocket endpoints, as thin raw-ASGI apps: handshake checks, then receive -> node.handle.

Authentication failures, a forbidden ``Origin`` and connection limits are reported after accepting, with close
code 1008 and a reason, because browsers cannot read the status of a refused handshake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import cookie_parser
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


def extract_token(
    scope: Scope, headers: dict[str, str], cookie_name: str | None = None
) -> tuple[str | None, str | None]:
    """The bearer token and the subprotocol to select: subprotocol pair, Authorization header, query, or the
    ``cookie_name`` cookie (safe only because the handshake's ``Origin`` is checked before the token is used)."""
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
    if cookie_name and "cookie" in headers:
        value = cookie_parser(headers["cookie"]).get(cookie_name)
        if value:
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
        detached = False
        try:
            # the handshake's locals (headers, token, the accept message) live in _open's frame, gone once it
            # returns: this coroutine's frame stays for the life of the connection
            conn = await self._open(scope, receive, send, abort, slot is not None)
            if conn is None:
                return
            detach = getattr(conn.transport, "detach", None)
            if detach is not None:
                # Tidings' own protocol serves the socket by callbacks from here on: this coroutine (and the ASGI
                # server's, the scope with it) ends, so an idle connection holds no coroutine, task or future;
                # the session releases the slot once the connection is gone
                detach(_Session(self, conn, conn.transport, slot).on_event)
                detached = True
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
            if not detached:
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
        token, subprotocol = extract_token(scope, headers, node.settings.token_cookie)
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

    async def _serve(self, conn: Connection, receive: Receive) -> None:
        while not await self.on_message(conn, await receive()):
            pass

    async def on_message(self, conn: Connection, message: Message) -> bool:
        """Serve one inbound ASGI event; True once it is the disconnect."""
        kind = message["type"]
        if kind == "websocket.receive":
            node = self.node
            limit = node.settings.max_message_bytes
            text = message.get("text")
            if text is None:
                if len(message.get("bytes") or b"") > limit:
                    conn.close(CloseCode.MESSAGE_TOO_BIG, "Message too big")
                    return False
                _refuse_binary(conn)
                return False
            if len(text) > limit // 4 and len(text.encode()) > limit:
                conn.close(CloseCode.MESSAGE_TOO_BIG, f"Message too big (limit {limit} bytes)")
                return False
            await node.handle(conn, text)
            return False
        if kind == "websocket.disconnect":
            if conn.close_code is None:  # the client closed (or dropped): its code for on_disconnect
                conn.close_code = message.get("code", 1005)
            return True
        return False


class _DetachedTransport(Protocol):
    """What :class:`_Session` needs of Tidings' own protocol (:class:`tidings.transport.asgi.ASGIMixin`)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def pause_inbound(self) -> None: ...

    def resume_inbound(self) -> None: ...


#: Inbound messages a detached session buffers before the socket stops being read; reading resumes under LOW.
SESSION_INBOX_HIGH = 16
SESSION_INBOX_LOW = 4


class _Session:
    """A connection served by callbacks (the fast transport's ``detach``): a task exists only while messages are
    being handled, in order, one at a time; the disconnect is handled last."""

    __slots__ = ("conn", "done", "endpoint", "inbox", "proto", "slot", "task")

    def __init__(self, endpoint: WebSocketEndpoint, conn: Connection, proto: Any, slot: Any = None) -> None:
        self.endpoint = endpoint
        self.slot = slot  # the connection-limit slot (endpoint.limits), released at the end
        self.conn = conn
        self.proto: _DetachedTransport = proto
        self.inbox: list[Message] = []
        self.task: asyncio.Task[None] | None = None
        self.done = False  # the node has forgotten the connection

    def on_event(self, message: Message) -> None:
        """An inbound ASGI event, straight from the protocol."""
        if self.done:
            return
        inbox = self.inbox
        inbox.append(message)
        if self.task is None:
            self.task = self.proto.spawn(self._run())
        elif len(inbox) >= SESSION_INBOX_HIGH:
            self.proto.pause_inbound()

    async def _run(self) -> None:
        inbox = self.inbox
        conn = self.conn
        try:
            while inbox:
                message = inbox.pop(0)
                if len(inbox) <= SESSION_INBOX_LOW:
                    self.proto.resume_inbound()
                if await self.endpoint.on_message(conn, message):
                    self.done = True
                    try:
                        await self.endpoint.node.disconnect(conn)
                    finally:
                        self.endpoint.limits.release(self.slot)
                    return
        except Exception:
            logger.exception("serving %s failed", conn)
            self.done = True
            inbox.clear()
            conn.close(CloseCode.INTERNAL_ERROR, "Internal error")
            try:
                await self.endpoint.node.disconnect(conn)
            finally:
                self.endpoint.limits.release(self.slot)
        finally:
            self.task = None


def websocket_routes(node: Node) -> list[WebSocketRoute]:
    """Routes for ``/ws/authenticated`` and ``/ws/{user_id}`` (sharing one :class:`SocketLimits`)."""
    authenticated = WebSocketEndpoint(node)
    return [
        WebSocketRoute("/ws/authenticated", authenticated, name="ws_authenticated"),
        WebSocketRoute(
            "/ws/{user_id}", WebSocketEndpoint(node, match_path_user=True, limits=authenticated.limits), name="ws_user"
        ),
    ]
