"""The local registry: connections by user, subscribers by channel, and delivery of publications to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import orjson

from tidings.broker.base import Publication
from tidings.connection import Connection
from tidings.handout import DEFER_MIN, Handouts
from tidings.messages import COPIES_PREFIX

if TYPE_CHECKING:
    from tidings.connection import UserId


__all__ = ["Hub", "earlier_copies"]


def earlier_copies(pub: Publication) -> tuple[str, ...]:
    """The channels listed before ``pub.channel`` in an event published on several channels at once.

    Such an event's body starts with ``{"copies":[...]`` (channel names never contain ``]``), so a plain
    publication costs one ``startswith``.
    """
    payload = pub.frame.payload
    if not payload.startswith(COPIES_PREFIX):
        return ()
    end = payload.find(b"]", len(COPIES_PREFIX))
    try:
        copies = orjson.loads(payload[len(COPIES_PREFIX) - 1 : end + 1])
    except orjson.JSONDecodeError:
        return ()
    if pub.channel not in copies:
        return ()
    return tuple(copies[: copies.index(pub.channel)])


def _has_earlier(conn: Connection, earlier: tuple[str, ...]) -> bool:
    subs = conn.subscriptions
    return any(channel in subs for channel in earlier)


class Hub:
    """Connections of this process and what they are subscribed to. Delivery never awaits a client."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[UserId, dict[str, Connection]] = {}
        self.subscribers: dict[str, dict[Connection, None]] = {}
        # connection -> {channel: publications that arrived while its history was being read}
        self._recovering: dict[str, dict[Connection, list[Publication]]] = {}
        self.publications_delivered = 0
        self.deliveries = 0
        self.slow_consumers = 0
        #: A large fan-out deferred to the next loop pass on an idle node (see :mod:`tidings.handout`).
        self.handouts = Handouts()

    def add(self, conn: Connection) -> None:
        """Register a connection."""
        conn._handouts = self.handouts
        self.connections[conn.id] = conn
        self.by_user.setdefault(conn.user.id, {})[conn.id] = conn

    def remove(self, conn: Connection) -> list[str]:
        """Forget a connection; returns the channels that no local connection is subscribed to any more."""
        self.connections.pop(conn.id, None)
        user_conns = self.by_user.get(conn.user.id)
        if user_conns is not None:
            user_conns.pop(conn.id, None)
            if not user_conns:
                del self.by_user[conn.user.id]
        emptied = []
        for channel in list(conn.subscriptions):
            if self.unsubscribe(conn, channel):
                emptied.append(channel)
        conn.subscriptions = set()
        return emptied

    def subscribe(self, conn: Connection, channel: str, *, recovering: bool = False) -> bool:
        """Add ``conn`` to the channel; returns True if it is the channel's first local subscriber.

        With ``recovering``, live publications for ``conn`` are held back until :meth:`finish_recovery`.
        """
        subs = self.subscribers.get(channel)
        first = subs is None
        if subs is None:
            subs = self.subscribers[channel] = {}
        subs[conn] = None
        conn.subscriptions.add(channel)
        if recovering:
            self._recovering.setdefault(channel, {})[conn] = []
        return first

    def unsubscribe(self, conn: Connection, channel: str) -> bool:
        """Remove ``conn`` from the channel; returns True if no local subscriber is left."""
        conn.subscriptions.discard(channel)
        held = self._recovering.get(channel)
        if held is not None:
            held.pop(conn, None)
            if not held:
                del self._recovering[channel]
        subs = self.subscribers.get(channel)
        if subs is None:
            return False
        subs.pop(conn, None)
        if subs:
            return False
        del self.subscribers[channel]
        return True

    def finish_recovery(self, conn: Connection, channel: str, history: Iterable[Publication], since: int) -> int:
        """Send ``history`` then the publications held back meanwhile, each offset once; go live.

        Returns the last offset sent (or ``since`` if none).
        """
        held = self._recovering.get(channel, {}).pop(conn, [])
        if channel in self._recovering and not self._recovering[channel]:
            del self._recovering[channel]
        last = since
        for pub in (*history, *held):
            if pub.offset > last:
                earlier = earlier_copies(pub)
                if not earlier or not _has_earlier(conn, earlier):
                    conn.enqueue(pub.frame)
                last = pub.offset
        return last

    def deliver(self, pub: Publication) -> None:
        """Hand one publication's frame to every local subscriber of its channel.

        A copy of an event published on several channels skips the connections subscribed to a channel listed
        before this one: they get (or got) that channel's copy, so each connection receives the event once.
        """
        subs = self.subscribers.get(pub.channel)
        if not subs:
            return
        held = self._recovering.get(pub.channel)
        frame = pub.frame
        earlier = earlier_copies(pub)
        if earlier:
            skip = [self.subscribers[ch] for ch in earlier if ch in self.subscribers]
            if skip:
                subs = {conn: None for conn in subs if not any(conn in other for other in skip)}
        if held is None:
            handouts = self.handouts
            if len(subs) < DEFER_MIN or not handouts.defer(frame, subs):
                if handouts.pending is not None:
                    handouts.hand_out()  # the fan-out deferred earlier in this pass goes first
                for conn in subs:
                    conn.enqueue_unchecked(frame)
        else:
            for conn in subs:
                pending = held.get(conn)
                if pending is None:
                    conn.enqueue(frame)
                else:
                    pending.append(pub)
        self.publications_delivered += 1
        self.deliveries += len(subs)

    def user_connection_count(self, user_id: UserId) -> int:
        """Connections of ``user_id`` on this node."""
        return len(self.by_user.get(user_id, ()))
