"""Publishing from other processes (Celery tasks, scripts, Scrapy extensions) straight into Redis.

No HTTP hop and no server import: a publisher runs the same Lua script as the nodes' :class:`RedisBroker`, so its
publications get the channel's next offset, land in history and reach every node's subscribers::

    from tidings.publisher import SyncPublisher
    from tidings.settings import Settings

    publisher = SyncPublisher.from_settings(Settings())        # TIDINGS_BROKER_URL: redis://, redis+sentinel://,
                                                               # or redis+cluster://
    publisher.publish_event(["user:1", "job:5", "job_updates"], {"type": "job_update", "event": "job_started"})
    publisher.close()

:class:`Publisher` is the ``async`` twin (``await publisher.publish(...)``). Both raise
:class:`~tidings.broker.BrokerUnavailable` when Redis cannot be reached, never drop silently.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.typing import EncodableT

from tidings.broker.base import BrokerUnavailable
from tidings.broker.keys import Keys
from tidings.broker.redis_scripts import PUBLISH, body_head, dedup_record, publish_reply
from tidings.broker.urls import BrokerURL, is_redis_url, parse_broker_url
from tidings.channels import CONTROL_CHANNEL, disconnect_command
from tidings.messages import event_body, publication_body
from tidings.protocol import CHANNEL_RE
from tidings.settings import Settings

__all__ = ["Publisher", "SyncPublisher"]

#: redis-py's retries of one call (5 s timeout, 2 s to connect, 6 tries, at most 1 s apart) end well inside
#: RETRY_RECORD_TTL, so a retry always finds the record the call's first run left (see ``dedup_record``).
_RETRIES = 5

_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError, ReadOnlyError)


class _Messages:
    """What to publish: the same JSON bodies as :class:`tidings.node.Node` builds (one encode per channel)."""

    def __init__(
        self,
        prefix: str,
        history_size: int,
        history_ttl: int,
        history_max_bytes: int,
        target: BrokerURL,
        idempotency_ttl: int = 300,
    ) -> None:
        self.keys = Keys(prefix)
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.history_max_bytes = history_max_bytes
        self.idempotency_ttl = idempotency_ttl
        self.command = target.publish_command
        self.check = "1" if target.mode != "redis" else "0"

    def script_call(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> tuple[list[str], list[EncodableT]]:
        """``(keys, args)`` of the publish script for ``body`` on ``channel`` (and an idempotency key)."""
        if not CHANNEL_RE.match(channel):
            raise ValueError(f"Invalid channel name: {channel!r}")
        args: list[EncodableT] = [
            body_head(body),
            secrets.token_hex(4),
            self.history_size,
            self.history_ttl,
            self.history_max_bytes,
            self.command,
            self.check,
        ]
        record, record_ttl = dedup_record(self.keys, channel, idempotency_key, self.idempotency_ttl)
        args.append(record_ttl)
        return [*self.keys.stream(channel), record], args

    @staticmethod
    def publication(channel: str, data: Any) -> bytes:
        """``{"type": "publication", "channel", "data", "timestamp"}`` (server time, seconds since the epoch)."""
        return publication_body(channel, data)

    @staticmethod
    def events(channels: str | Iterable[str], event: dict[str, Any]) -> list[tuple[str, bytes]]:
        """One body per channel: ``event`` plus ``channel`` (and ``timestamp`` if missing); with several
        channels, ``copies`` lists them all (each connection receives one copy, as from a node)."""
        channels = [channels] if isinstance(channels, str) else list(channels)
        event = {"timestamp": time.time(), **event}
        event.pop("copies", None)
        copies = channels if len(channels) > 1 else None
        return [(ch, event_body(event, ch, copies)) for ch in channels]

    @staticmethod
    def system_notification(message: str, category: str, start_time: str | None) -> dict[str, Any]:
        """The ``system_notification`` event of a broadcast."""
        now = time.time()
        return {
            "type": "system_notification",
            "category": category,
            "message": message,
            "start_time": start_time or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "timestamp": now,
        }

    @staticmethod
    def admin_notification(message: str, category: str) -> dict[str, Any]:
        """The ``admin_notification`` event for administrators."""
        return {"type": "admin_notification", "category": category, "message": message}


def _result(channel: str, reply: Any, keyed: bool) -> dict[str, Any]:
    offset, epoch, duplicate = publish_reply(reply, keyed)
    return {"channel": channel, "offset": offset, "epoch": epoch.decode(), "duplicate": duplicate}


def _target(url: str) -> BrokerURL:
    if not is_redis_url(url):
        raise ValueError(
            "A publisher needs a redis://, redis+sentinel:// or redis+cluster:// broker URL (TIDINGS_BROKER_URL), "
            f"not {url!r}"
        )
    return parse_broker_url(url)


class Publisher:
    """Async publisher: ``await publish(...)``, ``await publish_event(...)``; ``await close()`` at the end.

    Results are ``{"channel", "offset", "epoch", "duplicate"}`` dicts (a list of them for :meth:`publish_event`).
    Pass ``idempotency_key`` to make a retry safe: a repeat of the key on a channel within ``idempotency_ttl``
    seconds (``TIDINGS_IDEMPOTENCY_TTL``) publishes nothing and returns the original offset, ``duplicate`` True.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tidings",
        history_size: int = 1000,
        history_ttl: int = 86400,
        history_max_bytes: int = 1 << 20,
        idempotency_ttl: int = 300,
    ) -> None:
        target = _target(url)
        self._messages = _Messages(prefix, history_size, history_ttl, history_max_bytes, target, idempotency_ttl)
        retry = AsyncRetry(ExponentialWithJitterBackoff(base=0.01, cap=1), _RETRIES)
        self._client: Any = target.async_client(socket_timeout=5.0, socket_connect_timeout=2.0, retry=retry)
        self._script = self._client.register_script(PUBLISH)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Publisher:
        """A publisher for the broker in ``settings`` (default: the ``TIDINGS_*`` environment)."""
        s = settings or Settings()
        return cls(
            s.broker_url,
            prefix=s.broker_prefix,
            history_size=s.history_size,
            history_ttl=s.history_ttl,
            history_max_bytes=s.history_max_bytes,
            idempotency_ttl=s.idempotency_ttl,
        )

    async def _publish(self, channel: str, body: bytes, key: str | None = None) -> dict[str, Any]:
        keys, args = self._messages.script_call(channel, body, key)
        try:
            reply = await self._script(keys=keys, args=args)
        except _ERRORS as exc:
            raise BrokerUnavailable(f"Redis unavailable: {exc}") from exc
        return _result(channel, reply, key is not None)

    async def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Publish ``data``: subscribers get ``{"type": "publication", "channel", "data", "offset", "epoch"}``."""
        return await self._publish(channel, self._messages.publication(channel, data), idempotency_key)

    async def publish_event(
        self, channels: str | Iterable[str], event: dict[str, Any], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Publish a typed event (its own ``type``) on each channel, adding ``channel`` and ``timestamp``."""
        return [await self._publish(ch, body, idempotency_key) for ch, body in self._messages.events(channels, event)]

    async def broadcast(self, message: str, category: str = "general", start_time: str | None = None) -> dict[str, Any]:
        """A ``system_notification`` to every connection on every node."""
        event = self._messages.system_notification(message, category, start_time)
        return (await self.publish_event("broadcast", event))[0]

    async def notify_admins(self, message: str, category: str = "admin") -> dict[str, Any]:
        """An ``admin_notification`` to administrators' connections."""
        return (await self.publish_event("admins", self._messages.admin_notification(message, category)))[0]

    async def disconnect_user(self, user_id: int | str, code: int = 1008, reason: str = "Disconnected") -> None:
        """Close ``user_id``'s WebSockets on every node (as ``hub.disconnect_user`` does)."""
        await self._publish(CONTROL_CHANNEL, disconnect_command("publisher", user_id, code, reason))

    async def send_to_user(self, user_id: int, event: dict[str, Any]) -> dict[str, Any]:
        """A typed event to every connection of one user."""
        return (await self.publish_event(f"user:{user_id}", event))[0]

    async def close(self) -> None:
        """Release the Redis connections."""
        await self._client.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncPublisher:
    """Blocking publisher for Celery tasks and scripts (redis-py's sync client, the same Lua script).

    Thread-safe (redis-py's connection pool); create one per worker process and reuse it. ``idempotency_key``
    works as in :class:`Publisher`: a Celery task retried after a timeout passes the same key.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tidings",
        history_size: int = 1000,
        history_ttl: int = 86400,
        history_max_bytes: int = 1 << 20,
        idempotency_ttl: int = 300,
    ) -> None:
        target = _target(url)
        self._messages = _Messages(prefix, history_size, history_ttl, history_max_bytes, target, idempotency_ttl)
        retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), _RETRIES)
        self._client: Any = target.sync_client(socket_timeout=5.0, socket_connect_timeout=2.0, retry=retry)
        self._script = self._client.register_script(PUBLISH)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SyncPublisher:
        """A publisher for the broker in ``settings`` (default: the ``TIDINGS_*`` environment)."""
        s = settings or Settings()
        return cls(
            s.broker_url,
            prefix=s.broker_prefix,
            history_size=s.history_size,
            history_ttl=s.history_ttl,
            history_max_bytes=s.history_max_bytes,
            idempotency_ttl=s.idempotency_ttl,
        )

    def _publish(self, channel: str, body: bytes, key: str | None = None) -> dict[str, Any]:
        keys, args = self._messages.script_call(channel, body, key)
        try:
            reply = self._script(keys=keys, args=args)
        except _ERRORS as exc:
            raise BrokerUnavailable(f"Redis unavailable: {exc}") from exc
        return _result(channel, reply, key is not None)

    def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Publish ``data``: subscribers get ``{"type": "publication", "channel", "data", "offset", "epoch"}``."""
        return self._publish(channel, self._messages.publication(channel, data), idempotency_key)

    def publish_event(
        self, channels: str | Iterable[str], event: dict[str, Any], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Publish a typed event (its own ``type``) on each channel, adding ``channel`` and ``timestamp``."""
        return [self._publish(ch, body, idempotency_key) for ch, body in self._messages.events(channels, event)]

    def broadcast(self, message: str, category: str = "general", start_time: str | None = None) -> dict[str, Any]:
        """A ``system_notification`` to every connection on every node."""
        return self.publish_event("broadcast", self._messages.system_notification(message, category, start_time))[0]

    def notify_admins(self, message: str, category: str = "admin") -> dict[str, Any]:
        """An ``admin_notification`` to administrators' connections."""
        return self.publish_event("admins", self._messages.admin_notification(message, category))[0]

    def disconnect_user(self, user_id: int | str, code: int = 1008, reason: str = "Disconnected") -> None:
        """Close ``user_id``'s WebSockets on every node (as ``hub.disconnect_user`` does)."""
        self._publish(CONTROL_CHANNEL, disconnect_command("publisher", user_id, code, reason))

    def send_to_user(self, user_id: int, event: dict[str, Any]) -> dict[str, Any]:
        """A typed event to every connection of one user."""
        return self.publish_event(f"user:{user_id}", event)[0]

    def close(self) -> None:
        """Release the Redis connections."""
        self._client.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
