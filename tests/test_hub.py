"""Unit tests of the hub and connections with an in-memory transport, and of the node on a memory broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tidings.broker import BrokerUnavailable, MemoryBroker, Publication
from tidings.channels import ChannelRules, Namespace
from tidings.connection import Connection, ConnectionState, UserInfo
from tidings.handout import DEFER_MIN
from tidings.hub import Hub
from tidings.node import Node
from tidings.protocol import CloseCode, Frame
from tidings.settings import Settings

ANN = UserInfo(1, "ann")
BOB = UserInfo(2, "bob")
ADMIN = UserInfo(3, "root", "admin")


def app_rules() -> ChannelRules:
    """The channels an application declares (the hub itself knows only broadcast, admins and user:<id>)."""
    rules = ChannelRules()
    rules.declare("property_updates", Namespace(argument=False))
    rules.declare("job_updates", Namespace(argument=False, own_events_alias=True))
    rules.declare("room", Namespace(publish="clients", presence=True))
    return rules


class FakeTransport:
    """Records what a connection writes; ``send`` waits on ``gate`` (cleared = a client that does not read)."""

    def __init__(self, *, direct: bool = False, fail: bool = False, idle: bool = False) -> None:
        self.direct = direct
        self.fail = fail
        self.idle = idle  # nothing waits to be written: the hub may defer a large fan-out (write_now)
        self.gate = asyncio.Event()
        self.gate.set()
        self.events: list[tuple[str, Any]] = []
        self.aborted = False
        self.try_writes = 0
        self.now_writes = 0
        self.sends = 0
        self.noted: list[int] = []

    @property
    def frames(self) -> list[Frame]:
        return [value for kind, value in self.events if kind == "frame"]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(f.payload) for f in self.frames]

    @property
    def closed(self) -> tuple[int, str] | None:
        closes = [value for kind, value in self.events if kind == "close"]
        assert len(closes) <= 1, closes
        return closes[0] if closes else None

    def try_write(self, frame: Frame) -> bool:
        self.try_writes += 1
        if self.direct:
            self.events.append(("frame", frame))
        return self.direct

    def write_now(self, frame: Frame) -> bool:
        if self.direct and self.idle:
            self.now_writes += 1
            self.events.append(("frame", frame))
            return True
        return False

    def write_idle(self) -> bool:
        return self.idle

    def note_writes(self, writes: int, seconds: float) -> None:
        self.noted.append(writes)

    async def send(self, frames: Sequence[Frame]) -> None:
        self.sends += 1
        await self.gate.wait()
        if self.fail:
            raise ConnectionResetError("peer gone")
        self.events.extend(("frame", f) for f in frames)

    async def close(self, code: int, reason: str) -> None:
        self.events.append(("close", (code, reason)))

    def abort(self) -> None:
        self.aborted = True


async def settle(condition: Callable[[], bool] | None = None, rounds: int = 200) -> None:
    """Let other tasks run until ``condition`` holds (or a bounded number of loop iterations pass)."""
    for _ in range(rounds):
        if condition is not None and condition():
            return
        await asyncio.sleep(0)
    if condition is not None:
        assert condition(), "condition never became true"


def state(conn: Connection) -> ConnectionState:
    """The state, read through a call (so that type checkers do not narrow it between assertions)."""
    return conn.state


def frame(n: int) -> Frame:
    return Frame.of({"type": "publication", "n": n})


def pub(channel: str, offset: int) -> Publication:
    return Publication(channel, offset, "ep", Frame.of({"type": "publication", "channel": channel, "offset": offset}))


def numbers(transport: FakeTransport, key: str = "n") -> list[int]:
    return [m[key] for m in transport.messages]


# ---- Connection: enqueue and the writer -------------------------------------------------------------------


async def test_enqueue_writes_directly_when_the_transport_can_take_it() -> None:
    transport = FakeTransport(direct=True)
    conn = Connection(ANN, transport)
    conn.enqueue(frame(1))
    assert numbers(transport) == [1]
    assert conn.queued == 0
    assert transport.sends == 0


async def test_enqueue_queues_without_awaiting_and_the_writer_sends_in_order() -> None:
    transport = FakeTransport()
    conn = Connection(ANN, transport)
    for n in range(10):
        conn.enqueue(frame(n))
    assert conn.queued == 10  # enqueue is synchronous: nothing was written yet
    assert transport.frames == []
    await settle(lambda: len(transport.frames) == 10)
    assert numbers(transport) == list(range(10))
    assert conn.queued == 0


async def test_frames_queued_behind_others_keep_their_order() -> None:
    transport = FakeTransport()
    transport.gate.clear()
    conn = Connection(ANN, transport)
    conn.enqueue(frame(1))  # queued: the transport refuses direct writes
    transport.direct = True
    conn.enqueue(frame(2))  # must not overtake frame 1 through try_write
    assert transport.frames == []
    transport.gate.set()
    await settle(lambda: len(transport.frames) == 2)
    assert numbers(transport) == [1, 2]


async def test_send_encodes_a_message_for_one_connection() -> None:
    transport = FakeTransport(direct=True)
    Connection(ANN, transport).send({"type": "pong", "timestamp": 1.5})
    assert transport.messages == [{"type": "pong", "timestamp": 1.5}]


async def test_overflow_disconnects_with_4000_and_drops_the_queue() -> None:
    transport = FakeTransport()
    transport.gate.clear()  # a client that never reads
    slow: list[Connection] = []
    conn = Connection(ANN, transport, queue_max=3, on_slow=slow.append)
    conn.enqueue(frame(0))
    await settle(lambda: transport.sends == 1)  # the writer holds frame 0 and is blocked on the socket
    for n in range(1, 4):
        conn.enqueue(frame(n))
    assert conn.queued == 3
    assert state(conn) is ConnectionState.OPEN
    conn.enqueue(frame(4))  # one too many
    assert slow == [conn]
    assert transport.aborted
    assert state(conn) is ConnectionState.CLOSING
    assert conn.close_code == CloseCode.SLOW_CONSUMER
    assert int(CloseCode.SLOW_CONSUMER) == 4000
    assert conn.queued == 0
    await conn.wait_closed()
    assert state(conn) is ConnectionState.CLOSED
    assert transport.closed == (4000, "Slow consumer: outbound queue overflow")
    assert transport.frames == []  # nothing queued was written after the overflow
    conn.enqueue(frame(5))
    assert conn.queued == 0 and transport.frames == []


async def test_overflow_before_the_writer_ran() -> None:
    transport = FakeTransport()
    conn = Connection(ANN, transport, queue_max=2)
    for n in range(3):
        conn.enqueue(frame(n))
    await conn.wait_closed()
    assert transport.closed is not None and transport.closed[0] == 4000
    assert transport.frames == []


async def test_queue_bound_is_exact() -> None:
    transport = FakeTransport()
    transport.gate.clear()
    conn = Connection(ANN, transport, queue_max=5)
    for n in range(5):
        conn.enqueue(frame(n))
    assert state(conn) is ConnectionState.OPEN and conn.queued == 5
    transport.gate.set()
    await settle(lambda: len(transport.frames) == 5)
    assert numbers(transport) == [0, 1, 2, 3, 4]
    assert transport.closed is None


async def test_close_flushes_queued_frames_before_the_close_frame() -> None:
    transport = FakeTransport()
    transport.gate.clear()
    conn = Connection(ANN, transport)
    conn.enqueue(frame(1))
    conn.enqueue(frame(2))
    conn.close(1001, "bye")
    conn.close(1000, "ignored: already closing")
    assert state(conn) is ConnectionState.CLOSING
    conn.enqueue(frame(3))  # after close: dropped
    transport.gate.set()
    await conn.wait_closed()
    assert state(conn) is ConnectionState.CLOSED
    assert [kind for kind, _ in transport.events] == ["frame", "frame", "close"]
    assert numbers(transport) == [1, 2]
    assert transport.closed == (1001, "bye")
    assert (conn.close_code, conn.close_reason) == (1001, "bye")


async def test_a_failed_write_marks_the_connection_closed() -> None:
    transport = FakeTransport(fail=True)
    conn = Connection(ANN, transport)
    conn.enqueue(frame(1))
    await settle(lambda: conn.state is ConnectionState.CLOSED)
    conn.enqueue(frame(2))
    assert conn.queued == 0


async def test_mark_closed_stops_the_writer() -> None:
    transport = FakeTransport()
    transport.gate.clear()
    conn = Connection(ANN, transport)
    conn.enqueue(frame(1))
    conn.enqueue(frame(2))
    conn.mark_closed()
    assert state(conn) is ConnectionState.CLOSED and conn.queued == 0
    transport.gate.set()
    await settle()
    assert transport.frames == []


async def test_rate_limit_token_bucket() -> None:
    conn = Connection(ANN, FakeTransport(), rate=0.001, rate_burst=3)
    before = conn.last_activity
    assert [conn.allow_message() for _ in range(4)] == [True, True, True, False]
    assert conn.last_activity >= before


def test_user_info() -> None:
    assert ADMIN.is_admin and not ANN.is_admin
    assert ANN.public() == {"user_id": 1, "username": "ann"}


# ---- Hub: registry ----------------------------------------------------------------------------------------


async def test_hub_registry_by_user() -> None:
    hub = Hub()
    a1, a2, b1 = Connection(ANN, FakeTransport()), Connection(ANN, FakeTransport()), Connection(BOB, FakeTransport())
    for conn in (a1, a2, b1):
        hub.add(conn)
    assert hub.user_connection_count(1) == 2 and hub.user_connection_count(2) == 1
    assert hub.user_connection_count(99) == 0
    hub.remove(a1)
    assert hub.user_connection_count(1) == 1
    hub.remove(a2)
    assert 1 not in hub.by_user
    assert set(hub.connections) == {b1.id}


async def test_hub_subscribe_reports_first_and_last_local_subscriber() -> None:
    hub = Hub()
    a, b = Connection(ANN, FakeTransport()), Connection(BOB, FakeTransport())
    hub.add(a)
    hub.add(b)
    assert hub.subscribe(a, "room:x") is True
    assert hub.subscribe(b, "room:x") is False
    assert hub.subscribe(a, "room:x") is False  # again: idempotent
    assert hub.unsubscribe(a, "room:x") is False
    assert hub.unsubscribe(a, "room:never") is False
    assert hub.unsubscribe(b, "room:x") is True
    assert "room:x" not in hub.subscribers
    assert a.subscriptions == set() and b.subscriptions == set()


async def test_hub_remove_returns_the_channels_left_without_subscribers() -> None:
    hub = Hub()
    a, b = Connection(ANN, FakeTransport()), Connection(BOB, FakeTransport())
    hub.add(a)
    hub.add(b)
    for ch in ("shared", "only-a", "only-a-2"):
        hub.subscribe(a, ch)
    hub.subscribe(b, "shared")
    assert sorted(hub.remove(a)) == ["only-a", "only-a-2"]
    assert a.subscriptions == set()
    assert list(hub.subscribers) == ["shared"]


# ---- Hub: delivery ----------------------------------------------------------------------------------------


async def test_deliver_hands_the_same_frame_object_to_every_connection() -> None:
    hub = Hub()
    transports = [FakeTransport(direct=True) for _ in range(5)]
    conns = [Connection(UserInfo(i, f"u{i}"), t) for i, t in enumerate(transports)]
    for conn in conns:
        hub.add(conn)
        hub.subscribe(conn, "news")
    outsider = FakeTransport(direct=True)
    hub.add(Connection(UserInfo(99, "out"), outsider))
    p = pub("news", 1)
    hub.deliver(p)
    for t in transports:
        assert len(t.frames) == 1
        assert t.frames[0] is p.frame  # encoded once, shared by all
    assert outsider.frames == []
    assert (hub.publications_delivered, hub.deliveries) == (1, 5)


async def test_deliver_shares_the_frame_with_queued_connections_too() -> None:
    hub = Hub()
    transports = [FakeTransport() for _ in range(3)]
    for i, t in enumerate(transports):
        conn = Connection(UserInfo(i, f"u{i}"), t)
        hub.add(conn)
        hub.subscribe(conn, "news")
    p = pub("news", 1)
    hub.deliver(p)
    await settle(lambda: all(t.frames for t in transports))
    assert all(t.frames == [p.frame] and t.frames[0] is p.frame for t in transports)


async def test_deliver_to_a_channel_without_subscribers_is_a_no_op() -> None:
    hub = Hub()
    hub.deliver(pub("empty", 1))
    assert (hub.publications_delivered, hub.deliveries) == (0, 0)


async def test_recovery_holds_live_publications_until_history_was_sent() -> None:
    hub = Hub()
    live_t, rec_t = FakeTransport(direct=True), FakeTransport(direct=True)
    live, rec = Connection(ANN, live_t), Connection(BOB, rec_t)
    for conn in (live, rec):
        hub.add(conn)
    hub.subscribe(live, "room:x")
    hub.subscribe(rec, "room:x", recovering=True)
    p = {n: pub("room:x", n) for n in range(1, 8)}
    hub.deliver(p[4])  # arrive while rec's history is being read
    hub.deliver(p[5])
    assert numbers(live_t, "offset") == [4, 5]
    assert rec_t.frames == []
    # history read from the broker overlaps the held publications (4) and starts before `since` (1)
    last = hub.finish_recovery(rec, "room:x", [p[1], p[2], p[3], p[4]], since=1)
    assert last == 5
    assert numbers(rec_t, "offset") == [2, 3, 4, 5]  # each offset once, in order
    hub.deliver(p[6])  # live again
    assert numbers(rec_t, "offset") == [2, 3, 4, 5, 6]
    assert "room:x" not in hub._recovering


async def test_finish_recovery_with_nothing_new_returns_since() -> None:
    hub = Hub()
    t = FakeTransport(direct=True)
    conn = Connection(ANN, t)
    hub.add(conn)
    hub.subscribe(conn, "c", recovering=True)
    assert hub.finish_recovery(conn, "c", [pub("c", 1), pub("c", 2)], since=2) == 2
    assert t.frames == []
    hub.deliver(pub("c", 3))
    assert numbers(t, "offset") == [3]


async def test_held_publications_older_than_history_are_not_repeated() -> None:
    hub = Hub()
    t = FakeTransport(direct=True)
    conn = Connection(ANN, t)
    hub.add(conn)
    hub.subscribe(conn, "c", recovering=True)
    hub.deliver(pub("c", 3))
    hub.deliver(pub("c", 4))
    assert hub.finish_recovery(conn, "c", [pub("c", 2), pub("c", 3), pub("c", 4)], since=0) == 4
    assert numbers(t, "offset") == [2, 3, 4]


async def test_unsubscribe_or_remove_during_recovery_forgets_held_publications() -> None:
    hub = Hub()
    t = FakeTransport(direct=True)
    conn = Connection(ANN, t)
    hub.add(conn)
    hub.subscribe(conn, "c", recovering=True)
    hub.deliver(pub("c", 1))
    hub.unsubscribe(conn, "c")
    assert hub._recovering == {}
    hub.subscribe(conn, "c")
    hub.deliver(pub("c", 2))
    assert numbers(t, "offset") == [2]
    hub.subscribe(conn, "d", recovering=True)
    hub.remove(conn)
    assert hub._recovering == {} and hub.subscribers == {}


# ---- Hub: a large fan-out on an idle node is handed out in the next pass, socket by socket --------------


def fan_out_hub(n: int = DEFER_MIN, *, idle: bool = True) -> tuple[Hub, list[Connection], list[FakeTransport]]:
    """``n`` connections subscribed to "news", their transports taking frames at once (``idle``: and able to
    write a deferred fan-out as it is handed out)."""
    hub = Hub()
    transports = [FakeTransport(direct=True, idle=idle) for _ in range(n)]
    conns = [Connection(UserInfo(i, f"u{i}"), t) for i, t in enumerate(transports)]
    for conn in conns:
        hub.add(conn)
        hub.subscribe(conn, "news")
    return hub, conns, transports


async def test_an_idle_node_writes_a_large_fan_out_as_it_hands_it_out_in_the_next_pass() -> None:
    hub, _, transports = fan_out_hub()
    p = pub("news", 1)
    hub.deliver(p)
    assert all(t.events == [] and t.try_writes == 0 for t in transports)  # nothing handed out yet
    await asyncio.sleep(0)
    assert all(t.frames == [p.frame] and t.frames[0] is p.frame and t.now_writes == 1 for t in transports)
    assert all(t.try_writes == 0 for t in transports)
    assert transports[0].noted == [DEFER_MIN]  # counted as one flush of DEFER_MIN writes
    assert hub.handouts.deferred == 1 and (hub.publications_delivered, hub.deliveries) == (1, DEFER_MIN)


async def test_small_fan_outs_and_a_busy_node_hand_out_at_once() -> None:
    for hub, transports in (fan_out_hub(DEFER_MIN - 1)[::2], fan_out_hub(idle=False)[::2]):
        hub.deliver(pub("news", 1))
        assert all(t.try_writes == 1 and t.now_writes == 0 and len(t.frames) == 1 for t in transports)
        assert hub.handouts.pending is None


async def test_a_message_to_a_recipient_in_the_same_pass_goes_after_the_deferred_frame() -> None:
    hub, conns, transports = fan_out_hub()
    hub.deliver(pub("news", 1))
    conns[3].send({"type": "pong", "n": 2})  # a reply to one recipient, before the deferred pass
    # the fan-out was handed out first, the usual way (taken for the next coalesced write), then the reply
    assert [m.get("offset", m.get("n")) for m in transports[3].messages] == [1, 2]
    assert all(t.try_writes >= 1 and t.now_writes == 0 for t in transports)
    await asyncio.sleep(0)
    assert all(len(t.frames) == (2 if i == 3 else 1) for i, t in enumerate(transports))  # nothing twice
    assert hub.handouts.deferred == 0


async def test_a_second_publication_in_the_same_pass_follows_the_first_everywhere() -> None:
    hub, _, transports = fan_out_hub()
    hub.deliver(pub("news", 1))
    hub.deliver(pub("news", 2))
    await asyncio.sleep(0)
    assert all(numbers(t, "offset") == [1, 2] for t in transports)
    assert all(t.now_writes == 0 for t in transports)  # both coalesced, as without deferral


async def test_a_close_in_the_same_pass_comes_after_the_deferred_frame() -> None:
    hub, conns, transports = fan_out_hub()
    hub.deliver(pub("news", 1))
    conns[0].close(CloseCode.NORMAL, "bye")
    await conns[0].wait_closed()
    assert transports[0].events == [("frame", transports[0].frames[0]), ("close", (CloseCode.NORMAL, "bye"))]
    assert numbers(transports[0], "offset") == [1]


async def test_the_deferred_fan_out_goes_to_the_subscribers_of_delivery_time() -> None:
    hub, conns, transports = fan_out_hub()
    late_t = FakeTransport(direct=True, idle=True)
    late = Connection(UserInfo(500, "late"), late_t)
    hub.add(late)
    hub.deliver(pub("news", 1))
    hub.unsubscribe(conns[0], "news")  # subscribed when it was published: still receives it
    hub.subscribe(late, "news")  # subscribed after: does not
    conns[1].mark_closed()  # gone: nothing written
    await asyncio.sleep(0)
    assert numbers(transports[0], "offset") == [1]
    assert late_t.frames == [] and transports[1].frames == []
    assert all(numbers(t, "offset") == [1] for t in transports[2:])


async def test_a_socket_failing_in_the_deferred_pass_does_not_hold_the_others_back() -> None:
    hub, _, transports = fan_out_hub()

    def broken(frame: Frame) -> bool:
        raise ConnectionResetError("peer gone")

    transports[2].write_now = broken  # type: ignore[method-assign]
    hub.deliver(pub("news", 1))
    await asyncio.sleep(0)
    assert all(numbers(t, "offset") == [1] for i, t in enumerate(transports) if i != 2)
    assert transports[2].frames == [] and transports[0].noted == [DEFER_MIN - 1]


async def test_a_recipient_with_queued_frames_gets_the_deferred_one_after_them() -> None:
    hub, conns, transports = fan_out_hub()
    slow = transports[5]
    slow.direct = False
    slow.gate.clear()  # a client that does not read: frames wait in its connection's queue
    conns[5].send({"type": "pong", "n": 0})
    await settle(lambda: slow.sends == 1)
    hub.deliver(pub("news", 1))
    await asyncio.sleep(0)
    assert conns[5].queued == 1  # behind the frame being sent, not written around it
    slow.gate.set()
    await settle(lambda: len(slow.frames) == 2)
    assert [m.get("offset", m.get("n")) for m in slow.messages] == [0, 1]


# ---- Node on a memory broker: publish once, job events for workers ---------------------------------------


@pytest.fixture
async def node(tmp_path: Any) -> Any:
    settings = Settings(data_dir=tmp_path, secret_key="k" * 32)
    async with Node(settings, broker=MemoryBroker(), rules=app_rules()) as n:
        yield n


async def test_node_publish_reaches_subscribers_with_one_shared_frame(node: Node) -> None:
    transports = [FakeTransport(direct=True) for _ in range(3)]
    conns = [await node.connect(UserInfo(10 + i, f"u{i}"), t) for i, t in enumerate(transports)]
    other = FakeTransport(direct=True)
    await node.connect(UserInfo(20, "other"), other)
    for conn in conns:
        await node.handle(conn, '{"type": "subscribe", "subscription": "property_updates"}')
    pub1 = await node.publish("property_updates", {"price": 1})
    pub2 = await node.publish("property_updates", {"price": 2})
    for t in transports:
        pubs = [f for f in t.frames if json.loads(f.payload)["type"] == "publication"]
        assert pubs[0] is pub1.frame and pubs[1] is pub2.frame
        base = {"type": "publication", "channel": "property_updates", "epoch": pub1.epoch}
        decoded = [json.loads(f.payload) for f in pubs]
        assert all(isinstance(m.pop("timestamp"), float) for m in decoded)  # the server's time of publication
        assert decoded == [
            {**base, "data": {"price": 1}, "offset": 1},
            {**base, "data": {"price": 2}, "offset": 2},
        ]
    assert all(m["type"] != "publication" for m in other.messages)


async def test_node_job_events_reach_the_owner_and_admins(node: Node) -> None:
    owner_t, admin_t, stranger_t = (FakeTransport(direct=True) for _ in range(3))
    owner = await node.connect(ANN, owner_t)
    admin = await node.connect(ADMIN, admin_t)
    await node.connect(BOB, stranger_t)
    await node.handle(owner, '{"type": "subscribe", "subscription": "job_updates", "id": 1}')
    await node.handle(admin, '{"type": "subscribe", "subscription": "job_updates", "id": 1}')
    confirmed = [m for m in owner_t.messages if m["type"] == "subscription_confirmed"]
    assert confirmed == [{"type": "subscription_confirmed", "subscription": "job_updates", "scope": "user:1", "id": 1}]
    event = {"type": "job_update", "event": "job_started", "job_id": 5, "items_scraped": 0, "status": "running"}
    pubs = await node.publish_event(["user:1", "job:5", "job_updates"], event)
    assert [p.channel for p in pubs] == ["user:1", "job:5", "job_updates"]
    owner_jobs = [m for m in owner_t.messages if m["type"] == "job_update"]
    admin_jobs = [m for m in admin_t.messages if m["type"] == "job_update"]
    assert len(owner_jobs) == 1 and owner_jobs[0]["channel"] == "user:1"  # once, on the user's own channel
    assert len(admin_jobs) == 1 and admin_jobs[0]["channel"] == "job_updates"
    for msg in owner_jobs + admin_jobs:
        assert {"event": "job_started", "job_id": 5, "status": "running"}.items() <= msg.items()
        assert {"timestamp", "offset", "epoch"} <= msg.keys()
    assert not [m for m in stranger_t.messages if m["type"] == "job_update"]


async def test_node_send_to_user_reaches_every_connection_of_that_user(node: Node) -> None:
    mine = [FakeTransport(direct=True) for _ in range(2)]
    for t in mine:
        await node.connect(ANN, t)
    theirs = FakeTransport(direct=True)
    await node.connect(BOB, theirs)
    await node.send_to_user(ANN.id, {"type": "job_update", "event": "job_completed", "job_id": 1})
    for t in mine:
        assert [m["event"] for m in t.messages if m["type"] == "job_update"] == ["job_completed"]
    assert not [m for m in theirs.messages if m["type"] == "job_update"]


async def test_node_close_closes_every_connection_with_1001(node: Node) -> None:
    transports = [FakeTransport(direct=True) for _ in range(3)]
    for t in transports:
        await node.connect(ANN, t)
    await node.close()
    assert [t.closed for t in transports] == [(1001, "Server shutting down")] * 3


async def test_node_subscription_limit(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="k" * 32, max_subscriptions=4)
    async with Node(settings, broker=MemoryBroker(), rules=app_rules()) as node:
        t = FakeTransport(direct=True)
        conn = await node.connect(ANN, t)  # broadcast and user:1 count towards the limit
        for channel in ("room:a", "room:b", "room:c"):
            await node.handle(conn, json.dumps({"type": "subscribe", "subscription": channel}))
        replies = [m for m in t.messages if m["type"].startswith("subscription")]
        assert [m["type"] for m in replies] == ["subscription_confirmed"] * 2 + ["subscription_error"]
        assert replies[-1]["code"] == "too_many_subscriptions" and replies[-1]["subscription"] == "room:c"
        assert conn.subscriptions == {"broadcast", "user:1", "room:a", "room:b"}


class DownBroker(MemoryBroker):
    """A broker that lost its connection: publishing fails loudly."""

    async def publish(self, channel: str, body: bytes) -> Publication:
        raise BrokerUnavailable("down")


async def test_node_reports_an_unavailable_broker_to_the_client(tmp_path: Any) -> None:
    async with Node(Settings(data_dir=tmp_path, secret_key="k" * 32), broker=DownBroker(), rules=app_rules()) as node:
        t = FakeTransport(direct=True)
        conn = await node.connect(ANN, t)
        await node.handle(conn, '{"type": "publish", "channel": "room:a", "data": 1, "id": 9}')
        assert t.messages[-1] == {
            "type": "error",
            "code": "unavailable",
            "message": "Broker unavailable; try again shortly",
            "id": 9,
        }
        await node.handle(conn, '{"type": "ping"}')
        assert t.messages[-1]["type"] == "pong"
