"""The node: hub + broker + authentication + channel rules. Applications talk to this object.

``Node.publish`` encodes a message once, the broker gives it an offset and fans it out to every node, and each
node's hub hands the same frame to its local subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
from starlette.requests import HTTPConnection

from tidings.auth import Authenticate, Authenticator, AuthError, Identity
from tidings.broker import (
    Broker,
    BrokerUnavailable,
    CountedPresence,
    Publication,
    ReapedConnection,
    ReapNotifier,
    create_broker,
)
from tidings.broker.base import presence_score
from tidings.channels import CONTROL_CHANNEL, ChannelRules, InvalidPublication, disconnect_command
from tidings.connection import Connection, ConnectionState, UserId, UserInfo
from tidings.errors import TidingsError
from tidings.hooks import ABNORMAL_CLOSE, ConnInfo, Hooks, StatusProvider
from tidings.hub import Hub
from tidings.messages import (
    ConnectionEstablished,
    ErrorCode,
    Ping,
    Pong,
    Presence,
    PresenceReply,
    PresenceUser,
    Publish,
    PublishAck,
    RequestStatus,
    StatusUpdate,
    Subscribe,
    SubscriptionConfirmed,
    SubscriptionError,
    Unsubscribe,
    Unsubscribed,
    event_body,
    publication_body,
)
from tidings.protocol import (
    ClientMessage,
    CloseCode,
    Frame,
    ProtocolError,
    error_reply,
    parse_client_message,
)
from tidings.rooms import RoomRegistry, UserLimits
from tidings.settings import Settings
from tidings.transport import Transport

__all__ = ["CONTROL_CHANNEL", "ConnectionRejected", "Node", "StatusProvider"]

logger = logging.getLogger("tidings.node")

#: Channels every connection is on, never left by an unsubscribe.
_CORE = ("broadcast", "admins")


class ConnectionRejected(TidingsError):
    """A connection that must be closed right after the handshake (code and reason for the client)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Node:
    """One Tidings process: owns the hub, talks to the broker, applies channel rules."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | None = None,
        authenticator: Authenticator | None = None,
        authenticate: Authenticate | None = None,
        rules: ChannelRules | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.broker: Broker = broker or create_broker(
            s.broker_url,
            prefix=s.broker_prefix,
            history_size=s.history_size,
            history_ttl=s.history_ttl,
            presence_ttl=s.presence_ttl,
            history_max_bytes=s.history_max_bytes,
            node_lease_ttl=s.node_lease_ttl,
            history_budget_bytes=s.history_budget_bytes,
            max_channels=s.max_channels,
            idempotency_ttl=s.idempotency_ttl,
            idempotency_max_keys=s.idempotency_max_keys,
        )
        self.authenticator = authenticator
        self.authenticate_hook = authenticate
        self.rules = rules or ChannelRules()
        if hasattr(self.broker, "history_limit"):  # namespaces with a history size of their own
            self.broker.history_limit = self.rules.history_size
        self.hooks = hooks or Hooks()
        self.node_id: str = str(getattr(self.broker, "node_id", "") or secrets.token_hex(6))
        self.hub = Hub()
        self._conn_meta: dict[str, tuple[ConnInfo, str | None]] = {}  # conn id -> (hook info, token id)
        self._drained = asyncio.Event()  # set when the last connection is forgotten
        self.rooms = RoomRegistry(s.max_rooms)
        self.user_limits = UserLimits(
            bytes_per_second=s.publish_bytes_per_second,
            burst_bytes=max(s.publish_burst_bytes, s.max_message_bytes),
            rooms_per_minute=s.room_create_per_minute,
        )
        self.started_at = time.time()
        self.messages_received = 0
        self.auth_failures: dict[str, int] = {}
        self.rejections: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self.running = False

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the broker and start the idle-connection sweeper."""
        if isinstance(self.broker, ReapNotifier):
            self.broker.on_reaped(self._on_reaped)
        await self.broker.start(self._on_publication)
        for channel in (*_CORE, CONTROL_CHANNEL):
            await self.broker.subscribe(channel)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())
        self.running = True

    async def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "Server shutting down") -> None:
        """Close every connection with ``code`` (1001: go to another node and recover), then the broker."""
        if not self.running:
            return
        self.running = False
        await self.close_connections(code, reason)
        if self.hub.connections and (self.hooks.on_disconnect or self.hooks.presence):
            # let the endpoints run disconnect (and its hooks) while the broker is still up
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 5)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.broker.close()

    async def close_connections(self, code: int = CloseCode.GOING_AWAY, reason: str = "Server shutting down") -> None:
        """Close every local connection and wait (bounded) for the close frames to go out."""
        conns = list(self.hub.connections.values())
        for conn in conns:
            conn.close(code, reason)
        if conns:
            await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns)), 10)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _sweep_idle(self) -> None:
        timeout = self.settings.idle_timeout
        period = max(0.05, min(timeout / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            deadline = time.monotonic() - timeout
            for conn in list(self.hub.connections.values()):
                if conn.last_activity < deadline:
                    conn.close(CloseCode.IDLE_TIMEOUT, "Idle timeout")
            self.user_limits.prune()

    def _on_publication(self, pub: Publication) -> None:
        """The broker's handler: node commands on :data:`CONTROL_CHANNEL`, everything else to the hub."""
        if pub.channel == CONTROL_CHANNEL:
            self._on_control(pub)
        else:
            self.hub.deliver(pub)

    # ---- publishing ------------------------------------------------------------------------------------
    async def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> Publication:
        """Publish ``data`` on ``channel``: subscribers get ``{"type": "publication", "channel", "data", ...}``.

        If the channel's namespace has a ``model``, ``data`` (a dict or a model instance) must satisfy it:
        :class:`~tidings.channels.InvalidPublication` (a ``ValueError`` naming the field) otherwise.
        With ``idempotency_key``, a repeat of the key on the channel within ``TIDINGS_IDEMPOTENCY_TTL`` (cluster-wide
        with Redis) delivers nothing and returns the original offset (``duplicate`` True): retry a publish whose
        outcome is unknown (a timeout) with the same key.
        """
        if self.rules.has_models:
            data = self.rules.validate(channel, data)
        return await self._publish(channel, data, idempotency_key)

    async def _publish(self, channel: str, data: Any, idempotency_key: str | None = None) -> Publication:
        body = publication_body(channel, data)
        return await self.broker.publish(channel, body, idempotency_key=idempotency_key)

    async def publish_event(
        self, channels: str | Iterable[str], event: dict[str, Any], *, idempotency_key: str | None = None
    ) -> list[Publication]:
        """Publish a typed event (its own ``type``) on one or more channels; adds ``channel`` to each copy.

        Published on several channels at once, each copy lists them all in ``copies`` and every connection
        receives one copy only: the one of the first listed channel it is subscribed to. ``idempotency_key``
        applies to each channel (see :meth:`publish`).
        """
        channels = [channels] if isinstance(channels, str) else list(channels)
        event = {"timestamp": time.time(), **event}
        event.pop("copies", None)
        copies = channels if len(channels) > 1 else None
        return [
            await self.broker.publish(ch, event_body(event, ch, copies), idempotency_key=idempotency_key)
            for ch in channels
        ]

    async def broadcast(self, message: str, category: str = "general", start_time: str | None = None) -> Publication:
        """Send a ``system_notification`` to every connected client on every node."""
        now = time.time()
        event = {
            "type": "system_notification",
            "category": category,
            "message": message,
            "start_time": start_time or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "timestamp": now,
        }
        return (await self.publish_event("broadcast", event))[0]

    async def notify_admins(self, message: str, category: str = "admin") -> Publication:
        """Send an ``admin_notification`` to administrators' connections only."""
        event = {"type": "admin_notification", "category": category, "message": message}
        return (await self.publish_event("admins", event))[0]

    async def send_to_user(self, user_id: UserId, event: dict[str, Any]) -> Publication:
        """Send a typed event to every connection of one user (on any node)."""
        return (await self.publish_event(f"user:{user_id}", event))[0]

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """Users present on ``channel`` across the cluster."""
        return await self.broker.presence(channel)

    async def presence_page(self, channel: str, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of ``channel``'s members: ``{"users", "count", "cursor"}`` (cursor None on the last page)."""
        limit = max(1, min(limit, 1000))
        if isinstance(self.broker, CountedPresence):
            page = await self.broker.presence_page(channel, after, limit)
            return {"users": page.users, "count": page.count, "cursor": page.cursor}
        users = sorted(await self.broker.presence(channel), key=lambda u: presence_score(u["user_id"]))
        rest = [u for u in users if presence_score(u["user_id"]) > after]
        cursor = presence_score(rest[limit - 1]["user_id"]) if len(rest) > limit else None
        return {"users": rest[:limit], "count": len(users), "cursor": cursor}

    async def stats(self) -> dict[str, int]:
        """Cluster totals of users and connections."""
        return await self.broker.stats()

    # ---- revocation ------------------------------------------------------------------------------------
    async def disconnect_user(
        self, user_id: UserId, code: int, reason: str, *, token_id: str | None = None
    ) -> None:
        """Close every connection of ``user_id`` on every node with ``code`` and ``reason`` (only those opened
        with token ``token_id`` if given). This node's close at once; the others' through the broker."""
        self._close_user(user_id, code, reason, token_id)
        await self.broker.publish(CONTROL_CHANNEL, disconnect_command(self.node_id, user_id, code, reason, token_id))

    def _close_user(self, user_id: UserId, code: int, reason: str, token_id: str | None) -> int:
        closed = 0
        for conn in list(self.hub.by_user.get(user_id, {}).values()):
            if token_id is not None and self._conn_meta.get(conn.id, (None, None))[1] != token_id:
                continue
            conn.close(code, reason)
            closed += 1
        return closed

    def _on_control(self, pub: Publication) -> None:
        try:
            command = orjson.loads(pub.frame.payload)
            if command.get("type") == "disconnect" and command.get("node") != self.node_id:
                user_id = command["user_id"]
                token_id = command.get("token_id")
                self._close_user(user_id, int(command["code"]), str(command["reason"]), token_id)
        except Exception:
            logger.warning("ignored a malformed node command on %s", CONTROL_CHANNEL)

    # ---- connections -----------------------------------------------------------------------------------
    async def authenticate_handshake(self, scope: MutableMapping[str, Any], token: str | None) -> Identity:
        """Who a WebSocket handshake is: the host's ``authenticate`` (given the handshake as an
        ``HTTPConnection``) or the built-in token check; :class:`ConnectionRejected` (1008) otherwise."""
        if self.authenticate_hook is None:
            return await self._token_identity(token)
        try:
            user = await self.authenticate_hook(HTTPConnection(scope))
        except AuthError as exc:
            raise self._auth_failed(exc.reason) from None
        except Exception:
            logger.exception("the host's authenticate failed")
            raise ConnectionRejected(CloseCode.INTERNAL_ERROR, "Authentication failed") from None
        if user is None:
            raise self._auth_failed("Authentication required")
        return Identity(user)

    async def authenticate_request(self, conn: HTTPConnection, token: str | None) -> UserInfo:
        """Who a REST request is (host ``authenticate``, else the bearer ``token``); :class:`AuthError` if nobody."""
        if self.authenticate_hook is not None:
            user = await self.authenticate_hook(conn)
            if user is None:
                raise AuthError("Not authenticated")
            return user
        if not token:
            raise AuthError("Not authenticated")
        if self.authenticator is None:
            raise AuthError("Authentication is not configured")
        verify = getattr(self.authenticator, "verify", None)
        if verify is not None:
            return (await verify(token, cached=True)).user  # type: ignore[no-any-return]
        return (await self.authenticator.authenticate(token))[0]

    def _auth_failed(self, reason: str) -> ConnectionRejected:
        self.auth_failures[reason] = self.auth_failures.get(reason, 0) + 1
        return ConnectionRejected(CloseCode.POLICY_VIOLATION, reason)

    async def _token_identity(self, token: str | None) -> Identity:
        try:
            if not token:
                raise AuthError("Authentication required")
            if self.authenticator is None:
                raise AuthError("Authentication is not configured")
            verify = getattr(self.authenticator, "verify", None)
            if verify is not None:
                return await verify(token)  # type: ignore[no-any-return]
            user, expires_at = await self.authenticator.authenticate(token)
            return Identity(user, expires_at)
        except AuthError as exc:
            raise self._auth_failed(exc.reason) from None

    async def authenticate(self, token: str | None) -> tuple[UserInfo, float]:
        """Resolve a bearer token to a user, or raise :class:`ConnectionRejected` (1008)."""
        try:
            if not token:
                raise AuthError("Authentication required")
            if self.authenticator is None:
                raise AuthError("Authentication is not configured")
            return await self.authenticator.authenticate(token)
        except AuthError as exc:
            self.auth_failures[exc.reason] = self.auth_failures.get(exc.reason, 0) + 1
            raise ConnectionRejected(CloseCode.POLICY_VIOLATION, exc.reason) from None

    def reject(self, reason: str) -> ConnectionRejected:
        """Count and build a 1008 rejection."""
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        return ConnectionRejected(CloseCode.POLICY_VIOLATION, reason)

    def is_admin(self, user: UserInfo) -> bool:
        """Whether ``user`` is an administrator (``role == "admin"`` unless the host passed a predicate)."""
        return self.rules.is_admin(user)

    def add_status_provider(self, provider: StatusProvider) -> StatusProvider:
        """Merge ``await provider(user)`` into every ``status_update`` (returns ``provider``: usable as a decorator)."""
        self.hooks.status_providers.append(provider)
        return provider

    async def connect(
        self,
        user: UserInfo,
        transport: Transport,
        expires_at: float | None = None,
        *,
        token_id: str | None = None,
        client: str | None = None,
    ) -> Connection:
        """Register a new connection of ``user``; enforce the per-user limit across the cluster."""
        s = self.settings
        conn = Connection(
            user,
            transport,
            queue_max=s.send_queue_max,
            rate=s.rate_limit_per_second,
            rate_burst=s.rate_limit_burst,
            on_slow=self._count_slow,
        )
        count = await self.broker.connection_add(user.id, conn.id, user.public())  # info: reported if this node dies
        if count > s.max_connections_per_user:
            await self.broker.connection_remove(user.id, conn.id)
            raise self.reject("Too many connections")
        self.hub.add(conn)
        info = ConnInfo(f"{self.node_id}.{conn.id}", self.node_id, time.time(), client)
        self._conn_meta[conn.id] = (info, token_id)
        channels = ["broadcast", f"user:{user.id}"]
        if self.rules.is_admin(user):
            channels.append("admins")
        welcome = ConnectionEstablished(user_id=user.id, username=user.username, role=user.role, channels=channels)
        conn.enqueue(Frame.of_message(welcome))
        for channel in channels:
            await self._subscribe(conn, channel, position=False)
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            self._expiry[conn.id] = asyncio.get_running_loop().call_later(
                delay, conn.close, CloseCode.TOKEN_EXPIRED, "Token expired"
            )
        if self.hooks.on_connect:
            await self.hooks.fire(self.hooks.on_connect, user, info)
        return conn

    def _count_slow(self, conn: Connection) -> None:
        self.hub.slow_consumers += 1

    async def disconnect(self, conn: Connection) -> None:
        """Forget a connection: subscriptions, presence, counts."""
        if conn.state is ConnectionState.OPEN:
            conn.mark_closed()
        timer = self._expiry.pop(conn.id, None)
        if timer is not None:
            timer.cancel()
        subscribed = list(conn.subscriptions)
        emptied = self.hub.remove(conn)
        meta = self._conn_meta.pop(conn.id, None)
        try:
            for channel in subscribed:
                if channel not in ("broadcast", "admins", f"user:{conn.user.id}"):
                    await self._leave_presence(conn, channel)
            for channel in emptied:
                if channel not in ("broadcast", "admins"):
                    await self.broker.unsubscribe(channel)
            await self.broker.connection_remove(conn.user.id, conn.id)
        except BrokerUnavailable:
            logger.warning("broker unavailable while removing %s; entries will expire", conn)
        if meta is not None and self.hooks.on_disconnect:
            code = conn.close_code if conn.close_code is not None else ABNORMAL_CLOSE
            await self.hooks.fire(self.hooks.on_disconnect, conn.user, meta[0], int(code))
        if not self.hub.connections:
            self._drained.set()

    async def _subscribe(
        self, conn: Connection, channel: str, since: tuple[int, str] | None = None, *, position: bool = True
    ) -> dict[str, Any]:
        """Subscribe (with recovery when ``since`` is given); returns the confirmation's position fields."""
        first = self.hub.subscribe(conn, channel, recovering=since is not None)
        try:
            if first:
                await self.broker.subscribe(channel)
            if since is None:
                if not position:
                    return {}
                offset, epoch = await self.broker.position(channel)
                return {"offset": offset, "epoch": epoch}
            result = await self.broker.recover(channel, since[0], since[1])
        except BaseException:
            if self.hub.unsubscribe(conn, channel):
                with contextlib.suppress(Exception):
                    await self.broker.unsubscribe(channel)
            raise
        start = since[0] if result.epoch == since[1] else 0
        last = self.hub.finish_recovery(conn, channel, result.publications, start)
        return {"offset": max(last, result.offset), "epoch": result.epoch, "recovered": result.recovered}

    def _presence_events(self, channel: str, members: int) -> bool:
        """join/leave events are published for channels whose policy wants them, up to a room size (setting)."""
        limit = self.settings.presence_events_max_members
        return self.rules.presence_events(channel) and 0 <= members <= limit

    async def _join_presence(self, conn: Connection, channel: str) -> None:
        if isinstance(self.broker, CountedPresence):
            new_user, members = await self.broker.presence_join(channel, conn.id, conn.user.public())
        else:
            new_user, members = await self.broker.presence_add(channel, conn.id, conn.user.public()), 0
        if new_user and self._presence_events(channel, members):
            await self.publish_event(channel, {"type": "join", "user": conn.user.public()})
            if self.hooks.on_join:
                await self.hooks.fire(self.hooks.on_join, conn.user, channel)

    async def _leave_presence(self, conn: Connection, channel: str) -> None:
        if isinstance(self.broker, CountedPresence):
            gone, members = await self.broker.presence_leave(channel, conn.id, conn.user.id)
        else:
            gone, members = await self.broker.presence_remove(channel, conn.id, conn.user.id), 0
        if gone and self._presence_events(channel, members):
            await self.publish_event(channel, {"type": "leave", "user": conn.user.public()})
            if self.hooks.on_leave:
                await self.hooks.fire(self.hooks.on_leave, conn.user, channel)

    async def _on_reaped(self, reaped: list[ReapedConnection]) -> None:
        """A dead node's connections, handed to this node once (cluster-wide): publish the leaves due and fire
        ``on_leave`` / ``on_disconnect`` (code 1006) for them, once in the cluster."""
        for dead in reaped:
            user = UserInfo(
                id=dead.info.get("user_id", dead.user_id),
                username=str(dead.info.get("username", "")),
                role=str(dead.info.get("role", "user")),
            )
            for channel in dead.left:
                if self.rules.presence_events(channel):
                    with contextlib.suppress(BrokerUnavailable):
                        await self.publish_event(channel, {"type": "leave", "user": dead.info})
                    if self.hooks.on_leave:
                        await self.hooks.fire(self.hooks.on_leave, user, channel)
            if self.hooks.on_disconnect:
                info = ConnInfo(f"{dead.node_id}.{dead.conn_id}", dead.node_id, 0.0)
                await self.hooks.fire(self.hooks.on_disconnect, user, info, ABNORMAL_CLOSE)

    # ---- inbound messages ------------------------------------------------------------------------------
    async def handle(self, conn: Connection, text: str) -> None:
        """Serve one inbound text frame; every problem becomes an error reply, never an exception."""
        self.messages_received += 1
        try:
            msg = parse_client_message(text)
        except ProtocolError as exc:
            if conn.allow_message():
                conn.enqueue(Frame.of_message(error_reply(exc.code, exc.message, exc.msg_id, exc.field)))
            else:
                self._rate_limited(conn, exc.msg_id)
            return
        if not conn.allow_message():
            self._rate_limited(conn, msg.id)
            return
        try:
            await self._dispatch(conn, msg)
            return
        except ProtocolError as exc:
            reply = error_reply(exc.code, exc.message, exc.msg_id, exc.field)
        except BrokerUnavailable:
            reply = error_reply(ErrorCode.UNAVAILABLE, "Broker unavailable; try again shortly", msg.id)
        except orjson.JSONEncodeError as exc:  # client data the encoder refuses (nested too deep): one line, no trace
            logger.warning("refused a message from %s: data cannot be encoded (%s)", conn, exc)
            reply = error_reply(ErrorCode.BAD_REQUEST, f"Data cannot be encoded as JSON: {exc}", msg.id)
        except Exception:
            logger.exception("error serving a message from %s", conn)
            reply = error_reply(ErrorCode.BAD_REQUEST, "Internal error serving this message", msg.id)
        conn.enqueue(Frame.of_message(reply))

    def _rate_limited(self, conn: Connection, msg_id: Any) -> None:
        """Refuse one message over the rate limit; close with 4002 a client that keeps flooding."""
        if conn.rate_strikes > conn.rate_burst:
            conn.close(CloseCode.RATE_LIMITED, "Rate limit exceeded")
            return
        conn.enqueue(Frame.of_message(error_reply(ErrorCode.RATE_LIMITED, "Too many messages; slow down", msg_id)))

    async def _dispatch(self, conn: Connection, msg: ClientMessage) -> None:
        reply: Any
        joined: str | None = None
        match msg:
            case Ping():
                reply = Pong(timestamp=time.time(), id=msg.id)
            case Subscribe():
                reply = await self._on_subscribe(conn, msg)
                if isinstance(reply, SubscriptionConfirmed) and reply.epoch is not None:
                    joined = msg.subscription
            case Unsubscribe():
                reply = await self._on_unsubscribe(conn, msg)
            case Publish():
                reply = await self._on_publish(conn, msg)
            case Presence():
                reply = await self._on_presence(conn, msg)
            case RequestStatus():
                reply = await self._status(conn.user, msg.id)
        conn.enqueue(Frame.of_message(reply))
        if joined is not None:
            await self._join_presence(conn, joined)
        if isinstance(reply, SubscriptionConfirmed) and self.hooks.on_subscribe:
            meta = self._conn_meta.get(conn.id)
            if meta is not None:
                await self.hooks.fire(self.hooks.on_subscribe, conn.user, meta[0], reply.subscription)

    async def _on_subscribe(self, conn: Connection, msg: Subscribe) -> SubscriptionConfirmed | SubscriptionError:
        channel = msg.subscription
        policy = self.rules.policy(channel)
        if policy is None or not await self.rules.may_subscribe(conn.user, channel):
            code = ErrorCode.INVALID_SUBSCRIPTION if policy is None else ErrorCode.FORBIDDEN
            return SubscriptionError(
                subscription=channel, code=code, message=f"Invalid subscription: {channel}", id=msg.id
            )
        if policy.client_publish:
            refused = self._admit_room(conn.user, channel)
            if refused is not None:
                return SubscriptionError(subscription=channel, code=refused.code, message=refused.message, id=msg.id)
        if policy.own_events_alias and not self.rules.is_admin(conn.user):
            return SubscriptionConfirmed(subscription=channel, scope=f"user:{conn.user.id}", id=msg.id)
        since = (msg.since.offset, msg.since.epoch) if msg.since is not None else None
        if channel in conn.subscriptions:
            if since is None:
                offset, epoch = await self.broker.position(channel)
                return SubscriptionConfirmed(subscription=channel, offset=offset, epoch=epoch, id=msg.id)
            self.hub.unsubscribe(conn, channel)  # resubscribe below, with recovery
        elif len(conn.subscriptions) >= self.settings.max_subscriptions:
            return SubscriptionError(
                subscription=channel,
                code=ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                message=f"Too many subscriptions (limit {self.settings.max_subscriptions})",
                id=msg.id,
            )
        position = await self._subscribe(conn, channel, since)
        return SubscriptionConfirmed(subscription=channel, id=msg.id, **position)

    async def _on_unsubscribe(self, conn: Connection, msg: Unsubscribe) -> Unsubscribed:
        channel = msg.subscription
        if channel not in conn.subscriptions or channel in ("broadcast", "admins", f"user:{conn.user.id}"):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"Not subscribed: {channel}", msg.id)
        await self._leave_presence(conn, channel)
        if self.hub.unsubscribe(conn, channel):
            await self.broker.unsubscribe(channel)
        return Unsubscribed(subscription=channel, id=msg.id)

    async def _on_publish(self, conn: Connection, msg: Publish) -> PublishAck:
        channel = msg.channel
        if not await self.rules.may_publish(conn.user, channel):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"Publishing to {channel} is not allowed", msg.id)
        try:
            validated = self.rules.validate(channel, msg.data)
        except InvalidPublication as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc), msg.id) from None
        refused = self._admit_room(conn.user, channel, msg.id)
        if refused is not None:
            raise refused
        data = {"user": conn.user.public(), "body": validated}
        body = publication_body(channel, data)
        if not self.user_limits.allow_bytes(conn.user.id, len(body)):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "Publish byte rate exceeded; slow down", msg.id)
        pub = await self.broker.publish(channel, body)
        return PublishAck(channel=channel, offset=pub.offset, epoch=pub.epoch, id=msg.id)

    def _admit_room(self, user: UserInfo, channel: str, msg_id: Any = None) -> ProtocolError | None:
        """Let ``user`` use the chat room ``channel``, creating it if this node does not know it yet.

        Creating follows ``room_creators`` and the user's ``room_create_per_minute``; at ``max_rooms`` the least
        recently used room without local subscribers is forgotten (with its history), or, when every room has
        some, creation is refused. Returns the refusal, or None.
        """
        if self.rooms.touch(channel):
            return None
        s = self.settings
        if s.room_creators == "admin" and not user.is_admin:
            return ProtocolError(ErrorCode.FORBIDDEN, f"Only administrators may create rooms ({channel})", msg_id)
        victim = None
        if self.rooms.full():
            victim = self.rooms.evictable(lambda room: room in self.hub.subscribers)
            if victim is None:
                return ProtocolError(ErrorCode.UNAVAILABLE, f"Too many rooms (limit {s.max_rooms})", msg_id)
        if not user.is_admin and not self.user_limits.allow_room(user.id):
            limit = s.room_create_per_minute
            return ProtocolError(ErrorCode.RATE_LIMITED, f"Too many new rooms (limit {limit} a minute)", msg_id)
        if victim is not None:
            self.rooms.discard(victim)
            forget = getattr(self.broker, "forget", None)
            if forget is not None:
                forget(victim)
        self.rooms.add(channel)
        return None

    async def _on_presence(self, conn: Connection, msg: Presence) -> PresenceReply:
        channel = msg.subscription
        if self.rules.policy(channel) is None or not await self.rules.may_subscribe(conn.user, channel):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"Presence of {channel} is not available", msg.id)
        page = await self.presence_page(channel, msg.cursor or 0, msg.limit or 1000)
        users = [PresenceUser.model_validate(u) for u in page["users"]]
        return PresenceReply(
            subscription=channel, users=users, count=page["count"], cursor=page["cursor"], id=msg.id
        )

    async def _status(self, user: UserInfo, msg_id: str | int | None = None) -> StatusUpdate:
        stats = await self.stats()
        status: dict[str, Any] = {}
        if self.hooks.status_providers:
            status.update(await self.hooks.status(user))
        status.update(
            {
                "server_time": time.time(),
                "user_connections": stats["connections"],
                "users": stats["users"],
                "my_connections": self.hub.user_connection_count(user.id),
            }
        )
        status.pop("type", None)
        return StatusUpdate(**status, id=msg_id)
