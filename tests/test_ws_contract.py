"""The WebSocket contract of ``docs/protocol.md`` against real ``tidings serve`` processes and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, connected, expect_close, recv_json, recv_until, ws_connect
from tidings.api.ws import extract_token, origin_allowed

# ---- servers and helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    """The default server: same-origin only, 5 connections per user, 64 KiB messages."""
    server: LiveServer = module_server_factory()
    for name in ("ann", "bob", "cat", "dan", "eve"):
        server.create_user(name)
    return server


@pytest.fixture(scope="module")
def ids(srv: LiveServer) -> dict[str, int]:
    """User ids by name (the admin was created first, at the server's first start)."""
    out = {}
    for name in ("admin", "ann", "bob", "cat", "dan"):
        resp = httpx.get(f"{srv.url}/api/me", headers={"Authorization": f"Bearer {srv.token(name)}"})
        assert resp.status_code == 200, resp.text
        out[name] = resp.json()["user_id"]
    return out


@pytest.fixture(scope="module")
def tight(module_server_factory: Any) -> LiveServer:
    """A server with an origin allowlist and a 1 KiB message limit."""
    server: LiveServer = module_server_factory(
        env={"TIDINGS_ALLOWED_ORIGINS": "http://a.example, http://c.example/", "TIDINGS_MAX_MESSAGE_BYTES": "1024"}
    )
    server.create_user("ann")
    return server


@pytest.fixture(scope="module")
def idle(module_server_factory: Any) -> LiveServer:
    """A server closing connections after one second without inbound messages."""
    server: LiveServer = module_server_factory(env={"TIDINGS_IDLE_TIMEOUT": "1"})
    server.create_user("ann")
    return server


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def request(ws: ClientConnection, message: dict[str, Any], reply_type: str | None = None) -> dict[str, Any]:
    """Send ``message`` with a fresh id and return the reply carrying that id."""
    msg_id = f"r{time.monotonic_ns()}"
    await send(ws, {**message, "id": msg_id})
    while True:
        reply = await recv_json(ws)
        if reply.get("id") == msg_id:
            if reply_type is not None:
                assert reply["type"] == reply_type, reply
            return reply


async def rest_publish(srv: LiveServer, channel: str, data: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        resp = await http.post("/api/publish", json={"channel": channel, "data": data}, headers=srv.admin_headers())
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def wait_stats(srv: LiveServer, connections: int) -> dict[str, int]:
    """Wait until the server counts ``connections`` (disconnects are processed asynchronously)."""
    stats: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=srv.url) as http:
        for _ in range(200):
            stats = (await http.get("/api/stats")).json()
            if stats["connections"] == connections:
                return stats
            await asyncio.sleep(0.05)
    raise AssertionError(f"server still counts {stats}, expected {connections} connections")


async def rejected(url: str, token: str | None = None, **kwargs: Any) -> tuple[int | None, str | None]:
    """Connect and return the close code and reason the server answers with (no message before the close)."""
    ws = await ws_connect(url, token, **kwargs)
    try:
        with pytest.raises(websockets.ConnectionClosed):
            msg = await recv_json(ws, timeout=10)
            raise AssertionError(f"expected a close, got {msg}")
        return ws.close_code, ws.close_reason
    finally:
        await ws.close()


# ---- handshake: where the token comes from -----------------------------------------------------------------


async def test_token_in_the_bearer_subprotocol(srv: LiveServer, ids: dict[str, int]) -> None:
    ws = await ws_connect(srv.ws_url(), srv.token("ann"))
    try:
        assert ws.subprotocol == "bearer"  # the marker is echoed, never the token
        hello = await recv_json(ws)
        assert hello == {
            "type": "connection_established",
            "user_id": ids["ann"],
            "username": "ann",
            "role": "user",
            "message": "Connected to real-time updates",
            "channels": ["broadcast", f"user:{ids['ann']}"],
        }
    finally:
        await ws.close()


async def test_token_in_the_authorization_header(srv: LiveServer, ids: dict[str, int]) -> None:
    ws = await ws_connect(srv.ws_url(), additional_headers={"Authorization": f"Bearer {srv.token('bob')}"})
    try:
        assert ws.subprotocol is None
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established" and hello["user_id"] == ids["bob"]
    finally:
        await ws.close()


async def test_token_in_the_query_is_not_logged(srv: LiveServer, ids: dict[str, int]) -> None:
    token = srv.token("ann", ttl=1234)  # a token no other test uses
    bad = "x" + token[1:-3] + "bad"
    ws = await ws_connect(srv.ws_url() + f"?token={token}")
    try:
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established" and hello["user_id"] == ids["ann"]
    finally:
        await ws.close()
    assert await rejected(srv.ws_url() + f"?x=1&token={bad}") == (1008, "Invalid token")
    for _ in range(100):  # the access log line is written asynchronously by the server process
        if srv.log().count("token=[redacted]") >= 2:
            break
        await asyncio.sleep(0.05)
    log = srv.log()
    assert "token=[redacted]" in log
    assert token not in log
    assert bad not in log
    assert token[-20:] not in log


async def test_admin_is_subscribed_to_the_admins_channel(srv: LiveServer, ids: dict[str, int]) -> None:
    async with connected(srv, "admin") as ws:
        reply = await request(ws, {"type": "subscribe", "subscription": "admins"}, "subscription_confirmed")
        assert reply["subscription"] == "admins"
    ws = await ws_connect(srv.ws_url(), srv.token("admin"))
    try:
        hello = await recv_json(ws)
        assert hello["role"] == "admin"
        assert hello["channels"] == ["broadcast", f"user:{ids['admin']}", "admins"]
    finally:
        await ws.close()


async def test_user_id_path(srv: LiveServer, ids: dict[str, int]) -> None:
    ws = await ws_connect(srv.ws_url(f"/ws/{ids['ann']}"), srv.token("ann"))
    try:
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established" and hello["user_id"] == ids["ann"]
    finally:
        await ws.close()


@pytest.mark.parametrize("path_id", ["other", "abc", "0", "-1", "1.0", "%20"])
async def test_user_id_path_mismatch(srv: LiveServer, ids: dict[str, int], path_id: str) -> None:
    path_id = str(ids["bob"]) if path_id == "other" else path_id
    assert await rejected(srv.ws_url(f"/ws/{path_id}"), srv.token("ann")) == (1008, "User id mismatch")


async def test_user_id_path_with_leading_zero_is_refused(srv: LiveServer, ids: dict[str, int]) -> None:
    assert await rejected(srv.ws_url(f"/ws/0{ids['ann']}"), srv.token("ann")) == (1008, "User id mismatch")


@pytest.mark.parametrize("path", ["/ws/authenticated", "/ws/2"])
async def test_missing_token(srv: LiveServer, path: str) -> None:
    assert await rejected(srv.ws_url(path)) == (1008, "Authentication required")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"query": "?token="},
        {"additional_headers": {"Authorization": "Bearer "}},
        {"additional_headers": {"Authorization": "Basic YW5uOnB3"}},
        {"subprotocols": ["bearer"]},
    ],
)
async def test_empty_or_malformed_credentials(srv: LiveServer, kwargs: dict[str, Any]) -> None:
    query = kwargs.pop("query", "")
    assert await rejected(srv.ws_url() + query, **kwargs) == (1008, "Authentication required")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30."])
async def test_invalid_token(srv: LiveServer, token: str) -> None:
    assert await rejected(srv.ws_url(), token) == (1008, "Invalid token")


async def test_expired_token(srv: LiveServer) -> None:
    assert await rejected(srv.ws_url(), srv.token("ann", ttl=-10)) == (1008, "Token expired")


async def test_unknown_user(srv: LiveServer) -> None:
    assert await rejected(srv.ws_url(), srv.token("nobody")) == (1008, "User not found or inactive")


# ---- handshake: Origin ---------------------------------------------------------------------------------------


async def test_same_origin_and_no_origin_pass_by_default(srv: LiveServer) -> None:
    for origin in (f"http://127.0.0.1:{srv.port}", None):
        kwargs = {"origin": origin} if origin else {}
        async with connected(srv, "ann", **kwargs) as ws:
            assert (await request(ws, {"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "https://127.0.0.1:{port}", "http://127.0.0.1:1", "http://localhost:{port}"]
)
async def test_foreign_origin_refused_by_default(srv: LiveServer, origin: str) -> None:
    origin = origin.format(port=srv.port)
    reason = f"Origin not allowed: add {origin} to TIDINGS_ALLOWED_ORIGINS"
    assert await rejected(srv.ws_url(), srv.token("ann"), origin=origin) == (1008, reason)


async def test_origin_checked_before_the_token(srv: LiveServer) -> None:
    reason = "Origin not allowed: add http://evil.example to TIDINGS_ALLOWED_ORIGINS"
    assert await rejected(srv.ws_url(), origin="http://evil.example") == (1008, reason)


@pytest.mark.parametrize("origin", ["http://a.example", "http://c.example", None, "own"])
async def test_allowlisted_origins_pass(tight: LiveServer, origin: str | None) -> None:
    # the server's own origin stays allowed: the allowlist adds to it (the built-in dashboard keeps working)
    origin = f"http://127.0.0.1:{tight.port}" if origin == "own" else origin
    kwargs = {"origin": origin} if origin else {}
    async with connected(tight, "ann", **kwargs) as ws:
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("origin", ["http://b.example", "https://a.example", "http://a.example:8080"])
async def test_origins_outside_the_allowlist_are_refused(tight: LiveServer, origin: str) -> None:
    reason = f"Origin not allowed: add {origin} to TIDINGS_ALLOWED_ORIGINS"
    assert await rejected(tight.ws_url(), tight.token("ann"), origin=origin) == (1008, reason)


# ---- messages ------------------------------------------------------------------------------------------------


async def test_ping_pong_with_id(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        before = time.time()
        for msg_id in ("a", 17, 0):
            await send(ws, {"type": "ping", "id": msg_id})
            pong = await recv_json(ws)
            assert pong.keys() == {"type", "timestamp", "id"}
            assert pong["type"] == "pong" and pong["id"] == msg_id
            assert isinstance(pong["timestamp"], float) and pong["timestamp"] >= before - 1
        await send(ws, {"type": "ping"})
        assert (await recv_json(ws)).keys() == {"type", "timestamp"}


@pytest.mark.parametrize("channel", ["property_updates", "system_alerts", "property:42", "room:lobby"])
async def test_subscribe_confirmed(srv: LiveServer, channel: str) -> None:
    async with connected(srv, "ann") as ws:
        await send(ws, {"type": "subscribe", "subscription": channel, "id": 5})
        reply = await recv_json(ws)
        assert reply["type"] == "subscription_confirmed"
        assert reply["subscription"] == channel and reply["id"] == 5
        assert isinstance(reply["offset"], int) and isinstance(reply["epoch"], str) and reply["epoch"]


async def test_subscribe_with_channel_key(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        reply = await request(ws, {"type": "subscribe", "channel": "system_alerts"}, "subscription_confirmed")
        assert reply["subscription"] == "system_alerts"


async def test_subscribe_job_updates(srv: LiveServer, ids: dict[str, int]) -> None:
    async with connected(srv, "ann") as ws:
        reply = await request(ws, {"type": "subscribe", "subscription": "job_updates"}, "subscription_confirmed")
        assert reply["subscription"] == "job_updates"
        assert reply["scope"] == f"user:{ids['ann']}"  # a user's own jobs' events arrive on user:<id>
    async with connected(srv, "admin") as ws:
        reply = await request(ws, {"type": "subscribe", "subscription": "job_updates"}, "subscription_confirmed")
        assert "scope" not in reply and isinstance(reply["offset"], int)


async def test_subscribe_twice_is_confirmed_again(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        first = await request(ws, {"type": "subscribe", "subscription": "system_alerts"}, "subscription_confirmed")
        second = await request(ws, {"type": "subscribe", "subscription": "system_alerts"}, "subscription_confirmed")
        assert (first["offset"], first["epoch"]) == (second["offset"], second["epoch"])


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        ("nope", "invalid_subscription"),
        ("", "invalid_subscription"),
        ("room", "invalid_subscription"),
        ("room:", "invalid_subscription"),
        ("property_updates:1", "invalid_subscription"),
        ("bad channel!", "invalid_subscription"),
        ("x" * 129, "invalid_subscription"),
        ("admins", "forbidden"),
        ("user:999999", "forbidden"),
        ("job:1", "forbidden"),
    ],
)
async def test_subscription_error(srv: LiveServer, channel: str, code: str) -> None:
    async with connected(srv, "ann") as ws:
        await send(ws, {"type": "subscribe", "subscription": channel, "id": "s"})
        assert await recv_json(ws) == {
            "type": "subscription_error",
            "subscription": channel,
            "code": code,
            "message": f"Invalid subscription: {channel}",
            "id": "s",
        }
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"


async def test_publications_reach_subscribers_until_they_unsubscribe(srv: LiveServer) -> None:
    async with connected(srv, "ann") as sub, connected(srv, "bob") as other:
        await request(sub, {"type": "subscribe", "subscription": "property_updates"}, "subscription_confirmed")
        await request(sub, {"type": "subscribe", "subscription": "system_alerts"}, "subscription_confirmed")
        await request(other, {"type": "subscribe", "subscription": "system_alerts"}, "subscription_confirmed")
        first = await rest_publish(srv, "property_updates", {"n": 1})
        msg = await recv_json(sub)
        assert isinstance(msg.pop("timestamp"), float)  # the server's time of publication
        assert msg == {
            "type": "publication",
            "channel": "property_updates",
            "data": {"n": 1},
            "offset": first["offset"],
            "epoch": first["epoch"],
        }
        reply = await request(sub, {"type": "unsubscribe", "subscription": "property_updates"})
        assert {k: v for k, v in reply.items() if k != "id"} == {
            "type": "unsubscribed",
            "subscription": "property_updates",
        }
        await rest_publish(srv, "property_updates", {"n": 2})
        marker = await rest_publish(srv, "system_alerts", {"marker": True})
        msg = await recv_json(sub)  # the marker comes next: n=2 was not delivered
        assert msg["channel"] == "system_alerts" and msg["offset"] == marker["offset"]
        msg = await recv_json(other)  # bob never subscribed to property_updates
        assert msg["channel"] == "system_alerts" and msg["data"] == {"marker": True}


@pytest.mark.parametrize("channel", ["property_updates", "broadcast", "nope"])
async def test_unsubscribe_what_is_not_subscribed(srv: LiveServer, ids: dict[str, int], channel: str) -> None:
    async with connected(srv, "ann") as ws:
        reply = await request(ws, {"type": "unsubscribe", "subscription": channel}, "error")
        assert reply["code"] == "not_found" and channel in reply["message"]


async def test_request_status_reflects_real_connections(srv: LiveServer) -> None:
    await wait_stats(srv, connections=0)
    async with connected(srv, "dan") as ws:
        status = await request(ws, {"type": "request_status"}, "status_update")
        assert {"active_jobs", "total_properties", "server_time", "user_connections"} <= status.keys()
        assert isinstance(status["active_jobs"], int) and isinstance(status["total_properties"], int)
        assert abs(status["server_time"] - time.time()) < 60
        assert (status["user_connections"], status["users"], status["my_connections"]) == (1, 1, 1)
        async with connected(srv, "dan"), connected(srv, "ann"):
            status = await request(ws, {"type": "request_status"}, "status_update")
            assert (status["user_connections"], status["users"], status["my_connections"]) == (3, 2, 2)
        await wait_stats(srv, connections=1)
        status = await request(ws, {"type": "request_status"}, "status_update")
        assert (status["user_connections"], status["users"], status["my_connections"]) == (1, 1, 1)


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (
            '{"type": "dance", "id": 3}',
            {"code": "unknown_type", "message": "Unknown message type: dance", "id": 3, "field": "type"},
        ),
        ('{"id": "x"}', {"code": "unknown_type", "message": "Unknown message type: None", "id": "x", "field": "type"}),
        ("not json", {"code": "invalid_json", "message": "Invalid JSON format"}),
        ("{", {"code": "invalid_json", "message": "Invalid JSON format"}),
        ("", {"code": "invalid_json", "message": "Invalid JSON format"}),
        ("[1, 2]", {"code": "bad_request", "message": "A message must be a JSON object"}),
        (
            '{"type": "subscribe"}',
            {"code": "bad_request", "message": "'subscription' is required for subscribe", "field": "subscription"},
        ),
        (
            '{"type": "subscribe", "subscription": 5, "id": 1}',
            {"code": "bad_request", "message": "'subscription' must be a string", "id": 1, "field": "subscription"},
        ),
        (
            '{"type": "ping", "id": true}',
            {"code": "bad_request", "message": "'id' must be a string or an integer", "field": "id"},
        ),
        (
            '{"type": "publish", "channel": "room:a"}',
            {"code": "bad_request", "message": "'data' is required for publish", "field": "data"},
        ),
    ],
)
async def test_error_replies_keep_the_connection_open(srv: LiveServer, message: str, reply: dict[str, Any]) -> None:
    async with connected(srv, "ann") as ws:
        await ws.send(message)
        assert await recv_json(ws) == {"type": "error", **reply}
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"


async def test_binary_frames_get_an_error_reply(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        await ws.send(b'{"type": "ping"}')
        reply = await recv_json(ws)
        assert reply["type"] == "error" and reply["code"] == "bad_request"
        assert "Binary" in reply["message"]
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"


async def test_bad_since_is_a_bad_request(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        reply = await request(ws, {"type": "subscribe", "subscription": "room:r", "since": {"offset": -1}}, "error")
        assert reply["code"] == "bad_request"
        assert reply["field"] == "since.offset"


async def test_client_publish_on_a_room(srv: LiveServer, ids: dict[str, int]) -> None:
    async with connected(srv, "ann") as reader, connected(srv, "bob") as writer:
        await request(reader, {"type": "subscribe", "subscription": "room:chat"}, "subscription_confirmed")
        ack = await request(writer, {"type": "publish", "channel": "room:chat", "data": {"text": "hi"}}, "publish_ack")
        assert ack["channel"] == "room:chat" and isinstance(ack["offset"], int) and ack["epoch"]
        msg = await recv_until(reader, "publication")
        assert isinstance(msg.pop("timestamp"), float)  # the server's time of publication
        assert msg == {
            "type": "publication",
            "channel": "room:chat",
            "data": {"user": {"user_id": ids["bob"], "username": "bob"}, "body": {"text": "hi"}},
            "offset": ack["offset"],
            "epoch": ack["epoch"],
        }


@pytest.mark.parametrize("channel", ["property_updates", "broadcast", "system_alerts", "nope"])
async def test_client_publish_elsewhere_is_forbidden(srv: LiveServer, channel: str) -> None:
    async with connected(srv, "ann") as ws:
        reply = await request(ws, {"type": "publish", "channel": channel, "data": 1}, "error")
        assert reply["code"] == "forbidden"


async def test_presence_and_join_events(srv: LiveServer, ids: dict[str, int]) -> None:
    async with connected(srv, "ann") as ann, connected(srv, "bob") as bob:
        await request(ann, {"type": "subscribe", "subscription": "room:pres"}, "subscription_confirmed")
        await request(bob, {"type": "subscribe", "subscription": "room:pres"}, "subscription_confirmed")
        own = await recv_until(ann, "join")  # ann's own join comes first (she subscribed first)
        assert own["channel"] == "room:pres" and own["user"] == {"user_id": ids["ann"], "username": "ann"}
        join = await recv_until(ann, "join")
        assert join["channel"] == "room:pres" and join["user"] == {"user_id": ids["bob"], "username": "bob"}
        reply = await request(ann, {"type": "presence", "subscription": "room:pres"}, "presence")
        assert reply["users"] == [  # one entry per user, by id
            {"user_id": ids["ann"], "username": "ann"},
            {"user_id": ids["bob"], "username": "bob"},
        ]
        await request(bob, {"type": "unsubscribe", "subscription": "room:pres"}, "unsubscribed")
        leave = await recv_until(ann, "leave")
        assert leave["user"]["user_id"] == ids["bob"]


async def test_recovery_from_history(srv: LiveServer) -> None:
    offsets = [(await rest_publish(srv, "room:hist", {"n": n}))["offset"] for n in range(3)]
    epoch = (await rest_publish(srv, "room:hist", {"n": 3}))["epoch"]
    async with connected(srv, "ann") as ws:
        since = {"offset": offsets[0], "epoch": epoch}
        await send(ws, {"type": "subscribe", "subscription": "room:hist", "since": since, "id": 1})
        got = [await recv_json(ws) for _ in range(4)]
        assert [m.get("data") for m in got[:3]] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert [m["offset"] for m in got[:3]] == [offsets[0] + 1, offsets[0] + 2, offsets[0] + 3]
        assert got[3]["type"] == "subscription_confirmed" and got[3]["recovered"] is True
        assert got[3]["offset"] == offsets[0] + 3 and got[3]["id"] == 1
    async with connected(srv, "ann") as ws:
        since = {"offset": 1, "epoch": "another-epoch"}
        reply = await request(ws, {"type": "subscribe", "subscription": "room:hist", "since": since})
        assert reply["type"] == "subscription_confirmed" and reply["recovered"] is False
        assert reply["epoch"] == epoch


async def test_rate_limit_replies_with_errors_then_closes_a_flooder(srv: LiveServer) -> None:
    ws = await ws_connect(srv.ws_url(), srv.token("ann"))
    assert (await recv_json(ws))["type"] == "connection_established"
    for n in range(400):  # the default burst is 100 messages, refilled at 50 per second
        await ws.send(json.dumps({"type": "ping", "id": n}))
    replies: list[dict[str, Any]] = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            replies.append(await recv_json(ws, timeout=10))
    assert ws.close_code == 4002 and ws.close_reason == "Rate limit exceeded"
    pongs = [r for r in replies if r["type"] == "pong"]
    errors = [r for r in replies if r["type"] == "error"]
    assert len(pongs) >= 100 and errors
    assert all(r["code"] == "rate_limited" and isinstance(r["id"], int) for r in errors)
    assert len(pongs) + len(errors) < 400  # the flood was cut short by the close


async def test_rate_limit_errors_without_close_when_the_client_backs_off(srv: LiveServer) -> None:
    async with connected(srv, "ann") as ws:
        for _ in range(150):
            await ws.send('{"type": "ping"}')
        replies = [await recv_json(ws) for _ in range(150)]
        assert {r["type"] for r in replies} == {"pong", "error"}
        assert all(r["code"] == "rate_limited" for r in replies if r["type"] == "error")
        await asyncio.sleep(1.0)  # let the bucket refill: the connection is still usable
        await ws.send('{"type": "ping", "id": "after"}')
        assert (await recv_until(ws, "pong"))["id"] == "after"


# ---- limits --------------------------------------------------------------------------------------------------


async def test_too_many_connections(srv: LiveServer) -> None:
    conns = [await ws_connect(srv.ws_url(), srv.token("cat")) for _ in range(5)]
    try:
        for ws in conns:
            assert (await recv_json(ws))["type"] == "connection_established"
        assert await rejected(srv.ws_url(), srv.token("cat")) == (1008, "Too many connections")
        async with connected(srv, "ann") as other:  # other users are not affected
            assert (await request(other, {"type": "ping"}))["type"] == "pong"
        await conns.pop().close()
        for _ in range(100):  # the server forgets the closed connection asynchronously
            ws = await ws_connect(srv.ws_url(), srv.token("cat"))
            try:
                first = await recv_json(ws)
            except websockets.ConnectionClosed:
                assert (ws.close_code, ws.close_reason) == (1008, "Too many connections")
                await asyncio.sleep(0.05)
                continue
            conns.append(ws)
            break
        assert first["type"] == "connection_established"
        assert len(conns) == 5
    finally:
        for ws in conns:
            await ws.close()


async def test_connection_limit_holds_for_concurrent_connects(srv: LiveServer) -> None:
    conns = await asyncio.gather(*(ws_connect(srv.ws_url(), srv.token("eve")) for _ in range(8)))
    try:
        outcomes = []
        for ws in conns:
            try:
                outcomes.append((await recv_json(ws, timeout=10))["type"])
            except websockets.ConnectionClosed:
                assert (ws.close_code, ws.close_reason) == (1008, "Too many connections")
                outcomes.append("refused")
        assert sorted(outcomes) == ["connection_established"] * 5 + ["refused"] * 3
    finally:
        for ws in conns:
            await ws.close()


async def test_message_too_big(tight: LiveServer) -> None:
    async with connected(tight, "ann") as ws:
        padding = "x" * (1024 - len('{"type":"ping","pad":""}'))
        await ws.send(json.dumps({"type": "ping", "pad": padding}, separators=(",", ":")))
        assert (await recv_json(ws))["type"] == "pong"  # exactly at the limit: served
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 2000}))
        code, _ = await expect_close(ws)
        assert code == 1009


async def test_binary_message_too_big(tight: LiveServer) -> None:
    async with connected(tight, "ann") as ws:
        await ws.send(b"\x00" * 4096)
        code, _ = await expect_close(ws)
        assert code == 1009


async def test_idle_connections_are_closed_but_active_ones_stay(idle: LiveServer) -> None:
    async with connected(idle, "ann") as quiet, connected(idle, "ann") as active:
        closed = asyncio.create_task(expect_close(quiet, timeout=30))
        started = time.monotonic()
        pongs = 0
        # keep pinging for at least three idle timeouts and until the quiet one was closed
        while not closed.done() or time.monotonic() - started < 3.5:
            reply = await request(active, {"type": "ping"})
            assert reply["type"] == "pong"
            pongs += 1
            await asyncio.sleep(0.1)  # well inside the 1 s timeout, even on a busy machine
        assert await closed == (4001, "Idle timeout")
        assert pongs >= 10
        assert (await request(active, {"type": "ping"}))["type"] == "pong"


# ---- unit: token extraction and the origin rule ----------------------------------------------------------------


def scope_of(headers: dict[str, str], query: str = "", subprotocols: list[str] | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": query.encode(),
    }
    if subprotocols is not None:
        scope["subprotocols"] = subprotocols
    return scope


@pytest.mark.parametrize(
    ("headers", "query", "subprotocols", "expected"),
    [
        ({"Sec-WebSocket-Protocol": "bearer, T1"}, "", None, ("T1", "bearer")),
        ({}, "", ["bearer", "T1"], ("T1", "bearer")),  # servers that only fill the scope (uvicorn's wsproto)
        ({"Sec-WebSocket-Protocol": "Bearer,T1"}, "", None, ("T1", "Bearer")),
        ({"Sec-WebSocket-Protocol": "chat, T1"}, "", None, (None, None)),
        ({"Sec-WebSocket-Protocol": "bearer"}, "token=Q", None, ("Q", None)),
        ({"Authorization": "Bearer H1"}, "token=Q", None, ("H1", None)),
        ({"Authorization": "bearer H1"}, "", None, ("H1", None)),
        ({"Authorization": "Basic abc"}, "token=Q", None, ("Q", None)),
        ({"Sec-WebSocket-Protocol": "bearer, T1", "Authorization": "Bearer H1"}, "token=Q", None, ("T1", "bearer")),
        ({}, "a=1&token=Q&b=2", None, ("Q", None)),
        ({}, "tokens=Q", None, (None, None)),
        ({}, "", None, (None, None)),
    ],
)
def test_extract_token(
    headers: dict[str, str], query: str, subprotocols: list[str] | None, expected: tuple[str | None, str | None]
) -> None:
    scope = scope_of(headers, query, subprotocols)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert extract_token(scope, lowered) == expected


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "scheme", "ok"),
    [
        (None, "h:1", [], "ws", True),
        ("http://h:1", "h:1", [], "ws", True),
        ("http://H:1/", "h:1", [], "ws", True),
        ("https://h:1", "h:1", [], "wss", True),
        ("https://h:1", "h:1", [], "ws", False),
        ("http://h:2", "h:1", [], "ws", False),
        ("null", "h:1", [], "ws", False),
        ("http://a.example", "h:1", ["http://a.example"], "ws", True),
        ("http://a.example/", "h:1", ["http://a.example"], "ws", True),
        ("http://h:1", "h:1", ["http://a.example"], "ws", True),  # the own origin stays allowed
        ("http://h:2", "h:1", ["http://a.example"], "ws", False),
        ("http://anything", "h:1", ["*"], "ws", True),
    ],
)
def test_origin_rule(origin: str | None, host: str, allowed: list[str], scheme: str, ok: bool) -> None:
    assert origin_allowed(origin, {"host": host}, allowed, scheme) is ok
