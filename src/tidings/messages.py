"""Every message of the wire protocol as a pydantic model: the one source for parsing, encoding, docs and schema.

Client -> server messages form the discriminated union :data:`ClientMessage` (on ``type``); server -> client
messages are the models in :data:`SERVER_MESSAGES`. :func:`tidings.protocol.parse_client_message` validates with
them (a ``bad_request`` names the field), replies are encoded from them (pydantic-core writes the JSON), and
:mod:`tidings.asyncapi` and docs/protocol.md are generated from their JSON Schemas.

The fan-out path does not build a model per publication: a publication (or a typed event) is one ``orjson``
encode of a dict whose shape the model describes (:func:`publication_body`, :func:`event_body`); the test suite
checks those bodies against the models.

Events that applications add (the crawler's ``job_update``, a namespace's publications) register a model with
:func:`register_event` so the AsyncAPI document lists them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    TypeAdapter,
    model_serializer,
)

__all__ = [
    "CLIENT_MESSAGES",
    "COPIES_PREFIX",
    "EVENT_MODELS",
    "SERVER_MESSAGES",
    "AdminNotification",
    "ChannelEvent",
    "ClientMessage",
    "ConnectionEstablished",
    "Error",
    "ErrorCode",
    "Join",
    "Leave",
    "Ping",
    "Pong",
    "Presence",
    "PresenceReply",
    "PresenceUser",
    "Publication",
    "Publish",
    "PublishAck",
    "RequestStatus",
    "ServerMessage",
    "Since",
    "StatusUpdate",
    "Subscribe",
    "SubscriptionConfirmed",
    "SubscriptionError",
    "SystemNotification",
    "Unsubscribe",
    "Unsubscribed",
    "encode_message",
    "event_body",
    "publication_body",
    "register_event",
]

class ErrorCode(StrEnum):
    """Machine-readable ``code`` of an ``error`` or ``subscription_error`` reply."""

    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    INVALID_SUBSCRIPTION = "invalid_subscription"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"


MessageId = Annotated[StrictStr | StrictInt, Field(description="Any string or integer; echoed in the reply")]
ChannelName = Annotated[
    StrictStr, Field(description="A channel: 1-128 characters of A-Z a-z 0-9 _ - : . @", examples=["room:lobby"])
]


# ---- client -> server ----------------------------------------------------------------------------------------
class _ClientBase(BaseModel):
    """Fields every client message may have."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: MessageId | None = None


class Ping(_ClientBase):
    """Heartbeat; the server answers ``pong``."""

    type: Literal["ping"]


class RequestStatus(_ClientBase):
    """Ask for ``status_update`` (cluster totals, this user's connections, the application's figures)."""

    type: Literal["request_status"]


class Since(BaseModel):
    """A stream position: the last ``offset`` seen on the channel in ``epoch``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    offset: Annotated[StrictInt, Field(ge=0)]
    epoch: StrictStr


class Subscribe(_ClientBase):
    """Subscribe to a channel; with ``since``, first receive what was published after that position."""

    type: Literal["subscribe"]
    subscription: ChannelName = Field(
        validation_alias=AliasChoices("subscription", "channel"),
        description="The channel (``channel`` is accepted too)",
    )
    since: Since | None = None


class Unsubscribe(_ClientBase):
    """Leave a channel (not the automatic ``broadcast``, ``admins`` and ``user:<id>``)."""

    type: Literal["unsubscribe"]
    subscription: ChannelName = Field(validation_alias=AliasChoices("subscription", "channel"))


class Presence(_ClientBase):
    """Ask who is present on a channel (across the cluster)."""

    type: Literal["presence"]
    subscription: ChannelName = Field(validation_alias=AliasChoices("subscription", "channel"))
    cursor: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | None = Field(
        None, description="Members after this user id (the previous page's `cursor`)"
    )
    limit: Annotated[StrictInt, Field(ge=1, le=1000)] | None = Field(None, description="Page size (default 1000)")


class Publish(_ClientBase):
    """Publish on a channel that allows client publishing (``room:*``); subscribers get a ``publication``
    whose ``data`` is ``{"user": {...}, "body": data}``."""

    type: Literal["publish"]
    channel: ChannelName = Field(validation_alias=AliasChoices("channel", "subscription"))
    data: Any = Field(description="Any JSON value")


#: Every client -> server message model, by ``type``.
CLIENT_MESSAGES: dict[str, type[_ClientBase]] = {
    "ping": Ping,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "publish": Publish,
    "presence": Presence,
    "request_status": RequestStatus,
}

ClientMessage = Annotated[
    Ping | Subscribe | Unsubscribe | Publish | Presence | RequestStatus, Field(discriminator="type")
]
#: Validates any client message (the discriminated union).
CLIENT_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# ---- server -> client: replies -------------------------------------------------------------------------------
class _ServerBase(BaseModel):
    """A server message; ``id`` echoes the request's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: MessageId | None = Field(None, description="The ``id`` of the client message this replies to")


class PresenceUser(BaseModel):
    """A user as others see them."""

    model_config = ConfigDict(extra="allow")

    user_id: int | str
    username: str


class ConnectionEstablished(_ServerBase):
    """The first message of every connection; it is already subscribed to ``channels``."""

    type: Literal["connection_established"] = "connection_established"
    user_id: int | str
    username: str
    role: str
    message: str = "Connected to real-time updates"
    channels: list[str]


class Pong(_ServerBase):
    """Answer to ``ping``."""

    type: Literal["pong"] = "pong"
    timestamp: float


class SubscriptionConfirmed(_ServerBase):
    """The subscription is live from ``offset`` (after any recovered publications)."""

    type: Literal["subscription_confirmed"] = "subscription_confirmed"
    subscription: str
    offset: int | None = Field(None, description="The channel's position; absent when ``scope`` is set")
    epoch: str | None = None
    recovered: bool | None = Field(None, description="With ``since``: False when history no longer reaches back")
    scope: str | None = Field(
        None, description="The events of this channel the user may see arrive on this channel instead"
    )


class SubscriptionError(_ServerBase):
    """The subscription was refused."""

    type: Literal["subscription_error"] = "subscription_error"
    subscription: str
    code: ErrorCode
    message: str


class Unsubscribed(_ServerBase):
    """Answer to ``unsubscribe``."""

    type: Literal["unsubscribed"] = "unsubscribed"
    subscription: str


class PublishAck(_ServerBase):
    """The publication was stored at ``offset``."""

    type: Literal["publish_ack"] = "publish_ack"
    channel: str
    offset: int
    epoch: str


class PresenceReply(_ServerBase):
    """Answer to ``presence``: one entry per user."""

    type: Literal["presence"] = "presence"
    subscription: str
    users: list[PresenceUser]
    count: int | None = Field(None, description="Members in all")
    cursor: int | str | None = Field(None, description="The `cursor` of the next page; null on the last")

    @model_serializer(mode="wrap")
    # no return annotation: the JSON schema (docs/protocol.md, AsyncAPI) stays the model's
    def _keep_cursor(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # the wire contract (docs/scaling.md, REST's PresenceOut) is `cursor: null` on the last page, which
        # encode_message's exclude_none would drop: a client reading page["cursor"] would find no key
        data = handler(self)
        if isinstance(data, dict):
            data.setdefault("cursor", self.cursor)
        return data


class StatusUpdate(_ServerBase):
    """Answer to ``request_status``; applications add fields through their status provider."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: Literal["status_update"] = "status_update"
    server_time: float
    user_connections: int = Field(description="Connections across the cluster")
    users: int = Field(description="Connected users across the cluster")
    my_connections: int = Field(description="This user's connections on this node")
    # status providers add their own fields (the crawler platform: active_jobs, total_properties)


class Error(_ServerBase):
    """A client message could not be served; the connection stays open."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    field: str | None = Field(None, description="With ``bad_request``: the offending field (``since.offset``)")


# ---- server -> client: channel streams ----------------------------------------------------------------------
class ChannelEvent(BaseModel):
    """Fields of everything delivered on a channel's stream."""

    model_config = ConfigDict(frozen=True, extra="allow")

    channel: str = Field(description="The channel this copy was delivered on (see ``copies``)")
    offset: int = Field(description="Position in the channel's stream: starts at 1, grows by 1")
    epoch: str = Field(description="Names one history stream; changes when history is lost")
    copies: list[str] | None = Field(
        None,
        description="Set when one event was published on several channels at once: all of them, in order. A "
        "connection receives one copy, the one of the first of these channels it is subscribed to.",
    )


class Publication(ChannelEvent):
    """A message published on a channel (``Node.publish``, ``POST /api/publish``, a client's ``publish``)."""

    type: Literal["publication"] = "publication"
    data: Any
    timestamp: float = Field(description="Server time of the publication: seconds since the Unix epoch (UTC)")


class SystemNotification(ChannelEvent):
    """An announcement to every connection (channel ``broadcast``)."""

    type: Literal["system_notification"] = "system_notification"
    category: str
    message: str
    start_time: str
    timestamp: float


class AdminNotification(ChannelEvent):
    """A notice to administrators' connections (channel ``admins``)."""

    type: Literal["admin_notification"] = "admin_notification"
    category: str
    message: str
    timestamp: float


class Join(ChannelEvent):
    """A user's first connection entered a channel with presence events."""

    type: Literal["join"] = "join"
    user: PresenceUser
    timestamp: float


class Leave(ChannelEvent):
    """A user's last connection left a channel with presence events."""

    type: Literal["leave"] = "leave"
    user: PresenceUser
    timestamp: float


#: The hub's own server -> client messages, by ``type``.
SERVER_MESSAGES: dict[str, type[BaseModel]] = {
    "connection_established": ConnectionEstablished,
    "pong": Pong,
    "subscription_confirmed": SubscriptionConfirmed,
    "subscription_error": SubscriptionError,
    "unsubscribed": Unsubscribed,
    "publish_ack": PublishAck,
    "presence": PresenceReply,
    "status_update": StatusUpdate,
    "error": Error,
    "publication": Publication,
    "system_notification": SystemNotification,
    "admin_notification": AdminNotification,
    "join": Join,
    "leave": Leave,
}

#: Typed events applications publish with ``publish_event`` (registered with :func:`register_event`).
EVENT_MODELS: dict[str, type[ChannelEvent]] = {}

ServerMessage = BaseModel


def register_event(model: type[ChannelEvent]) -> type[ChannelEvent]:
    """Declare an application event (a :class:`ChannelEvent` subclass with a ``Literal`` ``type``).

    Usable as a class decorator. The AsyncAPI document lists every registered event.
    """
    field = model.model_fields.get("type")
    default = field.default if field is not None else None
    if not isinstance(default, str):
        raise TypeError(f"{model.__name__} needs a `type: Literal[...] = '...'` field")
    EVENT_MODELS[default] = model
    return model


def server_message_models() -> dict[str, type[BaseModel]]:
    """Every server -> client message model: the hub's and the registered events."""
    return {**SERVER_MESSAGES, **EVENT_MODELS}


# ---- encoding ----------------------------------------------------------------------------------------------
def encode_message(message: BaseModel) -> bytes:
    """Encode a server message model as compact JSON (fields left at None are omitted)."""
    return message.__pydantic_serializer__.to_json(message, exclude_none=True)


#: The first bytes of an event published on several channels at once (see :class:`ChannelEvent` ``copies``).
COPIES_PREFIX = b'{"copies":['


def publication_body(channel: str, data: Any) -> bytes:
    """The body of a :class:`Publication` before the broker appends ``offset``/``epoch`` (one orjson encode)."""
    return orjson.dumps({"type": "publication", "channel": channel, "data": data, "timestamp": time.time()})


def event_body(event: dict[str, Any], channel: str, copies: Iterable[str] | None = None) -> bytes:
    """The body of a typed event on ``channel`` (one orjson encode); ``copies`` first when there are several."""
    if copies is None:
        return orjson.dumps({**event, "channel": channel})
    return orjson.dumps({"copies": list(copies), **event, "channel": channel})
