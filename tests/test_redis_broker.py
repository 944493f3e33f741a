"""The Redis broker and the worker publishers against the machine's Redis (random key prefix per test)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import free_port
from tests.test_redis_cluster import eventually
from tidings.broker import BrokerUnavailable, Publication, ReapedConnection, create_broker
from tidings.broker.redis import RedisBroker, redact_url
from tidings.broker.redis_scripts import parse_position
from tidings.broker.urls import celery_broker, parse_broker_url
from tidings.protocol import encode, with_position
from tidings.publisher import Publisher, SyncPublisher

pytestmark = [pytest.mark.redis]

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(6)}"


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """Start brokers sharing ``prefix``: ``await make(handler, **options)``; all closed at the end."""
    brokers: list[RedisBroker] = []

    async def start(handler: Callable[[Publication], None] = lambda pub: None, **options: Any) -> RedisBroker:
        broker = RedisBroker(options.pop("url", URL), prefix=prefix, **options)
        brokers.append(broker)
        await broker.start(handler)
        return broker

    yield start
    for broker in brokers:
        await broker.close()
    client = aioredis.Redis.from_url(URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def body(channel: str, n: int) -> bytes:
    return encode({"type": "publication", "channel": channel, "data": {"n": n}})


class Collector:
    """A publication handler that wakes a waiter once ``count`` publications arrived."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, pub: Publication) -> None:
        self.pubs.append(pub)
        for count, future in self._waiters:
            if len(self.pubs) >= count and not future.done():
                future.set_result(None)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Publication]:
        if len(self.pubs) < count:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((count, future))
            await asyncio.wait_for(future, timeout)
        return self.pubs


def test_create_broker_builds_a_redis_broker() -> None:
    broker = create_broker(URL, prefix="p", history_size=5, history_ttl=60, presence_ttl=9)
    assert isinstance(broker, RedisBroker)
    assert (broker.prefix, broker.history_size, broker.history_ttl, broker.presence_ttl) == ("p", 5, 60, 9)


def test_urls_are_redacted() -> None:
    assert redact_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:secret@host/1") == "redis://:***@host/1"
    assert redact_url("redis://host:6379") == "redis://host:6379"


def test_position_is_read_from_the_tail_of_the_payload() -> None:
    payload = with_position(b'{"type":"publication","data":{"offset":"x,\\"offset\\":9"}}', 42, "abc")
    assert parse_position(payload) == (42, "abc")
    assert parse_position(with_position(b"{}", 7, "e")) == (7, "e")


async def test_an_empty_object_gets_a_valid_position(make: Any) -> None:
    got = Collector()
    broker = await make(got)
    await broker.subscribe("room:e")
    pub = await broker.publish("room:e", b"{}")
    [received] = await got.wait_for(1)
    assert received.frame.payload == pub.frame.payload == with_position(b"{}", 1, pub.epoch)
    assert orjson.loads(received.frame.payload) == {"offset": 1, "epoch": pub.epoch}


async def test_publications_reach_other_nodes_with_identical_bytes(make: Any) -> None:
    got = Collector()
    a = await make(got)
    b = await make()
    await a.subscribe("room:x")
    pub = await b.publish("room:x", body("room:x", 1))
    assert (pub.offset, len(pub.epoch)) == (1, 8)
    [received] = await got.wait_for(1)
    assert received.frame.payload == pub.frame.payload == with_position(body("room:x", 1), 1, pub.epoch)
    assert (received.channel, received.offset, received.epoch) == ("room:x", 1, pub.epoch)


async def test_concurrent_publishers_get_gap_free_ordered_offsets(make: Any, prefix: str) -> None:
    got = Collector()
    a = await make(got)
    b = await make()
    await a.subscribe("room:c")
    sync = SyncPublisher(URL, prefix=prefix)

    async def burst(broker: RedisBroker, tag: int) -> list[int]:
        return [(await broker.publish("room:c", body("room:c", tag * 1000 + i))).offset for i in range(50)]

    def sync_burst() -> list[int]:
        return [sync.publish("room:c", {"n": i})["offset"] for i in range(50)]

    results = await asyncio.gather(burst(a, 1), burst(b, 2), burst(b, 3), asyncio.to_thread(sync_burst))
    sync.close()
    returned = sorted(offset for offsets in results for offset in offsets)
    assert returned == list(range(1, 201))
    for offsets in results:
        assert offsets == sorted(offsets)
    pubs = await got.wait_for(200)
    assert [p.offset for p in pubs] == list(range(1, 201))


async def test_recover_follows_history_size_and_epoch(make: Any) -> None:
    broker = await make(history_size=5)
    for n in range(8):
        pub = await broker.publish("room:h", body("room:h", n))
    assert await broker.position("room:h") == (8, pub.epoch)
    result = await broker.recover("room:h", 3, pub.epoch)
    assert ([p.offset for p in result.publications], result.recovered) == ([4, 5, 6, 7, 8], True)
    assert result.publications[0].frame.payload == with_position(body("room:h", 3), 4, pub.epoch)
    result = await broker.recover("room:h", 2, pub.epoch)
    assert ([p.offset for p in result.publications], result.recovered) == ([4, 5, 6, 7, 8], False)
    result = await broker.recover("room:h", 8, pub.epoch)
    assert (result.publications, result.recovered, result.offset) == ([], True, 8)
    result = await broker.recover("room:h", 3, "other")
    assert (result.publications, result.recovered, result.epoch) == ([], False, pub.epoch)


async def test_a_new_channel_has_an_epoch_before_its_first_publication(make: Any) -> None:
    broker = await make()
    offset, epoch = await broker.position("room:new")
    assert offset == 0 and epoch
    pub = await broker.publish("room:new", body("room:new", 0))
    assert (pub.offset, pub.epoch) == (1, epoch)
    result = await broker.recover("room:new", 0, epoch)
    assert ([p.offset for p in result.publications], result.recovered) == ([1], True)


async def test_lost_metadata_starts_a_new_epoch(make: Any, prefix: str) -> None:
    broker = await make()
    first = [await broker.publish("room:l", body("room:l", n)) for n in range(3)][-1]
    await broker.client.delete(broker.keys.meta("room:l"))  # as if Redis had lost it
    pub = await broker.publish("room:l", body("room:l", 3))
    assert pub.offset == 1 and pub.epoch != first.epoch
    result = await broker.recover("room:l", 3, first.epoch)
    assert (result.publications, result.recovered, result.epoch) == ([], False, pub.epoch)
    result = await broker.recover("room:l", 0, pub.epoch)
    assert [p.offset for p in result.publications] == [1]  # the old stream was dropped with its epoch


async def test_history_ttl_expires_history_and_counter(make: Any, prefix: str) -> None:
    broker = await make(history_ttl=1)
    old = await broker.publish("room:t", body("room:t", 0))
    assert 0 < await broker.client.ttl(broker.keys.hist("room:t")) <= 1

    async def expired() -> bool:
        return not await broker.client.exists(f"{prefix}:meta:room:t", broker.keys.hist("room:t"))

    await eventually(expired)
    pub = await broker.publish("room:t", body("room:t", 1))
    assert pub.offset == 1 and pub.epoch != old.epoch
    assert not (await broker.recover("room:t", 1, old.epoch)).recovered


async def test_history_size_zero_keeps_offsets_but_no_history(make: Any, prefix: str) -> None:
    broker = await make(history_size=0)
    pubs = [await broker.publish("room:z", body("room:z", n)) for n in range(3)]
    assert [p.offset for p in pubs] == [1, 2, 3]
    assert not await broker.client.exists(broker.keys.hist("room:z"))
    assert not (await broker.recover("room:z", 1, pubs[0].epoch)).recovered


async def test_connection_counting_is_atomic_across_nodes(make: Any) -> None:
    a, b = await make(), await make()
    counts = await asyncio.gather(*(node.connection_add(7, f"c{i}") for i, node in enumerate([a, b] * 5)))
    assert sorted(counts) == list(range(1, 11))
    await a.connection_add(8, "c99")
    assert await b.stats() == {"users": 2, "connections": 11}
    await a.connection_remove(7, "c0")
    await a.connection_remove(7, "c0")  # twice: counted once
    assert await b.stats() == {"users": 2, "connections": 10}
    await a.close()  # a's remaining entries go with it
    assert await b.stats() == {"users": 1, "connections": 5}


async def test_presence_is_per_user_across_nodes(make: Any) -> None:
    a, b = await make(), await make()
    ann, bob = {"user_id": 1, "username": "ann"}, {"user_id": 2, "username": "bob"}
    assert await a.presence_add("room:p", "c1", ann) is True
    assert await b.presence_add("room:p", "c1", ann) is False  # same local id on another node: another connection
    assert await b.presence_add("room:p", "c2", bob) is True
    assert await a.presence("room:p") == [ann, bob]
    assert await a.presence_remove("room:p", "c1", 1) is False  # ann is still there through b
    assert await b.presence_remove("room:p", "c1", 1) is True
    assert await a.presence_remove("room:p", "c1", 1) is False  # already gone
    assert await b.presence("room:p") == [bob]
    await b.close()
    assert await a.presence("room:p") == []


async def test_an_unreachable_redis_raises_broker_unavailable(make: Any) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = await make(url=url, reconnect_delay=0.05, reconnect_max_delay=0.2)
    assert broker.healthy is False
    info = broker.info()
    assert info["kind"] == "redis" and info["healthy"] is False and info["last_error"]
    with pytest.raises(BrokerUnavailable):
        await broker.publish("room:x", body("room:x", 1))
    with pytest.raises(BrokerUnavailable):
        await broker.recover("room:x", 0, "e")
    with pytest.raises(BrokerUnavailable):
        await broker.stats()
    await broker.subscribe("room:x")  # remembered, subscribed when Redis comes
    assert await broker.connection_add(1, "c1") == 1  # counted on this node meanwhile
    assert await broker.connection_add(1, "c2") == 2
    await broker.connection_remove(1, "c1")
    async with Publisher(url) as publisher:
        with pytest.raises(BrokerUnavailable):
            await publisher.publish("room:x", 1)
    with SyncPublisher(url) as sync, pytest.raises(BrokerUnavailable):
        sync.publish_event(["room:x"], {"type": "t"})


async def test_publishers_validate_their_input(prefix: str) -> None:
    with pytest.raises(ValueError, match="redis://"):
        Publisher("memory://")
    with pytest.raises(ValueError, match="redis://"):
        SyncPublisher("memory://")
    async with Publisher(URL, prefix=prefix) as publisher:
        with pytest.raises(ValueError, match="Invalid channel"):
            await publisher.publish("bad channel!", 1)


async def test_publisher_events_match_the_nodes_format(make: Any, prefix: str) -> None:
    got = Collector()
    broker = await make(got)
    for channel in ("user:1", "job:5", "job_updates"):
        await broker.subscribe(channel)
    with SyncPublisher(URL, prefix=prefix) as sync:
        results = sync.publish_event(["user:1", "job:5", "job_updates"], {"type": "job_update", "job_id": 5})
    assert [(r["channel"], r["offset"]) for r in results] == [("user:1", 1), ("job:5", 1), ("job_updates", 1)]
    pubs = await got.wait_for(3)
    events = [orjson.loads(p.frame.payload) for p in pubs]
    assert [e["channel"] for e in events] == ["user:1", "job:5", "job_updates"]
    assert len({e["timestamp"] for e in events}) == 1
    assert all(e["type"] == "job_update" and e["offset"] == 1 and e["epoch"] for e in events)


async def test_a_foreign_message_on_a_channel_is_ignored(make: Any, prefix: str) -> None:
    got = Collector()
    broker = await make(got)
    await broker.subscribe("room:f")
    await broker.client.publish(broker.keys.pub("room:f"), b"not a tidings publication")
    pub = await broker.publish("room:f", body("room:f", 1))
    [received] = await got.wait_for(1)
    assert received.frame.payload == pub.frame.payload
    assert broker.info()["disconnects"] == 0


async def test_a_reader_reconnect_replays_every_channel_exactly_once(make: Any, prefix: str) -> None:
    got = Collector()
    a = await make(got)
    b = await make()
    channels = [f"room:r{i}" for i in range(5)]
    for channel in channels:
        await a.subscribe(channel)
        await b.publish(channel, body(channel, 0))
    await got.wait_for(5)
    for client in await b.client.client_list():
        if client["name"] == f"tidings-sub:{prefix}:{a.node_id}":
            await b.client.client_kill_filter(_id=client["id"])
    await b.client.delete(b.keys.meta("room:r4"))  # this one loses its history: a new epoch
    for n in range(1, 4):
        for channel in channels:
            await b.publish(channel, body(channel, n))
    pubs = await got.wait_for(5 + 15)

    async def reconnected() -> bool:
        return bool(a.info()["reconnects"] == 1 and a.healthy)

    await eventually(reconnected)
    for channel in channels:
        offsets = [p.offset for p in pubs if p.channel == channel]
        assert offsets == ([1, 1, 2, 3] if channel == "room:r4" else [1, 2, 3, 4]), (channel, offsets)
    assert len(got.pubs) == 20


async def _die(broker: RedisBroker) -> None:
    """Stop a broker the way ``kill -9`` stops a node: no goodbye, its entries stay in Redis."""
    for task in (broker._beater, broker._reader):
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await broker._drop_sub()
    await broker.client.aclose()


async def test_a_dead_nodes_connections_are_reaped_once_by_one_survivor(make: Any, prefix: str) -> None:
    reports: dict[str, list[ReapedConnection]] = {}

    def handler_for(name: str) -> Callable[[list[ReapedConnection]], Any]:
        async def handle(batch: list[ReapedConnection]) -> None:
            reports.setdefault(name, []).extend(batch)

        return handle

    survivors = [await make(node_lease_ttl=1.0) for _ in range(2)]
    for name, broker in zip("ab", survivors, strict=True):
        broker.on_reaped(handler_for(name))
    dead = RedisBroker(URL, prefix=prefix, node_lease_ttl=1.0)
    await dead.start(lambda pub: None)
    ann, bob = {"user_id": 1, "username": "ann"}, {"user_id": 2, "username": "bob"}
    for i in range(5):
        assert await dead.connection_add(1, f"c{i}", info=ann) == i + 1
    await dead.presence_add("room:a", "c0", ann)
    await dead.presence_add("room:b", "c0", ann)
    await dead.presence_add("room:b", "c1", ann)
    await survivors[0].connection_add(2, "c0", info=bob)
    await survivors[0].presence_add("room:b", "c0", bob)
    assert await survivors[0].connection_add(1, "c9", info=ann) == 6  # over a limit of 5
    await survivors[0].connection_remove(1, "c9")
    assert await survivors[1].stats() == {"users": 2, "connections": 6}

    await _die(dead)
    await eventually(lambda: sum(len(r) for r in reports.values()) == 5, timeout=10)
    await asyncio.sleep(1.0)  # a second survivor's heartbeats found nothing more to handle
    assert len(reports) == 1, reports  # exactly one survivor handled them
    [batch] = reports.values()
    by_conn = {r.conn_id: r for r in batch}
    assert sorted(by_conn) == [f"c{i}" for i in range(5)]
    assert {r.node_id for r in batch} == {dead.node_id} and {r.user_id for r in batch} == {1}
    assert by_conn["c0"].info == ann and sorted(by_conn["c0"].channels) == ["room:a", "room:b"]
    assert by_conn["c1"].channels == ["room:b"] and by_conn["c2"].channels == []
    # ann left room:a (c0) and room:b (with whichever of c0/c1 went second): each leave reported once
    assert sorted(ch for r in batch for ch in r.left) == ["room:a", "room:b"]
    assert await survivors[1].presence("room:b") == [bob]
    assert await survivors[1].presence("room:a") == []
    assert await survivors[1].stats() == {"users": 1, "connections": 1}
    assert await survivors[1].connection_add(1, "c1", info=ann) == 1


async def test_presence_pages_and_counts_without_scanning(make: Any) -> None:
    broker = await make()
    for uid in range(1, 251):
        new, count = await broker.presence_join("room:big", f"c{uid}", {"user_id": uid, "username": f"u{uid}"})
        assert (new, count) == (True, uid)
    assert await broker.presence_join("room:big", "c1000", {"user_id": 7, "username": "u7"}) == (False, 250)
    pages, after = [], 0
    while True:
        page = await broker.presence_page("room:big", after, 100)
        assert page.count == 250
        pages.append([u["user_id"] for u in page.users])
        if page.cursor is None:
            break
        after = page.cursor
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [uid for p in pages for uid in p] == list(range(1, 251))
    assert await broker.presence_leave("room:big", "c7", 7) == (False, 250)  # u7 is still there through c1000
    assert await broker.presence_leave("room:big", "c1000", 7) == (True, 249)
    # join and leave touch a constant number of keys and fields: nothing else in the room is read
    assert await broker.client.hlen(broker.keys.presence("room:big")[0]) == 249


async def test_history_is_bounded_in_bytes(make: Any) -> None:
    broker = await make(history_max_bytes=200_000)
    big = b"x" * 60_000
    pubs = [
        await broker.publish("room:flood", encode({"type": "publication", "data": big.decode()})) for _ in range(10)
    ]
    meta = await broker.client.hgetall(broker.keys.meta("room:flood"))
    assert int(meta[b"b"]) <= 200_000
    assert await broker.client.xlen(broker.keys.hist("room:flood")) == 3
    assert (await broker.client.memory_usage(broker.keys.hist("room:flood"))) < 400_000
    result = await broker.recover("room:flood", 7, pubs[0].epoch)
    assert ([p.offset for p in result.publications], result.recovered) == ([8, 9, 10], True)
    result = await broker.recover("room:flood", 6, pubs[0].epoch)
    assert result.recovered is False  # offset 7 was dropped for the byte bound: honest, not silent
    huge = await broker.publish("room:huge", encode({"data": "y" * 300_000}))
    assert not (await broker.recover("room:huge", 0, huge.epoch)).recovered  # larger than the bound: not kept
    assert await broker.client.xlen(broker.keys.hist("room:huge")) == 0


def test_broker_urls_select_the_deployment() -> None:
    single = parse_broker_url("redis://:pw@h:6380/2")
    assert (single.mode, single.publish_command) == ("redis", "PUBLISH")
    cluster = parse_broker_url("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2")
    assert (cluster.mode, cluster.hosts, cluster.username, cluster.password) == (
        "cluster",
        (("10.0.0.1", 7000), ("10.0.0.2", 6379)),
        "u",
        "p@ss",
    )
    assert cluster.publish_command == "SPUBLISH" and cluster.sharded
    sentinel = parse_broker_url("rediss+sentinel://s1:26380,s2/mymaster/3?sentinel_password=x")
    assert (sentinel.mode, sentinel.tls, sentinel.service, sentinel.db, sentinel.sentinel_password) == (
        "sentinel",
        True,
        "mymaster",
        3,
        "x",
    )
    assert sentinel.hosts == (("s1", 26380), ("s2", 26379))
    for bad, message in [
        ("redis+sentinel://s1:26379", "names its service"),
        ("redis+cluster://h:port", "Bad port"),
        ("redis+cluster://h/1", "only database 0"),
        ("kafka://h", "Unsupported broker URL"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_broker_url(bad)
    with pytest.raises(ValueError, match="redis\\+cluster://"):
        create_broker("kafka://h")
    assert redact_url("redis+cluster://u:secret@h1:1,h2:2") == "redis+cluster://u:***@h1:1,h2:2"
    assert celery_broker("redis://h:1/0") == ("redis://h:1/0", {})
    assert celery_broker("redis+sentinel://:pw@a:1,b:2/svc") == (
        "sentinel://:pw@a:1/0;sentinel://:pw@b:2/0",
        {"master_name": "svc"},
    )
    assert celery_broker("redis+cluster://a:1") is None
