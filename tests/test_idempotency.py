"""Idempotent publish: a repeated key returns the original offset and delivers nothing (memory and Redis), including
when the connection to Redis dies between the script's write and its reply; and without a key, redis-py's own retry
of one call after such a lost reply publishes once."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import LiveServer, recv_json, recv_until
from tidings.broker import BrokerUnavailable, MemoryBroker, Publication
from tidings.broker.idempotency import IdempotencyCache
from tidings.broker.redis import RedisBroker
from tidings.messages import publication_body
from tidings.publisher import Publisher, SyncPublisher

REDIS = ("127.0.0.1", 6379)


# ---- memory ------------------------------------------------------------------------------------------------
async def test_memory_broker_repeat_returns_the_original_and_delivers_nothing() -> None:
    broker = MemoryBroker(idempotency_ttl=60)
    seen: list[Publication] = []
    await broker.start(seen.append)
    await broker.subscribe("room:a")
    first = await broker.publish("room:a", publication_body("room:a", 1), idempotency_key="k1")
    again = await broker.publish("room:a", publication_body("room:a", 1), idempotency_key="k1")
    other = await broker.publish("room:a", publication_body("room:a", 2), idempotency_key="k2")
    elsewhere = await broker.publish("room:b", publication_body("room:b", 1), idempotency_key="k1")
    assert (again.offset, again.epoch, again.duplicate) == (first.offset, first.epoch, True)
    assert not first.duplicate and not other.duplicate and not elsewhere.duplicate
    assert other.offset == first.offset + 1
    assert [p.offset for p in seen] == [first.offset, other.offset]  # the repeat was not delivered
    history = await broker.recover("room:a", 0, first.epoch)
    assert [p.offset for p in history.publications] == [1, 2]


def test_idempotency_cache_forgets_after_ttl_and_beyond_its_size() -> None:
    cache = IdempotencyCache(ttl=0.05, max_keys=2)
    cache.put("c", "a", 1, "e")
    assert cache.get("c", "a") == (1, "e")
    cache.put("c", "b", 2, "e")
    cache.put("c", "c", 3, "e")
    assert cache.get("c", "a") is None and len(cache) == 2  # the oldest went first
    import time

    time.sleep(0.1)
    assert cache.get("c", "b") is None and len(cache) == 0


async def test_rest_idempotency_key_header(srv: LiveServer) -> None:
    from tests.conftest import connected

    async with connected(srv, "ann") as ws, httpx.AsyncClient(base_url=srv.url) as http:
        await ws.send('{"type": "subscribe", "subscription": "property:5"}')
        assert (await recv_json(ws))["type"] == "subscription_confirmed"
        headers = {"Authorization": f"Bearer {srv.token('admin')}", "Idempotency-Key": "order-5-shipped"}
        body = {"channel": "property:5", "data": {"n": 1}}
        first = (await http.post("/api/publish", json=body, headers=headers)).json()
        again = (await http.post("/api/publish", json=body, headers=headers)).json()
        assert first["duplicate"] is False and again["duplicate"] is True
        assert (again["offset"], again["epoch"]) == (first["offset"], first["epoch"])
        del headers["Idempotency-Key"]
        third = (await http.post("/api/publish", json={**body, "data": {"n": 2}}, headers=headers)).json()
        pubs = [await recv_until(ws, "publication"), await recv_until(ws, "publication")]
        assert [p["data"]["n"] for p in pubs] == [1, 2]
        assert [p["offset"] for p in pubs] == [first["offset"], third["offset"]]
        with pytest.raises(TimeoutError):
            await recv_until(ws, "publication", timeout=0.5)  # nothing else arrives


@pytest.fixture
def srv(server: LiveServer) -> LiveServer:
    return server


# ---- Redis: a dropped reply, then a retry ---------------------------------------------------------------------
class ReplyDropper:
    """A TCP proxy to Redis that, when armed, lets a request through and then cuts the connection before the reply.

    The script has run on Redis (the write happened) but the client never hears back: the textbook case for a retry.
    """

    def __init__(self) -> None:
        self.armed_marker: bytes | None = None
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*REDIS)
        cut = asyncio.Event()

        async def upstream() -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    if self.armed_marker is not None and self.armed_marker in data:
                        self.armed_marker = None
                        self.dropped += 1
                        cut.set()  # from now on nothing goes back to the client
                        up_writer.write(data)
                        await up_writer.drain()
                        await asyncio.sleep(0.2)  # the script runs on Redis; its reply is dropped
                        return
                    up_writer.write(data)
                    await up_writer.drain()

        async def downstream() -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await up_reader.read(65536):
                    if cut.is_set():
                        return
                    writer.write(data)
                    await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


@pytest.fixture
async def redis_node() -> AsyncIterator[tuple[str, RedisBroker, list[Publication]]]:
    prefix = f"test-idem-{secrets.token_hex(4)}"
    seen: list[Publication] = []
    broker = RedisBroker("redis://127.0.0.1:6379/0", prefix=prefix)
    await broker.start(seen.append)
    yield prefix, broker, seen
    await broker.close()
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _publish_with_retry(publisher: Publisher, data: Any, key: str | None) -> tuple[int, list[dict[str, Any]]]:
    """Publish until a reply arrives, as a worker retrying after a timeout does; (failures seen, replies)."""
    failures = 0
    for _ in range(5):
        try:
            return failures, [await publisher.publish("room:idem", data, idempotency_key=key)]
        except BrokerUnavailable:
            failures += 1
    raise AssertionError("never got a reply")


async def _deliveries(seen: list[Publication], marker: str) -> list[Publication]:
    await asyncio.sleep(0.5)  # let the node's subscriber read everything published
    return [p for p in seen if marker.encode() in p.frame.payload]


@pytest.mark.redis
async def test_redis_reply_lost_then_retry_delivers_exactly_once(redis_node: Any) -> None:
    prefix, broker, seen = redis_node
    await broker.subscribe("room:idem")
    proxy = ReplyDropper()
    await proxy.start()
    publisher = Publisher(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix)
    try:
        await publisher.publish("room:idem", {"warmup": True})  # loads the script
        marker = f"job-{secrets.token_hex(4)}"
        proxy.armed_marker = marker.encode()
        failures, replies = await _publish_with_retry(publisher, {"marker": marker}, key=marker)
        assert proxy.dropped == 1
        delivered = await _deliveries(seen, marker)
        assert len(delivered) == 1, "exactly one delivery"
        assert replies[0]["offset"] == delivered[0].offset  # the retry learnt the original offset
        assert replies[0]["duplicate"] is True or failures == 0
        history = await broker.recover("room:idem", 0, delivered[0].epoch)
        assert sum(marker.encode() in p.frame.payload for p in history.publications) == 1
    finally:
        await publisher.close()
        await proxy.close()


@pytest.mark.redis
async def test_redis_keyless_calls_are_separate_publications(redis_node: Any) -> None:
    """A call's own token does not make two calls one: the same data published twice without a key goes out twice."""
    prefix, broker, seen = redis_node
    await broker.subscribe("room:idem")
    publisher = Publisher("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        marker = f"job-{secrets.token_hex(4)}"
        first = await publisher.publish("room:idem", {"marker": marker})
        again = await publisher.publish("room:idem", {"marker": marker})
        assert again["offset"] == first["offset"] + 1 and not first["duplicate"] and not again["duplicate"]
        assert len(await _deliveries(seen, marker)) == 2
    finally:
        await publisher.close()


# ---- Redis: a dropped reply that redis-py retries by itself, without a key ------------------------------------
@pytest.mark.redis
async def test_node_broker_reply_lost_without_a_key_is_published_once(redis_node: Any) -> None:
    """The node's broker: redis-py retries the publish script after the lost reply; the retry must not publish again.

    (Before each call carried a token of its own, this published twice and returned the second offset.)
    """
    prefix, _, _ = redis_node
    proxy = ReplyDropper()
    await proxy.start()
    seen: list[Publication] = []
    broker = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix)
    await broker.start(seen.append)
    try:
        await broker.subscribe("room:idem")
        await broker.publish("room:idem", publication_body("room:idem", {"warmup": True}))  # loads the script
        marker = f"job-{secrets.token_hex(4)}"
        proxy.armed_marker = marker.encode()
        pub = await broker.publish("room:idem", publication_body("room:idem", {"marker": marker}))
        assert proxy.dropped == 1
        delivered = await _deliveries(seen, marker)
        assert [p.offset for p in delivered] == [pub.offset], "one publication, at the offset returned"
        assert pub.duplicate is False, "the caller made one call: not a duplicate"
        history = await broker.recover("room:idem", 0, pub.epoch)
        assert sum(marker.encode() in p.frame.payload for p in history.publications) == 1
    finally:
        await broker.close()
        await proxy.close()


@pytest.mark.redis
@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_publisher_reply_lost_without_a_key_is_published_once(redis_node: Any, flavour: str) -> None:
    """A worker's Publisher: the same lost reply, retried by redis-py inside one call, publishes once."""
    prefix, broker, seen = redis_node
    await broker.subscribe("room:idem")
    proxy = ReplyDropper()
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    marker = f"job-{secrets.token_hex(4)}"
    try:
        if flavour == "async":
            publisher = Publisher(url, prefix=prefix)
            try:
                await publisher.publish("room:idem", {"warmup": True})
                proxy.armed_marker = marker.encode()
                reply = await publisher.publish("room:idem", {"marker": marker})
            finally:
                await publisher.close()
        else:

            def publish_sync() -> dict[str, Any]:
                sync = SyncPublisher(url, prefix=prefix)
                try:
                    sync.publish("room:idem", {"warmup": True})
                    proxy.armed_marker = marker.encode()
                    return sync.publish("room:idem", {"marker": marker})
                finally:
                    sync.close()

            reply = await asyncio.to_thread(publish_sync)
        assert proxy.dropped == 1
        delivered = await _deliveries(seen, marker)
        assert [p.offset for p in delivered] == [reply["offset"]]
        assert reply["duplicate"] is False
    finally:
        await proxy.close()


@pytest.mark.redis
async def test_redis_key_is_cluster_wide_between_node_and_worker(redis_node: Any) -> None:
    """A key used by a worker's Publisher is honoured by a node's RedisBroker (same record in Redis)."""
    prefix, broker, seen = redis_node
    await broker.subscribe("room:idem")
    publisher = Publisher("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        first = await publisher.publish("room:idem", {"n": 1}, idempotency_key="shared")
        again = await broker.publish("room:idem", publication_body("room:idem", {"n": 1}), idempotency_key="shared")
        assert (again.offset, again.epoch, again.duplicate) == (first["offset"], first["epoch"], True)
        await asyncio.sleep(0.3)
        assert [p.offset for p in seen if b'"n":1' in p.frame.payload] == [first["offset"]]
    finally:
        await publisher.close()
