"""The Redis broker: several Tidings processes share history, fan-out, presence and connection counts.

* **Publishing** runs one Lua script (``EVALSHA``): next offset, history append (a stream with ids
  ``<offset>-0``), ``PUBLISH`` of the final JSON bytes. Offsets are therefore ordered and gap-free, and every
  node wraps the bytes it receives in a :class:`~tidings.protocol.Frame` without decoding them.
* **Fan-out**: one dedicated connection per node ``SUBSCRIBE``-s to the channels the node wants. A reader task
  feeds the node's handler in order. It remembers the last offset delivered per channel, so after a reconnect it
  first replays from history what it missed (same epoch) and then drops duplicates.
* **Resilience**: when the connection drops the reader logs once, counts a disconnect, marks the broker
  unhealthy and retries with capped exponential backoff; once back it resubscribes, re-registers this node's
  presence and connection entries, replays missed publications, logs once and counts a reconnect. Local
  connections keep being served meanwhile; publishing raises :class:`BrokerUnavailable`.
* **Cluster registry**: presence and per-user connections carry the node id; a node is alive while its heartbeat
  (every ``presence_ttl / 3`` seconds) keeps its expiry in the future, so a killed node's entries vanish on their
  own. See :mod:`tidings.broker.redis_scripts` for the key layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from tidings.broker import redis_scripts as lua
from tidings.broker.base import BrokerUnavailable, HistoryResult, Publication, PublicationHandler
from tidings.protocol import Frame

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = ["RedisBroker", "redact_url"]

logger = logging.getLogger("tidings.broker.redis")

T = TypeVar("T")

#: Errors that mean "Redis cannot be reached" (as opposed to a bug in a command).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and ``/healthz``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + netloc, parts.path, parts.query, parts.fragment))


def new_epoch() -> str:
    """A fresh epoch name (used only when a channel's metadata is created)."""
    return secrets.token_hex(4)


class RedisBroker:
    """A :class:`~tidings.broker.base.Broker` backed by Redis (``redis://``, ``rediss://``, ``unix://``).

    Keyword-only options and their defaults:

    * ``prefix="tidings"`` — prefix of every key and pub/sub channel (``TIDINGS_BROKER_PREFIX``);
    * ``history_size=1000`` — publications kept per channel (stream ``MAXLEN``; 0 keeps none);
    * ``history_ttl=86400`` — seconds a channel's history and offset counter live after its last publish;
    * ``presence_ttl=30`` — seconds after which a silent node's presence and connection entries expire;
    * ``reconnect_delay=0.2`` / ``reconnect_max_delay=5.0`` — first and largest pause between reconnect attempts;
    * ``command_timeout=5.0`` — socket timeout of ordinary commands.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tidings",
        history_size: int = 1000,
        history_ttl: int = 86400,
        presence_ttl: int = 30,
        reconnect_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
        command_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.history_size = history_size
        #: ``channel -> size`` (None: ``history_size``): a namespace's own history size, set by the node
        self.history_limit: Callable[[str], int | None] | None = None
        self.history_ttl = history_ttl
        self.presence_ttl = presence_ttl
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.node_id = secrets.token_hex(6)
        self.keys = lua.Keys(prefix)
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=command_timeout,
            socket_connect_timeout=min(command_timeout, 2.0),
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
            protocol=2,
        )
        self._publish = self.client.register_script(lua.PUBLISH)
        self._recover = self.client.register_script(lua.RECOVER)
        self._heartbeat = self.client.register_script(lua.HEARTBEAT)
        self._node_leave = self.client.register_script(lua.NODE_LEAVE)
        self._conn_add = self.client.register_script(lua.CONNECTION_ADD)
        self._conn_remove = self.client.register_script(lua.CONNECTION_REMOVE)
        self._stats = self.client.register_script(lua.STATS)
        self._pres_add = self.client.register_script(lua.PRESENCE_ADD)
        self._pres_remove = self.client.register_script(lua.PRESENCE_REMOVE)
        self._pres_get = self.client.register_script(lua.PRESENCE_GET)
        self._handler: PublicationHandler | None = None
        # Channels this node wants, by their pub/sub key; and the pub/sub key -> channel map for the reader.
        self._channels: dict[bytes, str] = {}
        self._pending_subs: dict[bytes, list[asyncio.Future[None]]] = {}
        self._markers: dict[bytes, asyncio.Future[None]] = {}
        self._control = f"{prefix}:control:{self.node_id}".encode()
        self._last: dict[str, tuple[str, int]] = {}  # channel -> (epoch, offset) last delivered
        # This node's registrations, replayed after a reconnect (Redis may have lost them).
        self._local_conns: dict[str, UserId] = {}  # conn_id -> user_id
        self._local_presence: dict[str, dict[str, str]] = {}  # channel -> conn_id -> entry value
        self._stale_presence: set[tuple[str, str]] = set()  # (channel, conn_id) to delete once Redis is back
        self._stale_conns: dict[str, UserId] = {}  # conn_id -> user_id to delete once Redis is back
        self._sub: AbstractConnection | None = None
        self._connected = False
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Event | None = None
        self._lost_at: float | None = None
        self._pong_pending = 0
        self.reconnects = 0
        self.disconnects = 0
        self.last_error = ""
        self.down_since: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """True while the pub/sub connection is up (and heartbeats succeed)."""
        return self._connected

    async def start(self, handler: PublicationHandler) -> None:
        """Start the reader and heartbeat tasks; waits for the first connection attempt (success or not)."""
        self._handler = handler
        self._closing = False
        self._first_attempt = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._run(), name="tidings-redis-reader")
        self._beater = loop.create_task(self._beat(), name="tidings-redis-heartbeat")
        await self._first_attempt.wait()

    async def close(self) -> None:
        """Stop the tasks, remove this node's presence and connection entries, release connections."""
        self._closing = True
        for task in (self._beater, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._beater = self._reader = None
        try:
            if not self._connected:
                raise RedisConnectionError("not connected")
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, entries in self._local_presence.items():
                    if entries:
                        pipe.hdel(self.keys.pres(channel), *entries)
                await pipe.execute()
            await self._node_leave(args=[self.prefix, self.node_id])
        except CONNECTION_ERRORS as exc:
            logger.warning("could not remove this node's entries from Redis (%s); they will expire", exc)
        self._local_presence.clear()
        self._local_conns.clear()
        self._handler = None
        await self._drop_sub()
        self._connected = False
        await self.client.aclose()

    # ---- publishing and history ------------------------------------------------------------------------
    async def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        try:
            return await func()
        except CONNECTION_ERRORS as exc:
            self.last_error = str(exc) or type(exc).__name__
            raise BrokerUnavailable(f"Redis unavailable: {self.last_error}") from exc

    async def publish(self, channel: str, body: bytes) -> Publication:
        """Run the publish script: offset, history, ``PUBLISH`` of the final bytes, atomically."""
        head = lua.body_head(body)
        size = None if self.history_limit is None else self.history_limit(channel)
        size = self.history_size if size is None else size
        args: list[EncodableT] = [head, new_epoch(), size, self.history_ttl, self.keys.pub(channel)]
        keys = [self.keys.meta(channel), self.keys.hist(channel)]
        offset, epoch = await self._call(lambda: self._publish(keys=keys, args=args))
        payload = b'%s"offset":%d,"epoch":"%s"}' % (head, offset, epoch)
        return Publication(channel, int(offset), epoch.decode(), Frame(payload))

    async def position(self, channel: str) -> tuple[int, str]:
        """The channel's latest offset and epoch (creates the channel's metadata, and epoch, if missing).

        Returns once this node's reader has delivered every publication up to that offset, so a subscriber
        confirmed at offset N receives exactly the publications after N.
        """
        offset, epoch, _ = await self._history(channel, -1, "", sync=True)
        return offset, epoch

    async def _history(
        self, channel: str, since: int, since_epoch: str, *, sync: bool = False
    ) -> tuple[int, str, list[Publication]]:
        """Run the recover script; with ``sync``, wait for its marker to come through the pub/sub stream."""
        keys = [self.keys.meta(channel), self.keys.hist(channel)]
        marker = b""
        future: asyncio.Future[None] | None = None
        if sync and self._connected and self.keys.pub(channel).encode() in self._channels:
            marker = secrets.token_hex(8).encode()
            future = self._markers[marker] = asyncio.get_running_loop().create_future()
        args: list[EncodableT] = [
            new_epoch(),
            self.history_ttl,
            since,
            since_epoch,
            self._control if future else "",
            marker,
        ]
        try:
            offset, epoch_b, entries = await self._call(lambda: self._recover(keys=keys, args=args))
            if future is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, 5.0)
        finally:
            if future is not None:
                self._markers.pop(marker, None)
        epoch = epoch_b.decode()
        return int(offset), epoch, self._publications(channel, epoch, entries)

    @staticmethod
    def _publications(channel: str, epoch: str, entries: list[Any]) -> list[Publication]:
        """Stream entries (``[b"<offset>-0", [b"p", payload]]``) as publications."""
        pubs = []
        for entry_id, fields in entries:
            payload = fields[fields.index(b"p") + 1]
            pubs.append(Publication(channel, int(entry_id.split(b"-", 1)[0]), epoch, Frame(payload)))
        return pubs

    async def recover(self, channel: str, since_offset: int, since_epoch: str) -> HistoryResult:
        """Publications after ``since_offset``; ``recovered`` only if history reaches back and the epoch matches."""
        offset, epoch, pubs = await self._history(channel, since_offset, since_epoch, sync=True)
        if epoch != since_epoch:
            return HistoryResult([], offset, epoch, recovered=False)
        complete = since_offset >= offset or (bool(pubs) and pubs[0].offset == since_offset + 1)
        return HistoryResult(pubs, offset, epoch, recovered=complete)

    # ---- subscriptions ---------------------------------------------------------------------------------
    async def subscribe(self, channel: str) -> None:
        """Receive the channel's publications; returns once Redis confirmed (or at once while disconnected)."""
        key = self.keys.pub(channel).encode()
        self._channels[key] = channel
        sub = self._sub
        if sub is None or not self._connected:
            return  # subscribed by the reader when the connection comes back
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_subs.setdefault(key, []).append(future)
        try:
            await sub.send_command("SUBSCRIBE", key)
            await asyncio.wait_for(future, 5.0)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError):
            pass  # the reader reconnects and resubscribes every wanted channel
        finally:
            waiting = self._pending_subs.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._pending_subs[key]

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications."""
        key = self.keys.pub(channel).encode()
        self._channels.pop(key, None)
        self._last.pop(channel, None)
        sub = self._sub
        if sub is not None and self._connected:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await sub.send_command("UNSUBSCRIBE", key)

    # ---- the reader --------------------------------------------------------------------------------------
    async def _drop_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.disconnect(nowait=True)

    async def _run(self) -> None:
        """Connect, subscribe, read; on failure back off (capped, with jitter) and do it again, until closed."""
        attempt = 0
        while not self._closing:
            try:
                await self._connect_and_read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc) or type(exc).__name__
                await self._drop_sub()
                self._release_pending()
                if not isinstance(exc, CONNECTION_ERRORS):
                    logger.exception("Redis broker reader failed")
                if self._connected:
                    self._connected = False
                    self.disconnects += 1
                    self._lost_at = time.monotonic()
                    self.down_since = time.time()
                    attempt = 0
                    logger.warning("Redis broker connection lost (%s); reconnecting with backoff", self.last_error)
                elif self._lost_at is None:
                    self._lost_at = time.monotonic()
                    self.down_since = time.time()
                    logger.warning("Redis broker unreachable (%s); retrying with backoff", self.last_error)
                else:
                    logger.debug("Redis reconnect attempt %d failed: %s", attempt, self.last_error)
                if self._first_attempt is not None:
                    self._first_attempt.set()
                delay = min(self.reconnect_max_delay, self.reconnect_delay * 2**attempt)
                attempt += 1
                await asyncio.sleep(delay * (0.5 + random.random() / 2))

    def _release_pending(self) -> None:
        """Let :meth:`subscribe` calls waiting for a confirmation return (the reconnect will subscribe)."""
        for waiting in self._pending_subs.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._pending_subs.clear()
        for future in self._markers.values():
            if not future.done():
                future.set_result(None)

    async def _connect_and_read(self) -> None:
        sub = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._sub = sub
        await sub.connect()
        await sub.send_command("CLIENT", "SETNAME", f"tidings-sub:{self.prefix}:{self.node_id}")
        await sub.read_response()
        wanted = list(self._channels)
        await sub.send_command("SUBSCRIBE", self._control, *wanted)
        # Wait for every confirmation so that a replay from history cannot leave a gap before live messages.
        early: list[list[bytes]] = []
        confirmed = 0
        while confirmed < len(wanted) + 1:
            msg = await sub.read_response(timeout=math.inf, disconnect_on_error=False)
            if msg[0] == b"subscribe":
                confirmed += 1
                self._resolve(msg[1])
            elif msg[0] == b"message":
                early.append(msg)
        await self._register()
        await self._replay()
        if self._lost_at is not None:
            self.reconnects += 1
            logger.warning(
                "Redis broker reconnected after %.1fs: %d channels resubscribed, node entries re-registered",
                time.monotonic() - self._lost_at,
                len(wanted),
            )
            self._lost_at = None
        else:
            logger.info("Redis broker connected to %s (node %s)", redact_url(self.url), self.node_id)
        self._pong_pending = 0
        self.down_since = None
        self._connected = True
        if self._first_attempt is not None:
            self._first_attempt.set()
        # Channels wanted (or dropped) while this connection was being set up.
        extra = [key for key in self._channels if key not in set(wanted)]
        dropped = [key for key in wanted if key not in self._channels]
        if extra:
            await sub.send_command("SUBSCRIBE", *extra)
        if dropped:
            await sub.send_command("UNSUBSCRIBE", *dropped)
        for msg in early:
            self._on_message(msg[1], msg[2])
        while True:
            msg = await sub.read_response(timeout=math.inf, disconnect_on_error=False)
            kind = msg[0]
            if kind == b"message":
                if msg[1] == self._control:
                    marker = self._markers.get(msg[2])
                    if marker is not None and not marker.done():
                        marker.set_result(None)
                else:
                    self._on_message(msg[1], msg[2])
            elif kind == b"subscribe":
                self._resolve(msg[1])
            elif kind == b"pong":
                self._pong_pending = 0

    def _resolve(self, key: bytes) -> None:
        for future in self._pending_subs.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def _on_message(self, key: bytes, payload: bytes) -> None:
        channel = self._channels.get(key)
        if channel is None or self._handler is None:
            return
        try:
            offset, epoch = lua.parse_position(payload)
        except ValueError:
            logger.warning("ignoring a malformed message on %s (not from a Tidings publisher)", channel)
            return
        last = self._last.get(channel)
        if last is not None and last[0] == epoch and offset <= last[1]:
            return  # already delivered (replayed from history after a reconnect)
        self._last[channel] = (epoch, offset)
        try:
            self._handler(Publication(channel, offset, epoch, Frame(payload)))
        except Exception:
            logger.exception("publication handler failed on %s", channel)

    async def _replay(self) -> None:
        """After a reconnect: deliver what each channel published while this node was not listening.

        One pipelined recover script per channel (in batches), so a node with thousands of channels catches up
        in a few round trips.
        """
        items = list(self._last.items())
        for start in range(0, len(items), 500):
            batch = items[start : start + 500]
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, (epoch, offset) in batch:
                    keys = [self.keys.meta(channel), self.keys.hist(channel)]
                    args: list[EncodableT] = [new_epoch(), self.history_ttl, offset, epoch, "", b""]
                    await self._recover(keys=keys, args=args, client=pipe)
                replies = await pipe.execute()
            for (channel, (epoch, _)), (_, current_b, entries) in zip(batch, replies, strict=True):
                current = current_b.decode()
                if current != epoch:
                    # History was lost (Redis restarted empty, or the TTL passed): all of the new epoch is new.
                    _, _, pubs = await self._history(channel, 0, current)
                else:
                    pubs = self._publications(channel, current, entries)
                key = self.keys.pub(channel).encode()
                for pub in pubs:
                    self._on_message(key, pub.frame.payload)

    # ---- heartbeat and registrations ------------------------------------------------------------------------
    async def _register(self) -> None:
        """(Re-)register this node, its connections and presence entries; flush removals made while down."""
        ttl_ms = self.presence_ttl * 1000
        await self._heartbeat(args=[self.prefix, self.node_id, ttl_ms])
        for conn_id, user_id in list(self._stale_conns.items()):
            await self._conn_remove(args=[self.prefix, self.node_id, user_id, conn_id])
            self._stale_conns.pop(conn_id, None)
        for conn_id, user_id in list(self._local_conns.items()):
            await self._conn_add(args=[self.prefix, self.node_id, user_id, conn_id])
        for channel, conn_id in list(self._stale_presence):
            await self.client.hdel(self.keys.pres(channel), conn_id)
            self._stale_presence.discard((channel, conn_id))
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, entries in self._local_presence.items():
                if entries:
                    pipe.hset(self.keys.pres(channel), mapping=cast(Mapping[EncodableT, EncodableT], entries))
                    pipe.pexpire(self.keys.pres(channel), ttl_ms)
            await pipe.execute()

    async def _beat(self) -> None:
        """Every ``presence_ttl / 3`` s: push this node's expiry forward, refresh presence TTLs, ping the reader."""
        period = max(0.2, self.presence_ttl / 3)
        ttl_ms = self.presence_ttl * 1000
        while True:
            await asyncio.sleep(period)
            if not self._connected:
                continue
            try:
                missing = await self._heartbeat(args=[self.prefix, self.node_id, ttl_ms])
                if missing:
                    logger.warning("this node's Redis entries were gone (expired or lost); re-registering")
                    await self._register()
                else:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for channel, entries in self._local_presence.items():
                            if entries:
                                pipe.pexpire(self.keys.pres(channel), ttl_ms)
                        await pipe.execute()
                sub = self._sub
                if sub is not None:
                    if self._pong_pending >= 2:
                        raise RedisConnectionError("no PONG on the pub/sub connection")
                    self._pong_pending += 1
                    await sub.send_command("PING")
            except CONNECTION_ERRORS as exc:
                self.last_error = str(exc) or type(exc).__name__
                await self._drop_sub()  # the reader notices, reports and reconnects
            except Exception:
                logger.exception("Redis broker heartbeat failed; trying again in %.1fs", period)

    def _cluster_id(self, conn_id: str) -> str:
        """Connection ids are unique per process only; prefix them with this node's id."""
        return f"{self.node_id}.{conn_id}"

    # ---- presence ----------------------------------------------------------------------------------------
    async def presence_add(self, channel: str, conn_id: str, info: dict[str, Any]) -> bool:
        """Record a connection in the channel; True when its user had no live connection there before."""
        conn_id = self._cluster_id(conn_id)
        user_id = info["user_id"]
        value = f"{self.node_id}|{user_id}|".encode() + orjson.dumps(info)
        self._local_presence.setdefault(channel, {})[conn_id] = value.decode()
        self._stale_presence.discard((channel, conn_id))
        args: list[EncodableT] = [self.prefix, conn_id, user_id, value, self.presence_ttl * 1000]
        return bool(await self._call(lambda: self._pres_add(keys=[self.keys.pres(channel)], args=args)))

    async def presence_remove(self, channel: str, conn_id: str, user_id: UserId) -> bool:
        """Forget a connection; True when its user has no live connection left in the channel.

        While Redis is unreachable the removal is queued (and False returned) rather than raised, so that a node
        disconnecting a client still forgets all of its entries.
        """
        conn_id = self._cluster_id(conn_id)
        entries = self._local_presence.get(channel)
        if entries is not None:
            entries.pop(conn_id, None)
            if not entries:
                del self._local_presence[channel]
        try:
            args: list[EncodableT] = [self.prefix, conn_id, user_id]
            return bool(await self._call(lambda: self._pres_remove(keys=[self.keys.pres(channel)], args=args)))
        except BrokerUnavailable:
            # Removed once Redis is back (or expired with this node); no leave event, it could not be published.
            self._stale_presence.add((channel, conn_id))
            return False

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """Users present in the channel on live nodes, one entry per user."""
        values = await self._call(lambda: self._pres_get(keys=[self.keys.pres(channel)], args=[self.prefix]))
        users: dict[UserId, dict[str, Any]] = {}
        for value in values:
            entry = orjson.loads(value.split(b"|", 2)[2])
            users.setdefault(entry["user_id"], entry)  # an int or a str id, as the host's UserInfo has it
        return [users[uid] for uid in sorted(users, key=lambda uid: (isinstance(uid, str), uid))]

    # ---- connections -------------------------------------------------------------------------------------
    async def connection_add(self, user_id: UserId, conn_id: str) -> int:
        """Count a connection cluster-wide (atomic add-and-count); while Redis is down, count this node's only."""
        conn_id = self._cluster_id(conn_id)
        self._local_conns[conn_id] = user_id
        self._stale_conns.pop(conn_id, None)
        args: list[EncodableT] = [self.prefix, self.node_id, user_id, conn_id]
        try:
            return int(await self._call(lambda: self._conn_add(args=args)))
        except BrokerUnavailable:
            logger.warning("Redis unavailable: counting user %s's connections on this node only", user_id)
            return sum(1 for uid in self._local_conns.values() if uid == user_id)

    async def connection_remove(self, user_id: UserId, conn_id: str) -> None:
        """Forget a connection (retried after a reconnect if Redis is down now)."""
        conn_id = self._cluster_id(conn_id)
        self._local_conns.pop(conn_id, None)
        args: list[EncodableT] = [self.prefix, self.node_id, user_id, conn_id]
        try:
            await self._call(lambda: self._conn_remove(args=args))
        except BrokerUnavailable:
            self._stale_conns[conn_id] = user_id

    async def stats(self) -> dict[str, int]:
        """Cluster totals of live nodes: ``{"users": n, "connections": n}``."""
        connections, users = await self._call(lambda: self._stats(args=[self.prefix]))
        return {"users": int(users), "connections": int(connections)}

    def info(self) -> dict[str, Any]:
        """Health details for ``/healthz`` and the metrics."""
        return {
            "kind": "redis",
            "healthy": self._connected,
            "url": redact_url(self.url),
            "prefix": self.prefix,
            "node": self.node_id,
            "channels": len(self._channels),
            "reconnects": self.reconnects,
            "disconnects": self.disconnects,
            "last_error": self.last_error,
            "down_since": self.down_since,
        }
