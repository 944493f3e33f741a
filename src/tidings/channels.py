"""Namespaces: the public way to declare channels, and the rules that answer "may this user do that here?".

A host declares each family of channels once::

    hub.namespace("orders", Namespace(subscribe=may_see_order, publish="server", model=OrderEvent))

and clients may then subscribe to ``orders:<arg>`` if ``may_see_order(user, arg)`` says so. The hub itself
declares only its own channels: ``broadcast`` (everyone, automatically), ``admins`` (administrators,
automatically) and ``user:<id>`` (that user only). Every other channel is declared by the application that owns it
(the crawler platform declares ``job_updates``, ``job:<id>``, ``property:<id>``, ``room:<name>``...).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from tidings.connection import UserInfo
from tidings.protocol import CHANNEL_RE

__all__ = [
    "CONTROL_CHANNEL",
    "ChannelRules",
    "InvalidPublication",
    "Namespace",
    "Predicate",
    "PublishRule",
    "SubscribeRule",
    "is_admin_role",
]

#: Node-to-node commands (``disconnect_user``) travel on this channel; no namespace may take its name.
CONTROL_CHANNEL = "tidings.control"

#: ``predicate(user, arg)`` -> bool (or an awaitable of it); ``arg`` is what follows ``name:`` ('' for a plain
#: channel).
Predicate = Callable[[UserInfo, str], "bool | Awaitable[bool]"]
#: Who decides whether a user is an administrator (default: ``role == "admin"``).
AdminCheck = Callable[[UserInfo], bool]


class SubscribeRule(StrEnum):
    """Named subscription rules (a :data:`Predicate` can be given instead)."""

    ANY = "any"  #: every authenticated user
    ADMIN = "admin"  #: administrators only
    SELF = "self"  #: ``user:<id>``: that user only (and administrators)
    AUTO = "auto"  #: every user, subscribed on connect (``broadcast``)


class PublishRule(StrEnum):
    """Who may publish (a :data:`Predicate` can be given instead)."""

    SERVER = "server"  #: only the application (``hub.publish``, ``POST /api/publish``, workers)
    CLIENTS = "clients"  #: also every subscriber-eligible client over its WebSocket


class InvalidPublication(ValueError):
    """A publication's ``data`` does not satisfy its namespace's ``model``; the message names the field."""

    def __init__(self, channel: str, error: ValidationError) -> None:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": str(error)}
        where = ".".join(str(part) for part in first.get("loc", ())) or "data"
        self.channel = channel
        self.field = where
        self.errors = error.errors(include_url=False)
        super().__init__(f"Invalid data for {channel}: {where}: {first.get('msg', 'invalid')}")


@dataclass(frozen=True, slots=True)
class Namespace:
    """How one family of channels behaves.

    * ``subscribe``: a :class:`SubscribeRule` name (``"any"``, ``"admin"``, ``"self"``, ``"auto"``) or a predicate
      ``(user, arg) -> bool`` (sync or async); administrators always pass. A typo raises ``ValueError`` here.
    * ``publish``: ``"server"`` (default), ``"clients"`` or a predicate ``(user, arg) -> bool`` for clients.
    * ``history``: publications kept for recovery; None uses ``TIDINGS_HISTORY_SIZE``; 0 keeps none.
    * ``presence``: announce ``join``/``leave`` events (presence lists are always answered).
    * ``model``: a pydantic model every publication's ``data`` must satisfy (clients: the ``data`` they send).
    * ``argument``: True (default) for channels ``name:<arg>``, False for the single channel ``name``.
    * ``own_events_alias``: non-administrators are confirmed with ``scope: user:<id>`` and receive only their own
      events (on ``user:<id>``) instead of the channel's.
    """

    subscribe: SubscribeRule | str | Predicate = SubscribeRule.ANY
    publish: PublishRule | str | Predicate = PublishRule.SERVER
    history: int | None = None
    presence: bool = False
    model: type[BaseModel] | None = None
    argument: bool = True
    own_events_alias: bool = False
    _subscribe_rule: SubscribeRule | None = field(default=None, init=False, repr=False, compare=False)
    _publish_rule: PublishRule | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.subscribe):
            try:
                object.__setattr__(self, "_subscribe_rule", SubscribeRule(self.subscribe))
            except ValueError:
                names = ", ".join(r.value for r in SubscribeRule)
                raise ValueError(f"subscribe must be one of {names} or a callable, not {self.subscribe!r}") from None
        if not callable(self.publish):
            try:
                object.__setattr__(self, "_publish_rule", PublishRule(self.publish))
            except ValueError:
                raise ValueError(f"publish must be 'server', 'clients' or a callable, not {self.publish!r}") from None
        if self.history is not None and self.history < 0:
            raise ValueError("history must be >= 0 (or None for the hub's default)")
        if self.model is not None and not (isinstance(self.model, type) and issubclass(self.model, BaseModel)):
            raise ValueError("model must be a pydantic BaseModel subclass")

    @property
    def client_publish(self) -> bool:
        """True if some client may publish (``"clients"`` or a predicate)."""
        return self._publish_rule is not PublishRule.SERVER

    @property
    def subscribe_rule(self) -> SubscribeRule | None:
        """The named rule, or None when ``subscribe`` is a predicate."""
        return self._subscribe_rule

    def validate(self, channel: str, data: Any) -> Any:
        """``data`` checked against ``model`` (returned as JSON-ready data), or :class:`InvalidPublication`."""
        if self.model is None:
            return data
        if isinstance(data, self.model):
            return data.model_dump(mode="json")
        try:
            return self.model.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidPublication(channel, exc) from None


def disconnect_command(node: str, user_id: Any, code: int, reason: str, token_id: str | None = None) -> bytes:
    """The encoded command asking every node to close ``user_id``'s connections (those of ``token_id`` only)."""
    command = {"type": "disconnect", "node": node, "user_id": user_id, "code": int(code), "reason": reason}
    return orjson.dumps({**command, "token_id": token_id})


def is_admin_role(user: UserInfo) -> bool:
    """The default administrator check: ``user.role == "admin"``."""
    return user.role == "admin"


async def _ask(predicate: Predicate, user: UserInfo, arg: str) -> bool:
    answer = predicate(user, arg)
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)


#: The hub's own channels; everything else is declared by applications.
CORE_NAMESPACES: dict[str, Namespace] = {
    "broadcast": Namespace(subscribe=SubscribeRule.AUTO, argument=False),
    "admins": Namespace(subscribe=SubscribeRule.ADMIN, argument=False),
    "user": Namespace(subscribe=SubscribeRule.SELF),
}

class ChannelRules:
    """The declared namespaces; answers "may this user subscribe / publish here?" and "is it announced?"."""

    def __init__(self, namespaces: dict[str, Namespace] | None = None, *, is_admin: AdminCheck | None = None) -> None:
        self.namespaces: dict[str, Namespace] = dict(CORE_NAMESPACES)
        self.namespaces.update(namespaces or {})
        self.is_admin: AdminCheck = is_admin or is_admin_role
        self._refresh()

    def _refresh(self) -> None:
        """Flags that keep the publish path free of lookups when no namespace needs them."""
        self.has_models = any(ns.model is not None for ns in self.namespaces.values())
        self.has_history = any(ns.history is not None for ns in self.namespaces.values())

    def declare(self, name: str, namespace: Namespace) -> Namespace:
        """Add or replace the namespace ``name`` (a channel name without ``:``)."""
        if ":" in name or not CHANNEL_RE.match(name) or name == CONTROL_CHANNEL:
            raise ValueError(f"invalid namespace name {name!r} (letters, digits, _ - . @; no ':')")
        if not isinstance(namespace, Namespace):
            raise TypeError("namespace must be a tidings.Namespace")
        self.namespaces[name] = namespace
        self._refresh()
        return namespace

    def policy(self, channel: str) -> Namespace | None:
        """The namespace of ``channel``, or None if the name is invalid or not declared."""
        if not CHANNEL_RE.match(channel):
            return None
        name, sep, arg = channel.partition(":")
        namespace = self.namespaces.get(name)
        if namespace is None:
            return None
        if sep:
            return namespace if arg and namespace.argument else None
        return None if namespace.argument else namespace

    async def may_subscribe(self, user: UserInfo, channel: str) -> bool:
        """Whether ``user`` may subscribe to ``channel``."""
        namespace = self.policy(channel)
        if namespace is None:
            return False
        rule = namespace.subscribe_rule
        if rule in (SubscribeRule.ANY, SubscribeRule.AUTO):
            return True
        if self.is_admin(user):
            return True
        if rule is SubscribeRule.SELF:
            return channel == f"user:{user.id}"
        if rule is None:
            return await _ask(namespace.subscribe, user, channel.partition(":")[2])  # type: ignore[arg-type]
        return False

    async def may_publish(self, user: UserInfo, channel: str) -> bool:
        """Whether a client may publish to ``channel`` over its WebSocket."""
        namespace = self.policy(channel)
        if namespace is None or not namespace.client_publish:
            return False
        if callable(namespace.publish):
            return await _ask(namespace.publish, user, channel.partition(":")[2])
        return True

    def may_client_publish(self, user: UserInfo, channel: str) -> bool:
        """Whether clients may publish to ``channel`` at all (a predicate is asked by :meth:`may_publish`)."""
        namespace = self.policy(channel)
        return namespace is not None and namespace.client_publish

    def presence_events(self, channel: str) -> bool:
        """Whether joins and leaves on ``channel`` are announced."""
        namespace = self.policy(channel)
        return namespace is not None and namespace.presence

    def validate(self, channel: str, data: Any) -> Any:
        """``data`` checked against the channel's model, if it has one (:class:`InvalidPublication` otherwise)."""
        if not self.has_models:
            return data
        namespace = self.policy(channel)
        return data if namespace is None else namespace.validate(channel, data)

    def history_size(self, channel: str) -> int | None:
        """The namespace's history size, or None for the hub's default."""
        if not self.has_history:
            return None
        namespace = self.policy(channel)
        return None if namespace is None else namespace.history
