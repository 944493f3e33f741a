"""Connection guard for ``tidings serve``: a handshake deadline and connection caps at the asyncio-protocol level.

Uvicorn waits forever for the request of a connection that sends nothing (or half a request): there is no
header-read timeout, and nothing bounds how many such connections one client holds. :func:`guarded_protocols`
wraps uvicorn's HTTP protocol class (and the WebSocket protocol class it upgrades to) so that every TCP
connection is accounted for from ``connection_made`` to ``connection_lost``:

- **Handshake deadline.** A connection must deliver a complete HTTP request (head and body) or its WebSocket
  upgrade request within ``TIDINGS_HANDSHAKE_TIMEOUT`` seconds of opening, or of the end of its previous
  response (keep-alive); otherwise the socket is closed. One timer handle per connection, cancelled at the
  upgrade; a request the application is still answering is never cut.
- **Caps.** ``TIDINGS_MAX_CONNECTIONS`` open TCP connections per node (HTTP, WebSocket, unfinished handshakes
  alike) and ``TIDINGS_MAX_CONNECTIONS_PER_IP`` per client address (an IPv6 client is its /64). A connection over
  a cap is still given a short deadline to send its request, and then answered without involving the
  application: HTTP 503 with ``Retry-After``, or -- a WebSocket upgrade -- the handshake completed and closed at
  once with 1013 "Try again later" (browsers cannot read the status of a refused upgrade). At most
  :attr:`ConnectionGuard.refusing_max` refusals are pending at a time; beyond that, sockets are dropped at once.
- **Proxies.** Connections *from* an address in ``TIDINGS_FORWARDED_ALLOW_IPS`` are not capped per IP here (a
  proxy carries many clients); their clients' ``X-Forwarded-For`` address is capped at the ASGI level, per
  WebSocket (see :class:`tidings.api.ws.SocketLimits`).

Mounted in another server (plain uvicorn running a host app), none of this runs: what the ASGI level can do
(WebSocket caps, body limits) is done by the hub's endpoints; the handshake deadline needs ``tidings serve``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, cast

from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol

__all__ = ["CappedCounts", "ConnectionGuard", "ProxyTrust", "fd_budget", "guarded_protocols"]

logger = logging.getLogger("tidings.guard")

#: Seconds a connection over a cap has to send its request before it is dropped without an answer.
REFUSAL_TIMEOUT = 5.0
#: Seconds a refused WebSocket gets to answer the 1013 close frame before its socket is closed.
REFUSAL_LINGER = 2.0
#: File descriptors kept free for everything but client sockets (database, Redis, logs, crawls).
RESERVED_FDS = 128
#: The close code and reason of a WebSocket refused over a cap.
TRY_AGAIN_LATER = (1013, "Try again later")

_REFUSED_BODY = b'{"detail":"Too many connections; try again later"}'


class ProxyTrust:
    """Which peers are proxies whose ``X-Forwarded-For`` is believed: IPs, networks (CIDR) or ``*``."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.any = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip()
            if entry == "*":
                self.any = True
            elif entry:
                try:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    logger.warning("TIDINGS_FORWARDED_ALLOW_IPS: %r is not an IP address or network; ignored", entry)

    def __contains__(self, host: object) -> bool:
        if self.any:
            return True
        if not isinstance(host, str) or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def client_key(host: str) -> str:
    """What a per-IP cap counts: the address, or its /64 for IPv6 (one host owns at least a /64)."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class CappedCounts:
    """Open connections, in total and per client key, held to a total cap and a per-key cap."""

    def __init__(self, max_total: int, max_per_key: int) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.open = 0
        self.per_key: dict[str, int] = {}

    def admit(self, key: str | None) -> bool:
        """Count a new connection from ``key`` (None: counted in the total only); False if it is over a cap."""
        if self.open >= self.max_total:
            return False
        if key is not None:
            count = self.per_key.get(key, 0)
            if count >= self.max_per_key:
                return False
            self.per_key[key] = count + 1
        self.open += 1
        return True

    def release(self, key: str | None) -> None:
        """A connection counted by :meth:`admit` with ``key`` is gone."""
        self.open -= 1
        if key is not None:
            count = self.per_key.get(key, 0) - 1
            if count > 0:
                self.per_key[key] = count
            else:
                self.per_key.pop(key, None)


class ConnectionGuard(CappedCounts):
    """Counts of one node's open connections (:class:`CappedCounts`), and the limits they are held to."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_ip: int,
        handshake_timeout: float,
        trusted_proxies: ProxyTrust | None = None,
    ) -> None:
        super().__init__(max_connections, max_per_ip)
        self.handshake_timeout = handshake_timeout
        self.trusted_proxies = trusted_proxies or ProxyTrust(())
        #: refusals (503 / 1013) waiting for their request at the same time; beyond, sockets are dropped
        self.refusing_max = min(1024, max(16, max_connections // 10))
        self.refusing = 0
        self.refused = 0  # total, for diagnostics
        self.timed_out = 0

    def key_of(self, transport: asyncio.BaseTransport) -> str | None:
        """The per-IP key of a socket's peer; None for a trusted proxy (or a Unix socket)."""
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
            return None
        host: str = peer[0]
        if host in self.trusted_proxies:
            return None
        return client_key(host)


def fd_budget(max_connections: int) -> int:
    """``max_connections``, lowered to what the open-file limit allows (raising the soft limit first)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = max_connections + min(1024, max(16, max_connections // 10)) + RESERVED_FDS
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (ValueError, OSError):
        return max_connections
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    budget = max(1, (soft - RESERVED_FDS) * 10 // 11)
    logger.warning(
        "TIDINGS_MAX_CONNECTIONS=%d does not fit the open-file limit (%d); using %d", max_connections, soft, budget
    )
    return budget


# ---- refusals --------------------------------------------------------------------------------------------------


async def _refuse_http(scope: MutableMapping[str, Any], receive: Any, send: Callable[..., Awaitable[None]]) -> None:
    """The ASGI app a connection over a cap gets instead of the real one: 503, then the socket is closed."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_REFUSED_BODY)).encode()),
                (b"retry-after", b"5"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _REFUSED_BODY})


def _first_offered(protocol: ServerProtocol, offered: Any) -> Any:
    return offered[0] if offered else None  # browsers fail a handshake that ignores their subprotocols


class _Linger(asyncio.Protocol):
    """After a refused WebSocket's close frame: wait briefly for the peer's close, then close the socket."""

    def __init__(self, transport: asyncio.Transport, done: Callable[[], None]) -> None:
        self.transport = transport
        self.done = done
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        self.transport.close()  # the peer's close frame (or anything else): we are done

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.done()


def refuse_websocket(transport: asyncio.Transport, headers: list[tuple[bytes, bytes]]) -> bool:
    """Complete the upgrade and close with 1013 "Try again later" at once; False if the upgrade was invalid
    (then the 4xx response was written and the socket is closing)."""
    protocol = ServerProtocol(select_subprotocol=_first_offered, logger=logging.getLogger("tidings.guard.wire"))
    request = Request("/", Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]))
    response = protocol.accept(request)
    protocol.send_response(response)
    upgraded = response.status_code == 101
    if upgraded:
        protocol.send_close(*TRY_AGAIN_LATER)
    transport.write(b"".join(protocol.data_to_send()))
    if not upgraded:
        transport.close()
    return upgraded


# ---- the protocol classes --------------------------------------------------------------------------------------

_ADMITTED, _REFUSED, _DROPPED, _UPGRADED = range(4)


class _GuardedHTTP(asyncio.Protocol):
    """Mixed in front of uvicorn's HTTP protocol class (httptools or h11) by :func:`guarded_protocols`."""

    guard: ConnectionGuard
    # uvicorn's HTTP protocols have these
    transport: asyncio.Transport
    cycle: Any
    app: Any
    headers: list[tuple[bytes, bytes]]
    connections: set[Any]
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit (count) or refuse the new connection, and start its handshake deadline."""
        super().connection_made(transport)
        guard = self.guard
        self._guard_timer: asyncio.TimerHandle | None = None
        self._guard_key = key = guard.key_of(transport)
        timeout = guard.handshake_timeout
        if guard.admit(key):
            self._guard_state = _ADMITTED
        elif guard.refusing < guard.refusing_max:
            self._guard_state = _REFUSED
            guard.refusing += 1
            guard.refused += 1
            self.app = _refuse_http
            timeout = min(timeout, REFUSAL_TIMEOUT)
        else:
            self._guard_state = _DROPPED
            guard.refused += 1
            cast(asyncio.Transport, transport).abort()
            return
        self._guard_timer = self.loop.call_later(timeout, self._guard_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        """Release what :meth:`connection_made` counted."""
        self._guard_end()
        super().connection_lost(exc)

    def _guard_end(self) -> None:
        timer = self._guard_timer
        if timer is not None:
            timer.cancel()
            self._guard_timer = None
        state = self._guard_state
        self._guard_state = _DROPPED
        if state == _ADMITTED:
            self.guard.release(self._guard_key)
        elif state == _REFUSED:
            self.guard.refusing -= 1

    def on_response_complete(self) -> None:
        """A response went out: the next request has a full deadline again."""
        super().on_response_complete()  # type: ignore[misc]
        if self._guard_state == _ADMITTED and not self.transport.is_closing():
            if self._guard_timer is not None:
                self._guard_timer.cancel()
            self._guard_timer = self.loop.call_later(self.guard.handshake_timeout, self._guard_expired)

    def _guard_expired(self) -> None:
        self._guard_timer = None
        cycle = self.cycle
        # no request yet (or none since the last response), or one whose body is still coming in
        if cycle is None or cycle.response_complete or cycle.more_body:
            self.guard.timed_out += 1
            self.transport.abort()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        """The upgrade request is complete: hand the connection (and its count) to the WebSocket protocol,
        or -- over a cap -- finish the handshake and close it with 1013."""
        timer = self._guard_timer
        if timer is not None:
            timer.cancel()
            self._guard_timer = None
        if self._guard_state == _ADMITTED:
            self._guard_state = _UPGRADED  # the WebSocket protocol releases the count (_GuardedWebSocket)
            super().handle_websocket_upgrade(*args)  # type: ignore[misc]
            return
        if self._guard_state != _REFUSED:
            return
        self.connections.discard(self)
        transport = self.transport
        if refuse_websocket(transport, self.headers):
            guard = self.guard
            self._guard_state = _DROPPED

            def done() -> None:
                guard.refusing -= 1

            transport.set_protocol(_Linger(transport, done))


class _GuardedWebSocket(asyncio.Protocol):
    """Mixed in front of the WebSocket protocol class: releases the connection's count when its socket closes."""

    __slots__ = ()
    guard: ConnectionGuard

    def connection_lost(self, exc: Exception | None) -> None:
        """The upgraded connection is gone."""
        super().connection_lost(exc)
        transport = getattr(self, "transport", None)
        self.guard.release(self.guard.key_of(transport) if transport is not None else None)


def guarded_protocols(
    http_class: type[asyncio.Protocol], ws_class: type[asyncio.Protocol], guard: ConnectionGuard
) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """Subclasses of uvicorn's HTTP and WebSocket protocol classes enforcing ``guard`` (``uvicorn.Config(http=...,
    ws=...)``). The WebSocket class adds no per-connection state (``__slots__ = ()`` where the base has slots)."""
    http = type(f"Guarded{http_class.__name__}", (_GuardedHTTP, http_class), {"guard": guard})
    ws_namespace: dict[str, Any] = {"guard": guard}
    if "__slots__" in vars(ws_class):
        ws_namespace["__slots__"] = ()
    ws = type(f"Guarded{ws_class.__name__}", (_GuardedWebSocket, ws_class), ws_namespace)
    return http, ws
