"""A node's pub/sub connections: one ``SUBSCRIBE`` connection, or one ``SSUBSCRIBE`` connection per shard.

On one Redis (or Sentinel's master) a node holds a single connection subscribed to every channel it wants. On Redis
Cluster publications travel over sharded pub/sub: a channel's messages exist only on the shard owning its hash
slot, so the node holds one connection per primary and subscribes each channel on its owner's connection. Either
way the broker sees the same thing: :meth:`Subscriber.open` (subscribe everything, wait for every confirmation,
hold back messages), then :meth:`Subscriber.run` (deliver the held-back messages, then live ones, until a
connection fails). Any failure, or the cluster moving a slot away (a server-sent ``sunsubscribe``), ends
:meth:`Subscriber.run` with an error; the broker then rebuilds everything against the current topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["Subscriber"]

MessageHandler = Callable[[bytes, bytes], None]


class Subscriber:
    """Pub/sub connections of one node; ``sharded`` selects ``SSUBSCRIBE`` per Redis Cluster primary."""

    def __init__(self, client: Any, *, sharded: bool, name: str, on_message: MessageHandler) -> None:
        self.client = client
        self.sharded = sharded
        self.name = name
        self.on_message = on_message
        self._sub = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsub = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self._conns: dict[str, AbstractConnection] = {}
        self._owners: dict[bytes, str] = {}
        self._pending: dict[bytes, list[asyncio.Future[None]]] = {}
        self._pongs: dict[str, int] = {}
        self._wanted: set[bytes] = set()
        self._early: list[tuple[bytes, bytes]] = []
        self._ready = False
        self._readers: list[asyncio.Task[None]] = []

    @property
    def shards(self) -> list[str]:
        """Names of the servers this node has a pub/sub connection to."""
        return list(self._conns)

    # ---- connecting --------------------------------------------------------------------------------------
    async def _connect(self) -> None:
        if not self.sharded:
            conn = self.client.connection_pool.make_connection()
            self._conns[""] = conn
        else:
            await self.client.nodes_manager.initialize()
            for node in self.client.get_primaries():
                self._conns[node.name] = node.connection_class(**node.connection_kwargs)
        for shard, conn in self._conns.items():
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("CLIENT", "SETNAME", self.name)
            await conn.read_response()
            self._pongs[shard] = 0

    def _owner(self, key: bytes) -> str:
        if not self.sharded:
            return ""
        node = self.client.nodes_manager.get_node_from_slot(key_slot(key))
        return str(node.name)

    async def open(self, keys: list[bytes], timeout: float = 10.0) -> None:
        """Connect, subscribe ``keys`` and return once every subscription is confirmed (messages are held back)."""
        await self._connect()
        loop = asyncio.get_running_loop()
        self._readers = [loop.create_task(self._read(shard, conn)) for shard, conn in self._conns.items()]
        futures: list[asyncio.Future[None]] = []
        by_conn: dict[str, list[bytes]] = {}
        for key in keys:
            shard, future = self._expect(key)
            futures.append(future)
            by_conn.setdefault(shard, []).append(key)
        for shard, group in by_conn.items():
            conn = self._conns[shard]
            if self.sharded:  # one slot per command
                await conn.send_packed_command(conn.pack_commands([(self._sub, key) for key in group]))
            else:
                await conn.send_command(self._sub, *group)
        waiting: set[asyncio.Future[Any]] = {*futures, *self._readers}
        deadline = loop.time() + timeout
        while any(not f.done() for f in futures):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RedisConnectionError("subscriptions not confirmed in time")
            done, _ = await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in self._readers:
                if task in done:
                    task.result()
                    raise RedisConnectionError("pub/sub connection closed")
            waiting -= done

    def _expect(self, key: bytes) -> tuple[str, asyncio.Future[None]]:
        """Note that ``key`` is wanted; the future resolves on its confirmation."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        self._wanted.add(key)
        shard = self._owner(key)
        if shard not in self._conns:
            raise RedisConnectionError(f"no connection to the shard owning {key!r}; topology changed")
        self._owners[key] = shard
        return shard, future

    # ---- reading -----------------------------------------------------------------------------------------
    async def _read(self, shard: str, conn: AbstractConnection) -> None:
        while True:
            msg = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            if not isinstance(msg, list):
                if msg in (b"PONG", "PONG"):
                    self._pongs[shard] = 0
                continue
            kind = msg[0]
            if kind in (b"message", b"smessage"):
                if self._ready:
                    self.on_message(msg[1], msg[2])
                else:
                    self._early.append((msg[1], msg[2]))
            elif kind in (b"subscribe", b"ssubscribe"):
                for future in self._pending.pop(msg[1], ()):
                    if not future.done():
                        future.set_result(None)
            elif kind == b"sunsubscribe" and msg[1] in self._wanted:
                # Redis Cluster moved the channel's slot (failover, resharding): rebuild against the new topology.
                raise RedisConnectionError(f"shard {shard} dropped {msg[1]!r}: slot moved")
            elif kind == b"pong":
                self._pongs[shard] = 0

    async def run(self) -> None:
        """Deliver held-back messages, then live ones, until a connection fails (raises)."""
        for key, payload in self._early:
            self.on_message(key, payload)
        self._early.clear()
        self._ready = True
        done, _ = await asyncio.wait(self._readers, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RedisConnectionError("pub/sub connection closed")

    # ---- changes while running ---------------------------------------------------------------------------
    async def subscribe(self, key: bytes, timeout: float = 5.0) -> None:
        """Subscribe one more channel and wait (bounded) for the confirmation."""
        shard, future = self._expect(key)
        try:
            await self._conns[shard].send_command(self._sub, key)
            await asyncio.wait_for(future, timeout)
        finally:
            waiting = self._pending.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._pending[key]

    async def unsubscribe(self, key: bytes) -> None:
        """Stop receiving one channel."""
        self._wanted.discard(key)
        shard = self._owners.pop(key, None)
        conn = self._conns.get(shard) if shard is not None else None
        if conn is not None:
            await conn.send_command(self._unsub, key)

    async def ping(self) -> None:
        """PING every connection; raise if one left two PINGs unanswered."""
        for shard, conn in self._conns.items():
            if self._pongs.get(shard, 0) >= 2:
                raise RedisConnectionError(f"no PONG on the pub/sub connection to {shard or 'Redis'}")
            self._pongs[shard] = self._pongs.get(shard, 0) + 1
            await conn.send_command("PING")

    def release(self) -> None:
        """Let waiting :meth:`subscribe` calls return (the broker resubscribes after reconnecting)."""
        for waiting in self._pending.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._pending.clear()

    async def close(self) -> None:
        """Drop every connection and reader."""
        self.release()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(BaseException):
                await task
        self._readers = []
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
        self._conns.clear()
