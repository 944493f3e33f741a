"""Durable channel history: what is stored, what a replay after a position says, trimming, and the HTTP view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tidings.broker import MemoryBroker
from tidings.db import Database
from tidings.durable_history import DurableHistory, DurableHistoryBroker
from tidings.protocol import encode


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")
    await database.migrate()
    await database.migrate("platform@head")  # channel_messages lives on the platform branch (0004)
    yield database
    await database.dispose()


def body(n: int) -> bytes:
    return encode({"type": "publication", "data": {"n": n}, "timestamp": 1.0})


async def test_only_durable_namespaces_are_stored_and_survive_a_new_broker(db: Database) -> None:
    history = DurableHistory(db, ["room"], keep=100)
    first = DurableHistoryBroker(MemoryBroker(), history)
    await first.start(lambda pub: None)
    for n in (1, 2):
        await first.publish("room:a", body(n))
    await first.publish("property_updates", body(9))
    assert [m["data"]["n"] for m in (await history.latest("room:a", 10)).messages] == [1, 2]
    assert (await history.latest("property_updates", 10)).messages == []
    old_epoch = (await first.position("room:a"))[1]

    second = DurableHistoryBroker(MemoryBroker(), history)  # "a restart": a new memory broker, a new epoch
    await second.start(lambda pub: None)
    assert not (await second.recover("room:a", 2, old_epoch)).recovered  # the stream itself could not be replayed
    await second.publish("room:a", body(3))
    replay = await history.after("room:a", old_epoch, 2, 10)  # ... but the stored history can
    assert [m["data"]["n"] for m in replay.messages] == [3] and replay.complete and replay.missing == 0
    replay = await history.after("room:a", old_epoch, 1, 10)
    assert [m["data"]["n"] for m in replay.messages] == [2, 3] and replay.complete
    assert [(m["offset"], m["epoch"] == old_epoch) for m in replay.messages] == [(2, True), (1, False)]
    truncated = await history.after("room:a", old_epoch, 1, 1)
    assert [m["data"]["n"] for m in truncated.messages] == [2] and not truncated.complete
    unknown = await history.after("room:a", "gone-epoch", 5, 10)
    assert not unknown.complete and [m["data"]["n"] for m in unknown.messages] == [1, 2, 3]


async def test_trimmed_history_cannot_replay_from_a_position_it_no_longer_has(db: Database) -> None:
    history = DurableHistory(db, ["room"], keep=3)
    broker = DurableHistoryBroker(MemoryBroker(), history)
    await broker.start(lambda pub: None)
    for n in range(1, 8):
        await broker.publish("room:t", body(n))
    await history.trim("room:t")
    assert [m["data"]["n"] for m in (await history.latest("room:t", 10)).messages] == [5, 6, 7]
    epoch = (await broker.position("room:t"))[1]
    replay = await history.after("room:t", epoch, 2, 10)
    assert not replay.complete


async def test_a_publication_that_could_not_be_stored_shows_as_missing(db: Database) -> None:
    history = DurableHistory(db, ["room"], keep=100)
    broker = DurableHistoryBroker(MemoryBroker(), history)
    await broker.start(lambda pub: None)
    await broker.publish("room:g", body(1))
    await db.dispose()
    history.db = Database("sqlite+aiosqlite:////nonexistent-dir/x.db")  # the database is gone for a moment
    await broker.publish("room:g", body(2))  # still published; not stored
    assert history.failures == 1
    history.db = db
    await broker.publish("room:g", body(3))
    epoch = (await broker.position("room:g"))[1]
    replay = await history.after("room:g", epoch, 1, 10)
    assert [m["data"]["n"] for m in replay.messages] == [3] and replay.missing == 1


def test_history_endpoint_reads_rooms_from_the_database_after_a_restart(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('ann')}"}
    admin = server.admin_headers()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for n in (1, 2):
            http.post("/api/publish", json={"channel": "room:h", "data": {"n": n}}, headers=admin).raise_for_status()
            http.post("/api/publish", json={"channel": "property_updates", "data": {"n": n}}, headers=admin)
        before = http.get("/api/history/room:h", headers=headers).json()
        assert before["durable"] is True and [m["data"]["n"] for m in before["messages"]] == [1, 2]
        assert all(isinstance(m["timestamp"], float) for m in before["messages"])
    server.stop()
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        after = http.get("/api/history/room:h", headers=headers).json()
        assert after["messages"] == before["messages"]  # the same messages, offsets, epochs and times
        assert after["epoch"] != before["epoch"]
        since = {"since_epoch": before["epoch"], "since_offset": 1}
        replay = http.get("/api/history/room:h", params=since, headers=headers).json()
        assert [m["data"]["n"] for m in replay["messages"]] == [2] and replay["complete"] is True
        gone = http.get("/api/history/property_updates", headers=headers).json()
        assert gone["durable"] is False and gone["messages"] == []  # the memory broker's history did not survive
        since = {"since_epoch": before["epoch"], "since_offset": 2}
        lost = http.get("/api/history/property_updates", params=since, headers=headers).json()
        assert lost["complete"] is False
        half = http.get("/api/history/room:h", params={"since_epoch": "x"}, headers=headers)
        assert half.status_code == 422
