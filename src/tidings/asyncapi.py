"""The AsyncAPI 3.0 document of the WebSocket protocol, generated from the message models (``GET /asyncapi.json``).

It describes the Tidings server: the WebSocket endpoints and how to authenticate on them, every client -> server
message (operations the server *receives*, with their replies) and every server -> client message (operations it
*sends*), each with its JSON Schema from :mod:`tidings.messages`; the channels and namespaces declared on the hub
(``x-tidings-namespaces``, with the model of their publications' ``data`` when a namespace declares one) and the
close-code table (``x-tidings-close-codes``, from :mod:`tidings.close_codes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tidings.close_codes import AUTH_REASONS, CLOSE_CODES, CLOSE_RANGES
from tidings.messages import CLIENT_MESSAGES, ChannelEvent, server_message_models

__all__ = ["REPLIES", "asyncapi_document", "namespace_entries"]

#: The reply (or replies) to each client message.
REPLIES: dict[str, tuple[str, ...]] = {
    "ping": ("pong",),
    "subscribe": ("subscription_confirmed", "subscription_error"),
    "unsubscribe": ("unsubscribed",),
    "publish": ("publish_ack",),
    "presence": ("presence",),
    "request_status": ("status_update",),
}
#: Every client message may also be answered by ``error``.
ERROR_REPLY = "error"

_REF = "#/components/schemas/{model}"


def _client_key(msg_type: str) -> str:
    return f"client.{msg_type}"


def _server_key(msg_type: str) -> str:
    return f"server.{msg_type}"


def _schemas(
    client: Mapping[str, type[BaseModel]], server: Mapping[str, type[BaseModel]], extra: Iterable[type[BaseModel]]
) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    """JSON Schemas of every model under ``components/schemas`` (client side in validation mode)."""
    inputs: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in client.values()]
    inputs += [(m, "serialization") for m in server.values()]
    inputs += [(m, "serialization") for m in extra]
    refs, top = models_json_schema(inputs, ref_template=_REF)
    by_model: dict[tuple[str, str], dict[str, Any]] = {
        (model.__name__, str(mode)): dict(ref) for (model, mode), ref in refs.items()
    }
    defs: dict[str, Any] = top.get("$defs", {})
    return defs, by_model


def _policy_fields(policy: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(policy) and not isinstance(policy, type):
        fields = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}
    else:
        fields = {k: v for k, v in vars(policy).items() if not k.startswith("_")}
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "model" or key.startswith("_") or callable(value):
            continue
        out[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    return out


def namespace_entries(rules: Any) -> list[tuple[str, dict[str, Any], type[BaseModel] | None]]:
    """``(name, policy fields, publication model)`` for every channel or namespace the rules declare.

    Reads ``rules.namespaces`` (name -> namespace object) when the rules have it, else ``rules.policies``; a
    namespace's ``model`` attribute, when it is a pydantic model, describes the ``data`` of its publications.
    """
    declared = getattr(rules, "namespaces", None) or getattr(rules, "policies", {})
    entries = []
    for name, policy in dict(declared).items():
        model = getattr(policy, "model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = None
        entries.append((str(name), _policy_fields(policy), model))
    return entries


def asyncapi_document(
    *,
    title: str = "Tidings",
    version: str = "0",
    host: str = "localhost:8000",
    scheme: str = "ws",
    rules: Any = None,
    token_cookie: str | None = None,
    namespaced: Iterable[str] = (),
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready dict) of a hub reachable at ``scheme://host``.

    ``rules`` (a :class:`~tidings.channels.ChannelRules`) gives the declared channels and namespaces;
    ``token_cookie`` the name of the cookie the built-in authenticator reads (None: no cookie auth).
    """
    server_models = server_message_models()
    namespaces = namespace_entries(rules) if rules is not None else []
    ns_models = [model for _, _, model in namespaces if model is not None]
    schemas, refs = _schemas(CLIENT_MESSAGES, server_models, ns_models)

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model.__name__, mode)]

    def message(msg_type: str, model: type[BaseModel], direction: str, mode: str) -> dict[str, Any]:
        doc = model.__doc__ or ""
        return {
            "name": msg_type,
            "title": f"{msg_type} ({direction})",
            "summary": doc.strip().splitlines()[0],
            "description": " ".join(doc.split()),
            "contentType": "application/json",
            "payload": ref(model, mode),
        }

    messages: dict[str, Any] = {}
    for msg_type, client_model in CLIENT_MESSAGES.items():
        messages[_client_key(msg_type)] = message(msg_type, client_model, "client -> server", "validation")
    for msg_type, server_model in server_models.items():
        messages[_server_key(msg_type)] = message(msg_type, server_model, "server -> client", "serialization")
    channel_messages = {key: {"$ref": f"#/components/messages/{key}"} for key in messages}

    security = [
        {"$ref": "#/components/securitySchemes/subprotocol"},
        {"$ref": "#/components/securitySchemes/bearer"},
        {"$ref": "#/components/securitySchemes/query"},
    ]
    schemes: dict[str, Any] = {
        "subprotocol": {
            "type": "httpApiKey",
            "name": "Sec-WebSocket-Protocol",
            "in": "header",
            "description": "Browsers: the subprotocol pair `bearer, <token>`; the server selects `bearer`.",
        },
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "`Authorization: Bearer <token>` (non-browser clients). Tokens: `POST /auth/token`.",
        },
        "query": {
            "type": "httpApiKey",
            "name": "token",
            "in": "query",
            "description": "`?token=<token>`; redacted from access logs.",
        },
    }
    if token_cookie:
        schemes["cookie"] = {
            "type": "httpApiKey",
            "name": token_cookie,
            "in": "cookie",
            "description": f"The token in the `{token_cookie}` cookie (`TIDINGS_TOKEN_COOKIE`), read only when no "
            "subprotocol, header or query token is given; accepted only with an allowed `Origin` (checked on every "
            "connection before the token is used), so a cross-origin page carrying the cookie is closed with 1008 "
            "`Origin not allowed`.",
        }
        security.append({"$ref": "#/components/securitySchemes/cookie"})

    endpoint_doc = (
        "One WebSocket connection carries the whole protocol: JSON text frames both ways. Authentication "
        f"failures are reported after the handshake with close code 1008 and a reason ({', '.join(AUTH_REASONS)},"
        " Origin not allowed, Too many connections)."
    )
    channels = {
        "authenticated": {
            "address": "/ws/authenticated",
            "title": "WebSocket endpoint",
            "description": endpoint_doc,
            "messages": channel_messages,
        },
        "user": {
            "address": "/ws/{user_id}",
            "title": "WebSocket endpoint (checked user id)",
            "description": endpoint_doc + " The token's user must be `user_id` (else 1008 User id mismatch).",
            "parameters": {"user_id": {"description": "The id of the token's user."}},
            "messages": channel_messages,
        },
    }
    operations: dict[str, Any] = {}
    for msg_type in CLIENT_MESSAGES:
        replies = [*REPLIES.get(msg_type, ()), ERROR_REPLY]
        operations[f"receive.{msg_type}"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/authenticated"},
            "summary": f"A client sends `{msg_type}`",
            "messages": [{"$ref": f"#/channels/authenticated/messages/{_client_key(msg_type)}"}],
            "reply": {
                "channel": {"$ref": "#/channels/authenticated"},
                "messages": [{"$ref": f"#/channels/authenticated/messages/{_server_key(r)}"} for r in replies],
            },
        }
    replies_only = {r for rs in REPLIES.values() for r in rs} | {ERROR_REPLY}
    for msg_type, server_model in server_models.items():
        stream = issubclass(server_model, ChannelEvent)
        operations[f"send.{msg_type}"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/authenticated"},
            "summary": (
                f"`{msg_type}` on a channel the connection is subscribed to"
                if stream
                else "The reply to a client message"
                if msg_type in replies_only
                else f"`{msg_type}`"
            ),
            "messages": [{"$ref": f"#/channels/authenticated/messages/{_server_key(msg_type)}"}],
        }

    namespaced_set = set(namespaced)
    ns_doc = []
    for name, fields, ns_model in namespaces:
        argument = fields.get("argument", name in namespaced_set)
        entry: dict[str, Any] = {"name": name, "pattern": f"{name}:<arg>" if argument else name, "policy": fields}
        if ns_model is not None:
            entry["publicationData"] = ref(ns_model, "serialization")
        ns_doc.append(entry)

    close_codes = [
        {
            "code": int(info.code),
            "name": info.name,
            "action": info.action.value,
            "class": "reconnect" if info.action.retries else "terminal" if info.action.value == "terminal" else "stop",
            "meaning": info.meaning,
            "sentByServer": info.sent_by_server,
            "signIn": info.sign_in,
            "signInReasons": list(info.sign_in_reasons),
        }
        for info in CLOSE_CODES.values()
    ]
    close_ranges = [
        {"first": r.first, "last": r.last, "action": r.action.value, "meaning": r.meaning} for r in CLOSE_RANGES
    ]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"{title} WebSocket protocol",
            "version": version,
            "description": (
                "Real-time messages over one authenticated WebSocket. Client messages have a `type` and an "
                "optional `id` echoed in the reply; an `error` reply (with `code`, and `field` for "
                "`bad_request`) keeps the connection open. Channel streams carry `channel`, `offset` and "
                "`epoch`; a client resumes with `subscribe` + `since`. An event published on several channels "
                "at once lists them in `copies`, and each connection receives it once: the copy of the first "
                "listed channel it is subscribed to. Close codes: `x-tidings-close-codes`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "hub": {
                "host": host,
                "protocol": scheme,
                "description": "This server.",
                "security": security,
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages, "securitySchemes": schemes},
        "x-tidings-namespaces": ns_doc,
        "x-tidings-close-codes": close_codes,
        "x-tidings-close-ranges": close_ranges,
    }
