"""The Redis broker: several Tidings processes share history, fan-out, presence and connection counts.

It runs on one Redis (``redis://``), on the master Sentinel names (``redis+sentinel://``) and on Redis Cluster
(``redis+cluster://``); see :mod:`tidings.broker.urls`, and :mod:`tidings.broker.keys` for the key layout.

* **Publishing** runs one Lua script (``EVALSHA``): next offset, history append (a stream with ids
  ``<offset>-0``, bounded by count and bytes), ``PUBLISH`` (``SPUBLISH`` on Redis Cluster) of the final JSON bytes.
  Offsets are therefore ordered and gap-free, and every node wraps the bytes it receives in a
  :class:`~tidings.protocol.Frame` without decoding them.
* **Fan-out**: the node's pub/sub connection(s) (:class:`~tidings.broker.redis_pubsub.Subscriber`; one per shard on
  Redis Cluster) subscribe to the channels the node wants. The reader feeds the node's handler in order and
  remembers the last offset delivered per channel, so after a reconnect it first replays from history what it
  missed (same epoch) and then drops duplicates.
* **Resilience**: when a connection drops (or a failover moves a slot) the reader logs once, counts a
  disconnect, marks the broker unhealthy and retries with capped exponential backoff against the current
  topology; once back it resubscribes, re-registers this node's presence and connection entries, replays missed
  publications, logs once and counts a reconnect. Local connections keep being served meanwhile; publishing
  raises :class:`BrokerUnavailable`.
* **Node liveness**: every node holds a lease (``node_lease_ttl``, renewed every third of it). Once a node's lease
  has passed, the first survivor to notice releases its connections (per-user limits free up at once) and one
  survivor handles its presence entries and reports them (:meth:`RedisBroker.on_reaped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, ReadOnlyError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from tidings.broker import redis_scripts as lua
from tidings.broker.base import (
    BrokerUnavailable,
    HistoryResult,
    PresencePage,
    Publication,
    PublicationHandler,
    ReapedConnection,
    ReapedHandler,
    presence_score,
)
from tidings.broker.keys import Keys
from tidings.broker.redis_pubsub import Subscriber
from tidings.broker.urls import parse_broker_url, redact_url
from tidings.protocol import Frame

if TYPE_CHECKING:
    from tidings.connection import UserId

__all__ = ["RedisBroker", "redact_url"]

logger = logging.getLogger("tidings.broker.redis")

T = TypeVar("T")

#: Errors that mean "Redis cannot be reached" (as opposed to a bug in a command): connection errors, and the
#: errors of a cluster or a Sentinel set-up in the middle of a failover.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
)


def new_epoch() -> str:
    """A fresh epoch name (used only when a channel's metadata is created)."""
    return secrets.token_hex(4)


def _is_failover_error(exc: BaseException) -> bool:
    """Errors a cluster answers while a failover is under way (no master for a slot yet, MASTERDOWN...)."""
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError) and text.startswith(("CLUSTERDOWN", "MASTERDOWN", "LOADING", "READONLY"))



class RedisBroker:
    """A :class:`~tidings.broker.base.Broker` backed by Redis: one server, Sentinel or Redis Cluster.

    Also a :class:`~tidings.broker.base.ReapNotifier` and a :class:`~tidings.broker.base.CountedPresence`.
    Keyword-only options and their defaults:

    * ``prefix="tidings"`` — prefix of every key and pub/sub channel (``TIDINGS_BROKER_PREFIX``);
    * ``history_size=1000`` — publications kept per channel (0 keeps none);
    * ``history_max_bytes=1048576`` — bytes of history kept per channel (0: no byte bound);
    * ``history_ttl=86400`` — seconds a channel's history and offset counter live after its last publish;
    * ``presence_ttl=30`` — seconds presence keys live without a live node refreshing them (a safety net);
    * ``node_lease_ttl=6`` — seconds after which a silent node counts as dead (its connections are released);
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
        history_max_bytes: int = 1 << 20,
        presence_ttl: int = 30,
        node_lease_ttl: float = 6.0,
        reconnect_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
        command_timeout: float = 5.0,
        idempotency_ttl: int = 300,
    ) -> None:
        self.url = url
        self.idempotency_ttl = idempotency_ttl
        self.target = parse_broker_url(url)
        self.prefix = prefix
        self.history_size = history_size
        #: ``channel -> size`` (None: ``history_size``): a namespace's own history size, set by the node
        self.history_limit: Callable[[str], int | None] | None = None
        self.history_ttl = history_ttl
        self.history_max_bytes = history_max_bytes
        self.presence_ttl = presence_ttl
        self.node_lease_ttl = node_lease_ttl
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.node_id = secrets.token_hex(6)
        self.keys = Keys(prefix)
        self._cmd = self.target.publish_command
        self._check = "1" if self.target.mode != "redis" else "0"  # new epoch after a failover (replicated set-ups)
        self.client: Any = self.target.async_client(
            socket_timeout=command_timeout,
            socket_connect_timeout=min(command_timeout, 2.0),
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
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
        self._pres_page = self.client.register_script(lua.PRESENCE_PAGE)
        self._handler: PublicationHandler | None = None
        self._reaped_handler: ReapedHandler | None = None
        # Channels this node wants, by their pub/sub key -> channel name.
        self._channels: dict[bytes, str] = {}
        self._markers: dict[bytes, asyncio.Future[None]] = {}
        self._last: dict[str, tuple[str, int]] = {}  # channel -> (epoch, offset) last delivered
        # This node's registrations, replayed after a reconnect (Redis may have lost them).
        self._local_conns: dict[str, tuple[UserId, bytes]] = {}  # node.conn -> (user_id, user JSON)
        self._local_presence: dict[str, dict[str, tuple[UserId, bytes]]] = {}  # channel -> node.conn -> (uid, JSON)
        self._stale_presence: dict[tuple[str, str], UserId] = {}  # (channel, node.conn) -> uid, removed once back
        self._stale_conns: dict[str, UserId] = {}  # node.conn -> user_id, removed once Redis is back
        self._sub: Subscriber | None = None
        self._connected = False
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Event | None = None
        self._lost_at: float | None = None
        self.reconnects = 0
        self.disconnects = 0
        self.reaped = 0
        self.last_error = ""
        self.down_since: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """True while the pub/sub connections are up (and heartbeats succeed)."""
        return self._connected

    @property
    def mode(self) -> str:
        """``redis``, ``sentinel`` or ``cluster``."""
        return self.target.mode

    def on_reaped(self, handler: ReapedHandler | None) -> None:
        """Hand dead nodes' connections this node was chosen to handle to ``handler`` (see ``broker.base``)."""
        self._reaped_handler = handler

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
            calls = [
                (self.keys.presence(channel), [conn, uid])
                for channel, entries in self._local_presence.items()
                for conn, (uid, _) in entries.items()
            ]
            await self._many(self._pres_remove, calls)
            await self._node_leave(keys=self.keys.registry, args=[self.node_id])
        except CONNECTION_ERRORS as exc:
            logger.warning("could not remove this node's entries from Redis (%s); they will expire", exc)
        self._local_presence.clear()
        self._local_conns.clear()
        self._handler = None
        await self._drop_sub()
        self._connected = False
        await self.client.aclose()

    # ---- helpers -----------------------------------------------------------------------------------------
    async def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        try:
            return await func()
        except Exception as exc:
            if not _is_failover_error(exc):
                raise
            self.last_error = str(exc) or type(exc).__name__
            raise BrokerUnavailable(f"Redis unavailable: {self.last_error}") from exc

    async def _many(self, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run ``script`` once per ``(keys, args)``: pipelined on one Redis, concurrently on Redis Cluster."""
        replies: list[Any] = []
        if self.target.sharded:
            for start in range(0, len(calls), 64):
                batch = calls[start : start + 64]
                replies += await asyncio.gather(*(script(keys=k, args=a) for k, a in batch))
            return replies
        for start in range(0, len(calls), 500):
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args in calls[start : start + 500]:
                    await script(keys=keys, args=args, client=pipe)
                replies += await pipe.execute()
        return replies

    def _cluster_id(self, conn_id: str) -> str:
        """Connection ids are unique per process only; prefix them with this node's id."""
        return f"{self.node_id}.{conn_id}"

    # ---- publishing and history ------------------------------------------------------------------------
    async def publish(self, channel: str, body: bytes, *, idempotency_key: str | None = None) -> Publication:
        """Run the publish script: offset, history, ``(S)PUBLISH`` of the final bytes, atomically.

        With ``idempotency_key`` the script first looks the key up (cluster-wide, in the channel's slot): a repeat
        within ``idempotency_ttl`` returns the original position and publishes nothing. Without one, the call
        carries a token of its own (:func:`~tidings.broker.redis_scripts.dedup_record`), so redis-py's retry after a
        lost reply cannot publish twice.
        """
        head = lua.body_head(body)
        size = None if self.history_limit is None else self.history_limit(channel)
        size = self.history_size if size is None else size
        args: list[EncodableT] = [head, new_epoch(), size, self.history_ttl, self.history_max_bytes]
        args += [self._cmd, self._check]
        record, record_ttl = lua.dedup_record(self.keys, channel, idempotency_key, self.idempotency_ttl)
        keys = [*self.keys.stream(channel), record]
        args.append(record_ttl)
        reply = await self._call(lambda: self._publish(keys=keys, args=args))
        offset, epoch, duplicate = lua.publish_reply(reply, keyed=idempotency_key is not None)
        payload = b'%s"offset":%d,"epoch":"%s"}' % (head, offset, epoch)
        return Publication(channel, offset, epoch.decode(), Frame(payload), duplicate=duplicate)

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
        keys = self.keys.stream(channel)
        marker = b""
        future: asyncio.Future[None] | None = None
        if sync and self._connected and self.keys.pub(channel).encode() in self._channels:
            marker = lua.MARKER + self.node_id.encode() + secrets.token_hex(8).encode()
            future = self._markers[marker] = asyncio.get_running_loop().create_future()
        args: list[EncodableT] = [new_epoch(), self.history_ttl, since, since_epoch, marker, self._cmd, self._check]
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
        try:
            await sub.subscribe(key)
        except (*CONNECTION_ERRORS, TimeoutError):  # type: ignore[misc]
            pass  # the reader reconnects and resubscribes every wanted channel

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications."""
        key = self.keys.pub(channel).encode()
        self._channels.pop(key, None)
        self._last.pop(channel, None)
        sub = self._sub
        if sub is not None and self._connected:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await sub.unsubscribe(key)

    # ---- the reader --------------------------------------------------------------------------------------
    async def _drop_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.close()

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
                self._release_markers()
                if not _is_failover_error(exc):
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

    def _release_markers(self) -> None:
        """Let :meth:`position`/:meth:`recover` calls waiting for a marker return (the reconnect replays)."""
        for future in self._markers.values():
            if not future.done():
                future.set_result(None)

    async def _connect_and_read(self) -> None:
        sub = Subscriber(
            self.client,
            sharded=self.target.sharded,
            name=f"tidings-sub:{self.prefix}:{self.node_id}",
            on_message=self._on_message,
        )
        self._sub = sub
        wanted = list(self._channels)
        # Wait for every confirmation so that a replay from history cannot leave a gap before live messages.
        await sub.open(wanted)
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
            logger.info(
                "Redis broker connected to %s (%s, node %s)", redact_url(self.url), self.target.mode, self.node_id
            )
        self.down_since = None
        self._connected = True
        if self._first_attempt is not None:
            self._first_attempt.set()
        # Channels wanted (or dropped) while the connections were being set up.
        known = set(wanted)
        for key in [key for key in self._channels if key not in known]:
            with contextlib.suppress(TimeoutError):
                await sub.subscribe(key)
        for key in [key for key in wanted if key not in self._channels]:
            await sub.unsubscribe(key)
        await sub.run()

    def _on_message(self, key: bytes, payload: bytes) -> None:
        if payload[:1] == lua.MARKER:
            marker = self._markers.get(payload)
            if marker is not None and not marker.done():
                marker.set_result(None)
            return  # another node's marker
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

        One recover script per channel, pipelined (or concurrent on Redis Cluster), so a node with thousands of
        channels catches up in a few round trips.
        """
        items = list(self._last.items())
        calls: list[tuple[list[str], list[Any]]] = [
            (self.keys.stream(channel), [new_epoch(), self.history_ttl, offset, epoch, b"", self._cmd, self._check])
            for channel, (epoch, offset) in items
        ]
        replies = await self._many(self._recover, calls)
        for (channel, (epoch, _)), (_, current_b, entries) in zip(items, replies, strict=True):
            current = current_b.decode()
            if current != epoch:
                # History was lost (Redis restarted empty, a failover, the TTL passed): all of the new epoch is new.
                _, _, pubs = await self._history(channel, 0, current)
            else:
                pubs = self._publications(channel, current, entries)
            key = self.keys.pub(channel).encode()
            for pub in pubs:
                self._on_message(key, pub.frame.payload)

    # ---- heartbeat, registrations and reaping ---------------------------------------------------------------
    @property
    def _lease_ms(self) -> int:
        return int(self.node_lease_ttl * 1000)

    async def _register(self) -> None:
        """(Re-)register this node, its connections and presence entries; flush removals made while down."""
        reg = self.keys.registry
        # Start from a clean slate: after a failover the registry may hold a stale view of this node's entries.
        await self._node_leave(keys=reg, args=[self.node_id])
        await self._heartbeat(keys=reg, args=[self.node_id, self._lease_ms])
        for conn_id, user_id in list(self._stale_conns.items()):
            await self._conn_remove(keys=reg, args=[conn_id, user_id])
            self._stale_conns.pop(conn_id, None)
        await self._many(
            self._conn_add,
            [(reg, [self.node_id, self._lease_ms, uid, conn, info]) for conn, (uid, info) in self._local_conns.items()],
        )
        stale = list(self._stale_presence.items())
        await self._many(self._pres_remove, [(self.keys.presence(ch), [conn, uid]) for (ch, conn), uid in stale])
        for item, _ in stale:
            self._stale_presence.pop(item, None)
        ttl_ms = self.presence_ttl * 1000
        entries = [
            (channel, conn, uid, info)
            for channel, conns in self._local_presence.items()
            for conn, (uid, info) in conns.items()
        ]
        if entries:
            members: list[Any] = []
            for channel, conn, _, _ in entries:
                members += [0, f"{conn}|{channel}"]
            await self.client.execute_command("ZADD", self.keys.index, *members)
        await self._many(
            self._pres_add, [(self.keys.presence(ch), [conn, uid, info, ttl_ms]) for ch, conn, uid, info in entries]
        )

    async def _refresh_presence(self) -> None:
        """Push the TTL of the presence keys this node has entries in forward (a safety net, see ``presence_ttl``)."""
        ttl_ms = self.presence_ttl * 1000
        keys = [key for channel in self._local_presence for key in self.keys.presence(channel)]
        if self.target.sharded:
            for start in range(0, len(keys), 64):
                await asyncio.gather(*(self.client.pexpire(key, ttl_ms) for key in keys[start : start + 64]))
            return
        for start in range(0, len(keys), 1000):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 1000]:
                    pipe.pexpire(key, ttl_ms)
                await pipe.execute()

    async def _beat(self) -> None:
        """Every third of the lease: renew it, reap dead nodes, handle their reports, ping the pub/sub connections.

        The presence keys' TTL is refreshed every third of ``presence_ttl``.
        """
        period = max(0.2, self.node_lease_ttl / 3)
        presence_period = max(period, self.presence_ttl / 3)
        next_presence = time.monotonic() + presence_period
        while True:
            await asyncio.sleep(period)
            if not self._connected:
                continue
            try:
                missing = await self._heartbeat(keys=self.keys.registry, args=[self.node_id, self._lease_ms])
                if missing:
                    logger.warning("this node's Redis entries were gone (expired, reaped or lost); re-registering")
                    await self._register()
                elif time.monotonic() >= next_presence:
                    next_presence = time.monotonic() + presence_period
                    await self._refresh_presence()
                await self._handle_reaped()
                sub = self._sub
                if sub is not None:
                    await sub.ping()
            except Exception as exc:
                if not _is_failover_error(exc):
                    logger.exception("Redis broker heartbeat failed; trying again in %.1fs", period)
                    continue
                self.last_error = str(exc) or type(exc).__name__
                await self._drop_sub()  # the reader notices, reports and reconnects

    async def _handle_reaped(self, batch: int = 200, rounds: int = 10) -> None:
        """Pop dead nodes' connections (each popped by exactly one node), clear their presence, report them."""
        for _ in range(rounds):
            raw = await self.client.lpop(self.keys.reaped, batch)
            if not raw:
                return
            reaped: list[ReapedConnection] = []
            for item in raw:
                try:
                    rec = orjson.loads(item)
                    node, conn = str(rec["node"]), str(rec["conn"])
                    reaped.append(
                        ReapedConnection(
                            node_id=node,
                            conn_id=conn.split(".", 1)[1] if "." in conn else conn,
                            user_id=dict(rec["info"]).get("user_id", rec["user_id"]),  # int or str, as given
                            info=dict(rec["info"]),
                            channels=[str(ch) for ch in rec["channels"]],
                        )
                    )
                except (ValueError, KeyError, TypeError, IndexError):
                    logger.warning("ignoring a malformed reaped-connection record: %r", item[:200])
            calls = [
                (self.keys.presence(ch), [f"{r.node_id}.{r.conn_id}", r.user_id]) for r in reaped for ch in r.channels
            ]
            replies = iter(await self._many(self._pres_remove, calls))
            for r in reaped:
                r.left = [ch for ch in r.channels if int(next(replies)[0])]
            self.reaped += len(reaped)
            logger.info(
                "released %d connections of dead node(s) %s",
                len(reaped),
                ", ".join(sorted({r.node_id for r in reaped})),
            )
            if self._reaped_handler is not None and reaped:
                try:
                    await self._reaped_handler(reaped)
                except Exception:
                    logger.exception("the reaped-connections handler failed")

    # ---- presence ----------------------------------------------------------------------------------------
    async def presence_join(self, channel: str, conn_id: str, info: dict[str, Any]) -> tuple[bool, int]:
        """Record a connection in the channel (O(1)); (True if its user was not present before, member count)."""
        conn_id = self._cluster_id(conn_id)
        user_id = info["user_id"]
        value = orjson.dumps(info)
        self._local_presence.setdefault(channel, {})[conn_id] = (user_id, value)
        self._stale_presence.pop((channel, conn_id), None)
        args: list[EncodableT] = [conn_id, user_id, value, self.presence_ttl * 1000, presence_score(user_id)]
        await self._call(lambda: self.client.zadd(self.keys.index, {f"{conn_id}|{channel}": 0}))
        new, count = await self._call(lambda: self._pres_add(keys=self.keys.presence(channel), args=args))
        return bool(new), int(count)

    async def presence_add(self, channel: str, conn_id: str, info: dict[str, Any]) -> bool:
        """Record a connection in the channel; True when its user had no connection there before."""
        return (await self.presence_join(channel, conn_id, info))[0]

    async def presence_leave(self, channel: str, conn_id: str, user_id: UserId) -> tuple[bool, int]:
        """Forget a connection (O(1)); (True if its user has no connection left in the channel, member count).

        While Redis is unreachable the removal is queued (and ``(False, -1)`` returned) rather than raised, so a
        node disconnecting a client still forgets all of its entries.
        """
        conn_id = self._cluster_id(conn_id)
        entries = self._local_presence.get(channel)
        if entries is not None:
            entries.pop(conn_id, None)
            if not entries:
                del self._local_presence[channel]
        args: list[EncodableT] = [conn_id, user_id]
        try:
            gone, count = await self._call(lambda: self._pres_remove(keys=self.keys.presence(channel), args=args))
            await self._call(lambda: self.client.zrem(self.keys.index, f"{conn_id}|{channel}"))
        except BrokerUnavailable:
            # Removed once Redis is back (or by a survivor once this node's lease is gone); no leave event.
            self._stale_presence[(channel, conn_id)] = user_id
            return False, -1
        return bool(gone), int(count)

    async def presence_remove(self, channel: str, conn_id: str, user_id: UserId) -> bool:
        """Forget a connection; True when its user has no connection left in the channel."""
        return (await self.presence_leave(channel, conn_id, user_id))[0]

    async def presence_page(self, channel: str, after: int = 0, limit: int = 100) -> PresencePage:
        """Members with a user id above ``after`` (at most ``limit``, in user id order) and the member count."""
        limit = max(1, min(int(limit), 1000))
        reply = await self._call(lambda: self._pres_page(keys=self.keys.presence(channel)[2:], args=[after, limit]))
        users = [orjson.loads(value) for value in reply[1:]]
        cursor = presence_score(users[-1]["user_id"]) if len(users) == limit else None
        return PresencePage(users, int(reply[0]), cursor)

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """Every user present in the channel (all pages), one entry per user, in user id order."""
        users: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = await self.presence_page(channel, after, 1000)
            users += page.users
            after = page.cursor
        return users

    # ---- connections -------------------------------------------------------------------------------------
    async def connection_add(self, user_id: UserId, conn_id: str, info: dict[str, Any] | None = None) -> int:
        """Count a connection cluster-wide (atomic add-and-count); while Redis is down, count this node's only.

        ``info`` (the user's public info) is what a survivor reports if this node dies with the connection open.
        """
        conn_id = self._cluster_id(conn_id)
        value = orjson.dumps(info if info is not None else {"user_id": user_id})
        self._local_conns[conn_id] = (user_id, value)
        self._stale_conns.pop(conn_id, None)
        args: list[EncodableT] = [self.node_id, self._lease_ms, user_id, conn_id, value]
        try:
            return int(await self._call(lambda: self._conn_add(keys=self.keys.registry, args=args)))
        except BrokerUnavailable:
            logger.warning("Redis unavailable: counting user %s's connections on this node only", user_id)
            return sum(1 for uid, _ in self._local_conns.values() if uid == user_id)

    async def connection_remove(self, user_id: UserId, conn_id: str) -> None:
        """Forget a connection (retried after a reconnect if Redis is down now)."""
        conn_id = self._cluster_id(conn_id)
        self._local_conns.pop(conn_id, None)
        args: list[EncodableT] = [conn_id, user_id]
        try:
            await self._call(lambda: self._conn_remove(keys=self.keys.registry, args=args))
        except BrokerUnavailable:
            self._stale_conns[conn_id] = user_id

    async def stats(self) -> dict[str, int]:
        """Cluster totals of live nodes: ``{"users": n, "connections": n}``."""
        connections, users = await self._call(lambda: self._stats(keys=self.keys.registry, args=[]))
        return {"users": int(users), "connections": int(connections)}

    def info(self) -> dict[str, Any]:
        """Health details for ``/healthz`` and the metrics."""
        sub = self._sub
        return {
            "kind": "redis",
            "mode": self.target.mode,
            "healthy": self._connected,
            "url": redact_url(self.url),
            "prefix": self.prefix,
            "node": self.node_id,
            "channels": len(self._channels),
            "shards": len(sub.shards) if sub is not None else 0,
            "reconnects": self.reconnects,
            "disconnects": self.disconnects,
            "reaped": self.reaped,
            "last_error": self.last_error,
            "down_since": self.down_since,
        }
