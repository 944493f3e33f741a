"""Durable channel history: the publications of chosen namespaces (``room:*`` by default) kept in the database.

The broker's history is what subscriptions recover from; with the default in-memory broker it lives in the
process and a restart loses it (a new epoch). Chat rooms are a product feature, not a cache, so every publication
on a durable channel is also written to the platform's database (SQLite by default, table ``channel_messages``)
before the publisher's call returns (the ``publish_ack`` of a chat message means "stored"). The dashboard's
backlog (``GET /api/history/{channel}``) reads it, so a room shows its last messages after any restart, and a page
that lost its stream in a restart asks what came after its last position and is told whether the stored history
could replay all of it (``complete``) and how many messages it could not (``missing``).

:class:`DurableHistoryBroker` wraps any :class:`~tidings.broker.Broker`: publishing on a durable channel stores the
publication (its frame exactly as subscribers received it, with offset and epoch); everything else is delegated.
Which channels are durable: ``TIDINGS_DURABLE_CHANNELS`` (namespaces, comma-separated; default ``room``); how many
messages a channel keeps: ``TIDINGS_DURABLE_HISTORY_SIZE`` (default 1000).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, delete, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from tidings.broker import Broker, HistoryResult, Publication, PublicationHandler
from tidings.connection import UserId
from tidings.db import Database
from tidings.db.models import Base, utcnow

__all__ = ["ChannelMessage", "DurableHistory", "DurableHistoryBroker", "Replay"]

logger = logging.getLogger("tidings.durable_history")

#: Trim a channel's stored history every this many stores (not on every publication).
TRIM_EVERY = 50


class ChannelMessage(Base):
    """One publication of a durable channel, as its subscribers received it (migration ``0003``)."""

    __tablename__ = "channel_messages"
    __table_args__ = (UniqueConstraint("channel", "epoch", "offset", name="uq_channel_messages_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(128), index=True)
    epoch: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


_INSERT = insert(ChannelMessage)


@dataclass(slots=True)
class Replay:
    """What the stored history holds after a position: the messages (oldest first) and whether that is all.

    ``complete`` is False when the position is no longer (or was never) in the stored history, or when more
    messages followed it than were asked for; ``missing`` counts the gaps in the offsets returned (publications
    whose storing failed)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    missing: int = 0


class DurableHistory:
    """Stores and reads the history of durable channels in a :class:`~tidings.db.Database`."""

    def __init__(self, db: Database, namespaces: Iterable[str] = ("room",), keep: int = 1000) -> None:
        self.db = db
        self.namespaces = frozenset(ns.strip() for ns in namespaces if ns.strip())
        self.keep = max(1, keep)
        self.failures = 0
        self._since_trim: dict[str, int] = {}

    def durable(self, channel: str) -> bool:
        """Whether ``channel``'s publications are stored (its namespace, or the whole name, is listed)."""
        return channel.partition(":")[0] in self.namespaces

    async def store(self, pub: Publication) -> None:
        """Keep one publication (and trim the channel to ``keep`` messages now and then)."""
        row = {"channel": pub.channel, "epoch": pub.epoch, "offset": pub.offset, "payload": pub.frame.text}
        async with self.db.engine.begin() as conn:  # a plain INSERT: no ORM unit of work per publication
            await conn.execute(_INSERT, row)
        count = self._since_trim.get(pub.channel, 0) + 1
        self._since_trim[pub.channel] = count
        if count >= TRIM_EVERY:
            self._since_trim[pub.channel] = 0
            await self.trim(pub.channel)

    async def trim(self, channel: str) -> None:
        """Delete all but the newest ``keep`` messages of ``channel``."""
        async with self.db.session() as session:
            query = (
                select(ChannelMessage.id)
                .where(ChannelMessage.channel == channel)
                .order_by(ChannelMessage.id.desc())
                .offset(self.keep - 1)
                .limit(1)
            )
            oldest_kept = (await session.execute(query)).scalar_one_or_none()
            if oldest_kept is not None:
                await session.execute(
                    delete(ChannelMessage).where(ChannelMessage.channel == channel, ChannelMessage.id < oldest_kept)
                )

    async def latest(self, channel: str, limit: int) -> Replay:
        """The last ``limit`` stored messages of ``channel``, oldest first."""
        async with self.db.sessions() as session:
            query = (
                select(ChannelMessage)
                .where(ChannelMessage.channel == channel)
                .order_by(ChannelMessage.id.desc())
                .limit(limit)
            )
            rows = list(reversed((await session.execute(query)).scalars().all()))
        return Replay([_decode(row) for row in rows], True, _gaps(rows))

    async def after(self, channel: str, epoch: str, offset: int, limit: int) -> Replay:
        """The stored messages after position (``epoch``, ``offset``), across later epochs, oldest first."""
        async with self.db.sessions() as session:
            anchor_id: int | None
            if offset == 0:
                first = select(ChannelMessage.id).where(
                    ChannelMessage.channel == channel, ChannelMessage.epoch == epoch
                )
                found = (await session.execute(first.order_by(ChannelMessage.id).limit(1))).scalar_one_or_none()
                anchor_id = None if found is None else found - 1
            else:
                exact = select(ChannelMessage.id).where(
                    ChannelMessage.channel == channel, ChannelMessage.epoch == epoch, ChannelMessage.offset == offset
                )
                anchor_id = (await session.execute(exact)).scalar_one_or_none()
            if anchor_id is None:
                replay = await self.latest(channel, limit)
                replay.complete = False
                return replay
            query = (
                select(ChannelMessage)
                .where(ChannelMessage.channel == channel, ChannelMessage.id > anchor_id)
                .order_by(ChannelMessage.id)
                .limit(limit + 1)
            )
            rows = list((await session.execute(query)).scalars().all())
        complete = len(rows) <= limit
        rows = rows[:limit]
        return Replay([_decode(row) for row in rows], complete, _gaps(rows, (epoch, offset)))


def _decode(row: ChannelMessage) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(row.payload)
    return message


def _gaps(rows: Sequence[ChannelMessage], start: tuple[str, int] | None = None) -> int:
    """Offsets skipped inside each epoch (publications that were never stored). A later epoch starts at offset 1;
    the first row of a window without ``start`` is where the window begins."""
    missing = 0
    epoch: str | None = None
    last: int | None = None
    if start is not None:
        epoch, last = start
    for row in rows:
        if row.epoch != epoch:
            last = 0 if epoch is not None else None
            epoch = row.epoch
        if last is not None:
            missing += max(0, row.offset - last - 1)
        last = row.offset
    return missing


class DurableHistoryBroker:
    """A broker that also stores the publications of durable channels (see the module docstring)."""

    def __init__(self, inner: Broker, history: DurableHistory) -> None:
        self.inner = inner
        self.history = history

    @property
    def healthy(self) -> bool:
        """The inner broker's health."""
        return self.inner.healthy

    async def start(self, handler: PublicationHandler) -> None:
        """Start the inner broker."""
        await self.inner.start(handler)

    async def close(self) -> None:
        """Close the inner broker."""
        await self.inner.close()

    async def publish(self, channel: str, body: bytes, *, idempotency_key: str | None = None) -> Publication:
        """Publish; on a durable channel, store the publication before returning (a failure is logged, counted
        and shows as a gap in later replays; the publication itself has gone out)."""
        pub = await self.inner.publish(channel, body, idempotency_key=idempotency_key)
        if self.history.durable(channel) and not getattr(pub, "duplicate", False):
            # The memory broker has delivered already and the write batcher's flush is queued for this loop
            # pass: let it write to the sockets before the store's database work takes the loop.
            await asyncio.sleep(0)
            try:
                await self.history.store(pub)
            except Exception:
                self.history.failures += 1
                logger.warning(
                    "could not store %s offset %s in the durable history", channel, pub.offset, exc_info=True
                )
        return pub

    async def subscribe(self, channel: str) -> None:
        """Delegated."""
        await self.inner.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Delegated."""
        await self.inner.unsubscribe(channel)

    async def position(self, channel: str) -> tuple[int, str]:
        """Delegated."""
        return await self.inner.position(channel)

    async def recover(self, channel: str, since_offset: int, since_epoch: str) -> HistoryResult:
        """Delegated: subscriptions recover from the broker's history (after a restart of the memory broker they
        report ``recovered: false``; the stored history is read through ``GET /api/history``)."""
        return await self.inner.recover(channel, since_offset, since_epoch)

    async def presence_add(self, channel: str, conn_id: str, info: dict[str, Any]) -> bool:
        """Delegated."""
        return await self.inner.presence_add(channel, conn_id, info)

    async def presence_remove(self, channel: str, conn_id: str, user_id: UserId) -> bool:
        """Delegated."""
        return await self.inner.presence_remove(channel, conn_id, user_id)

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """Delegated."""
        return await self.inner.presence(channel)

    async def connection_add(self, user_id: UserId, conn_id: str, info: dict[str, Any] | None = None) -> int:
        """Delegated."""
        return await self.inner.connection_add(user_id, conn_id, info)

    async def connection_remove(self, user_id: UserId, conn_id: str) -> None:
        """Delegated."""
        await self.inner.connection_remove(user_id, conn_id)

    async def stats(self) -> dict[str, int]:
        """Delegated."""
        return await self.inner.stats()

    def info(self) -> dict[str, Any]:
        """The inner broker's details plus the durable namespaces."""
        return {
            **self.inner.info(),
            "durable_channels": sorted(self.history.namespaces),
            "durable_failures": self.history.failures,
        }

    def __getattr__(self, name: str) -> Any:
        # anything else a concrete broker offers (e.g. the Redis broker's extras) stays reachable
        return getattr(self.inner, name)
