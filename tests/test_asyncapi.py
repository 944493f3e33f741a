"""``GET /asyncapi.json``: a valid AsyncAPI 3.0 document that lists every message the server sends, and a client
written from that document alone, whose validators accept every real reply of a live server."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer
from tidings.asyncapi import asyncapi_document
from tidings.channels import ChannelRules, Namespace
from tidings.close_codes import CLOSE_CODES
from tidings.messages import CLIENT_MESSAGES, server_message_models

DATA = Path(__file__).parent / "data"
#: The official AsyncAPI 3.0.0 JSON Schema (github.com/asyncapi/spec-json-schemas, schemas/3.0.0.json, Apache-2.0).
ASYNCAPI_SCHEMA = json.loads((DATA / "asyncapi-3.0.0.schema.json").read_text())
SRC = Path(__file__).resolve().parent.parent / "src" / "tidings"


def validate_document(doc: dict[str, Any]) -> list[str]:
    """Errors of ``doc`` against the official AsyncAPI 3.0.0 schema."""
    validator = jsonschema.Draft7Validator(ASYNCAPI_SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def test_document_is_valid_asyncapi_3() -> None:
    import tidings.crawler.events  # noqa: F401  (the platform's events, as the full app registers them)

    doc = asyncapi_document(rules=ChannelRules(), token_cookie="tidings_token")
    assert doc["asyncapi"] == "3.0.0"
    assert validate_document(doc) == []


def test_the_validation_can_fail() -> None:
    """The check above is not vacuous: a broken document is refused by the official schema."""
    doc = asyncapi_document(rules=ChannelRules())
    broken = copy.deepcopy(doc)
    broken["operations"]["receive.ping"]["action"] = "publish"  # AsyncAPI 2 wording, not 3
    assert validate_document(broken)
    broken = copy.deepcopy(doc)
    del broken["channels"]["authenticated"]["address"]
    broken["channels"]["authenticated"]["address"] = 5
    assert validate_document(broken)


def _server_types_in_source() -> set[str]:
    """Every ``"type": "..."`` literal of a server -> client message written in the server's source."""
    skip = {"client.py", "protocol.py", "cli.py"}  # the Python client; the crawl child's JSON-lines protocol
    types: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.name in skip or "sample_site" in path.parts:
            continue
        types |= set(re.findall(r'"type":\s*"([a-z_]+)"', path.read_text()))
    # ASGI scope types, and the node-to-node command on the control channel (tidings.channels.disconnect_command),
    # which no client receives
    return types - {"http", "websocket", "lifespan", "disconnect"}


def test_every_message_the_server_can_send_is_in_the_document() -> None:
    import tidings.crawler.events
    import tidings.web.stats  # noqa: F401  (the dashboard's stats_update)

    doc = asyncapi_document(rules=ChannelRules())
    names = {m["name"] for key, m in doc["components"]["messages"].items() if key.startswith("server.")}
    assert set(server_message_models()) <= names
    literal = _server_types_in_source() - set(CLIENT_MESSAGES)
    assert literal, "the source scan found nothing: the pattern is stale"
    assert literal <= names, f"sent by the server but missing from /asyncapi.json: {sorted(literal - names)}"
    sent = {op["messages"][0]["$ref"].rsplit("/", 1)[1] for op in doc["operations"].values() if op["action"] == "send"}
    assert {f"server.{n}" for n in names} == sent


def test_close_codes_and_namespaces_are_in_the_document() -> None:
    class Order(BaseModel):
        order_id: int
        status: str

    rules = ChannelRules()
    rules.declare("orders", Namespace(model=Order))
    rules.declare("room", Namespace(publish="clients", presence=True))
    doc = asyncapi_document(rules=rules)
    assert validate_document(doc) == []
    codes = {row["code"]: row for row in doc["x-tidings-close-codes"]}
    assert set(codes) == {int(c) for c in CLOSE_CODES}
    assert codes[4003]["class"] == "reconnect" and codes[4003]["signIn"] is True
    assert codes[1008]["class"] == "terminal"
    spaces = {ns["name"]: ns for ns in doc["x-tidings-namespaces"]}
    assert spaces["room"]["pattern"] == "room:<arg>" and spaces["room"]["policy"]["presence"] is True
    orders = spaces["orders"]
    assert orders["publicationData"] == {"$ref": "#/components/schemas/Order"}
    assert set(doc["components"]["schemas"]["Order"]["properties"]) == {"order_id", "status"}
    assert "publicationData" not in spaces["room"]


# ---- a client written only from /asyncapi.json ----------------------------------------------------------------
class SpecClient:
    """Knows the protocol only through the AsyncAPI document: endpoint, message names, payload schemas."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.address = doc["channels"]["authenticated"]["address"]
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def validator(self, key: str) -> jsonschema.Draft202012Validator:
        payload = self.doc["components"]["messages"][key]["payload"]
        return jsonschema.Draft202012Validator({**payload, "components": self.doc["components"]})

    def server_key(self, msg_type: str) -> str:
        for key, message in self.doc["components"]["messages"].items():
            if key.startswith("server.") and message["name"] == msg_type:
                return str(key)
        raise AssertionError(f"the document has no server message {msg_type!r}")

    def check_outgoing(self, message: dict[str, Any]) -> None:
        self.validator(f"client.{message['type']}").validate(message)

    def check_incoming(self, message: dict[str, Any]) -> None:
        self.validator(self.server_key(message["type"])).validate(message)
        self.seen.setdefault(message["type"], []).append(message)


async def _read_all(ws: ClientConnection, client: SpecClient, into: list[dict[str, Any]]) -> None:
    async for text in ws:
        message = json.loads(text)
        client.check_incoming(message)
        into.append(message)


async def _wait_for(box: list[dict[str, Any]], pred: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in box:
            if pred(message):
                return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"no matching message among {[m.get('type') for m in box]}")


@pytest.mark.slow
async def test_a_client_built_from_the_document_validates_every_real_reply(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        doc = (await http.get("/asyncapi.json")).json()
        assert validate_document(doc) == []
        spec = SpecClient(doc)
        server_info = doc["servers"]["hub"]
        url = f"{server_info['protocol']}://{server_info['host']}{spec.address}"
        admin_token = server.token("admin")
        inbox: dict[str, list[dict[str, Any]]] = {"ann": [], "bob": [], "admin": []}
        sockets = {
            name: await websockets.connect(url, subprotocols=["bearer", server.token(name)])  # type: ignore[list-item]
            for name in ("ann", "bob", "admin")
        }
        readers = [asyncio.create_task(_read_all(ws, spec, inbox[name])) for name, ws in sockets.items()]
        try:

            async def send(name: str, message: dict[str, Any], check: bool = True) -> None:
                if check:
                    spec.check_outgoing(message)
                await sockets[name].send(json.dumps(message))

            def reply(name: str, msg_id: str) -> Any:
                return _wait_for(inbox[name], lambda m: m.get("id") == msg_id)

            for name in sockets:
                await _wait_for(inbox[name], lambda m: m["type"] == "connection_established")
            await send("ann", {"type": "ping", "id": "p"})
            assert (await reply("ann", "p"))["type"] == "pong"
            await send("ann", {"type": "subscribe", "subscription": "room:spec", "id": "s"})
            assert (await reply("ann", "s"))["type"] == "subscription_confirmed"
            await send("ann", {"type": "subscribe", "subscription": "nope!", "id": "se"})
            assert (await reply("ann", "se"))["type"] == "subscription_error"
            await send("ann", {"type": "subscribe", "subscription": "property_updates", "id": "sp"})
            await reply("ann", "sp")
            await send("bob", {"type": "subscribe", "subscription": "room:spec", "id": "s2"})
            await reply("bob", "s2")
            await _wait_for(inbox["ann"], lambda m: m["type"] == "join")
            await send("bob", {"type": "publish", "channel": "room:spec", "data": {"text": "hi"}, "id": "pub"})
            assert (await reply("bob", "pub"))["type"] == "publish_ack"
            await _wait_for(inbox["ann"], lambda m: m["type"] == "publication")
            await send("ann", {"type": "presence", "subscription": "room:spec", "id": "pr"})
            assert (await reply("ann", "pr"))["type"] == "presence"
            await send("ann", {"type": "request_status", "id": "st"})
            assert (await reply("ann", "st"))["type"] == "status_update"
            await send("bob", {"type": "unsubscribe", "subscription": "room:spec", "id": "u"})
            assert (await reply("bob", "u"))["type"] == "unsubscribed"
            await _wait_for(inbox["ann"], lambda m: m["type"] == "leave")
            # errors: the document's client schema refuses what the server answers bad_request to
            bad = {"type": "subscribe", "id": "bad"}
            with pytest.raises(jsonschema.ValidationError):
                spec.check_outgoing(bad)
            await send("ann", bad, check=False)
            error = await reply("ann", "bad")
            assert (error["type"], error["code"], error["field"]) == ("error", "bad_request", "subscription")
            await sockets["ann"].send("not json")
            await _wait_for(inbox["ann"], lambda m: m.get("code") == "invalid_json")
            # notifications and the platform's events
            auth = {"Authorization": f"Bearer {admin_token}"}
            assert (await http.post("/admin/broadcast", json={"message": "m"}, headers=auth)).status_code == 200
            assert (await http.post("/admin/notify-admins", json={"message": "m"}, headers=auth)).status_code == 200
            await _wait_for(inbox["ann"], lambda m: m["type"] == "system_notification")
            await _wait_for(inbox["admin"], lambda m: m["type"] == "admin_notification")
            job = await http.post(
                "/api/jobs",
                json={"spider_name": "listings", "target_urls": [f"{server.url}/sample-site/"]},
                headers={"Authorization": f"Bearer {server.token('ann')}"},
            )
            assert job.status_code in (200, 201, 202), job.text
            await _wait_for(inbox["ann"], lambda m: m["type"] == "job_update" and m["event"] == "job_completed", 180)
            await _wait_for(inbox["ann"], lambda m: m["type"] == "property_notification", 60)
            # the dashboard's pushed figures
            await send("ann", {"type": "subscribe", "subscription": "dashboard_stats", "id": "ds"})
            await reply("ann", "ds")
            await _wait_for(inbox["ann"], lambda m: m["type"] == "stats_update", 30)
        finally:
            for ws in sockets.values():
                await ws.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    names = {m["name"] for key, m in doc["components"]["messages"].items() if key.startswith("server.")}
    assert set(spec.seen) == names, f"not exercised: {sorted(names - set(spec.seen))}"
