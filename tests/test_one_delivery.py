"""One delivery per connection: an event published on several channels at once reaches each connection once, as
the copy of the first listed channel it is subscribed to (live and on recovery)."""

from __future__ import annotations

import orjson

from tidings.broker import MemoryBroker, Publication
from tidings.hub import Hub
from tidings.messages import event_body

CHANNELS = ["user:7", "job:42", "job_updates"]


class FakeConn:
    """Just what the hub touches: an id, a user id, subscriptions and a frame sink."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.subscriptions: set[str] = set()
        self.got: list[dict[str, object]] = []

        class User:
            id = 7

        self.user = User()

    def enqueue(self, frame: object) -> None:
        self.got.append(orjson.loads(frame.payload))  # type: ignore[attr-defined]

    enqueue_unchecked = enqueue  # the hub's fan-out (it hands out a deferred fan-out itself first)


async def _publish_event(broker: MemoryBroker) -> list[Publication]:
    event = {"type": "job_update", "event": "job_progress", "job_id": 42}
    return [await broker.publish(ch, event_body(event, ch, CHANNELS)) for ch in CHANNELS]


async def test_each_connection_gets_one_copy_naming_its_first_channel() -> None:
    hub = Hub()
    broker = MemoryBroker()
    await broker.start(hub.deliver)
    owner, watcher, admin = FakeConn("owner"), FakeConn("watcher"), FakeConn("admin")
    for conn, channels in ((owner, CHANNELS), (watcher, ["job:42", "job_updates"]), (admin, ["job_updates"])):
        hub.add(conn)  # type: ignore[arg-type]
        for ch in channels:
            hub.subscribe(conn, ch)  # type: ignore[arg-type]
            await broker.subscribe(ch)
    await _publish_event(broker)
    assert [m["channel"] for m in owner.got] == ["user:7"]
    assert [m["channel"] for m in watcher.got] == ["job:42"]
    assert [m["channel"] for m in admin.got] == ["job_updates"]
    assert owner.got[0]["copies"] == CHANNELS
    assert hub.deliveries == 3


async def test_recovery_follows_the_same_rule() -> None:
    hub = Hub()
    broker = MemoryBroker()
    await broker.start(hub.deliver)
    pubs = await _publish_event(broker)
    conn = FakeConn("late")
    hub.add(conn)  # type: ignore[arg-type]
    hub.subscribe(conn, "user:7", recovering=True)  # type: ignore[arg-type]
    hub.finish_recovery(conn, "user:7", [pubs[0]], 0)  # type: ignore[arg-type]
    hub.subscribe(conn, "job_updates", recovering=True)  # type: ignore[arg-type]
    last = hub.finish_recovery(conn, "job_updates", [pubs[2]], 0)  # type: ignore[arg-type]
    assert [m["channel"] for m in conn.got] == ["user:7"]  # the job_updates copy is not replayed
    assert last == pubs[2].offset  # but the position still moves past it


async def test_single_channel_events_have_no_copies() -> None:
    body = event_body({"type": "join"}, "room:a")
    assert b"copies" not in body
