"""The Python client (``tidings.client``) and the ``tidings listen`` / ``tidings publish`` commands, against real
``tidings serve`` processes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tidings.client import (
    ClientState,
    MessageDropped,
    RequestError,
    TerminalError,
    TidingsClient,
    backoff_delay,
    close_action,
)

WAIT = 15.0  # an upper bound for anything to happen; never a measured duration


def fast_client(server: LiveServer, token: Any, **options: Any) -> TidingsClient:
    """A client with short reconnect delays (the test's wall time, not its assertions, depends on them)."""
    options.setdefault("min_reconnect_delay", 0.05)
    options.setdefault("max_reconnect_delay", 0.5)
    return TidingsClient(server.ws_url(), token, **options)


class Events:
    """Collects a client's events and lets a test wait for the first one matching a predicate."""

    def __init__(self, client: TidingsClient, *names: str) -> None:
        self.seen: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        for name in names:
            client.on_event(name, lambda payload, name=name: self._add(name, payload))

    def _add(self, name: str, payload: Any) -> None:
        self.seen.append((name, payload))
        self._changed.set()

    async def wait(self, name: str, pred: Callable[[Any], bool] = lambda _: True) -> Any:
        async def find() -> Any:
            while True:
                for seen_name, payload in self.seen:
                    if seen_name == name and pred(payload):
                        return payload
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), WAIT)


async def next_matching(stream: AsyncIterator[dict[str, Any]], pred: Callable[[dict[str, Any]], bool]) -> Any:
    """The next message of ``stream`` satisfying ``pred`` (others are skipped)."""

    async def find() -> dict[str, Any]:
        async for message in stream:
            if pred(message):
                return message
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(find(), WAIT)


def is_pub(channel: str, text: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def pred(m: dict[str, Any]) -> bool:
        if m.get("type") != "publication" or m.get("channel") != channel:
            return False
        data = m["data"]
        body = data.get("body", data) if isinstance(data, dict) else data
        return text is None or (isinstance(body, dict) and body.get("text") == text)

    return pred


async def rest_publish(server: LiveServer, channel: str, data: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers()) as http:
        response = await http.post("/api/publish", json={"channel": channel, "data": data})
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


# ---- pure functions ----------------------------------------------------------------------------------------
def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [backoff_delay(n, min_delay=0.5, max_delay=30, factor=2, jitter=0, rand=lambda: 0.5) for n in (1, 2, 3)]
    assert delays == [0.5, 1.0, 2.0]
    assert backoff_delay(100, min_delay=0.5, max_delay=30, factor=2, jitter=0) == 30
    assert backoff_delay(10**6, min_delay=0.5, max_delay=30, factor=2, jitter=0.5, rand=lambda: 0.999) == 30
    low = backoff_delay(3, min_delay=0.5, max_delay=30, factor=2, jitter=0.5, rand=lambda: 0.0)
    high = backoff_delay(3, min_delay=0.5, max_delay=30, factor=2, jitter=0.5, rand=lambda: 0.999)
    assert low == 1.0 and 2.9 < high < 3.0


def test_close_actions_follow_the_close_code_table() -> None:
    assert close_action(1000) == "stop"
    assert [close_action(c) for c in (1008, 1009, 4500, 4999)] == ["terminal"] * 4
    assert close_action(4002) == "pause"
    assert close_action(4003) == "refresh"
    assert [close_action(c) for c in (1001, 1006, 1011, 1013, 4000, 4001, 4004)] == ["reconnect"] * 7


async def test_expired_token_ends_in_sign_in_again_not_a_reconnect_loop(server: LiveServer) -> None:
    """The server closes an expired token with 4003; a static token cannot be renewed: terminal, sign in."""
    client = fast_client(server, server.token("ann", ttl=2))
    events = Events(client, "terminal", "reconnecting")
    await client.connect()
    terminal = await events.wait("terminal")
    assert (terminal["code"], terminal["sign_in"]) == (4003, True)
    assert client.state is ClientState.OFFLINE
    assert client.connections == 1
    assert [name for name, _ in events.seen] == ["terminal"]
    await client.close()


async def test_expired_token_from_a_function_returning_it_again_is_terminal(server: LiveServer) -> None:
    token = server.token("ann", ttl=2)
    calls: list[str] = []

    def same_token() -> str:
        calls.append(token)
        return token

    client = fast_client(server, same_token)
    events = Events(client, "terminal")
    await client.connect()
    terminal = await events.wait("terminal")
    assert (terminal["code"], terminal["reason"], terminal["sign_in"]) == (4003, "Token expired", True)
    assert client.connections == 1
    assert len(calls) == 2  # asked once more for a token, got the expired one: no new connection
    await client.close()


async def test_expired_token_from_a_function_with_a_fresh_one_reconnects(server: LiveServer) -> None:
    tokens = iter([server.token("ann", ttl=2), server.token("ann")])
    client = fast_client(server, lambda: next(tokens))
    events = Events(client, "connected", "terminal")
    await client.connect()
    await events.wait("connected", lambda _: client.connections == 2)
    assert client.state is ClientState.CONNECTED
    assert not [name for name, _ in events.seen if name == "terminal"]
    await client.close()


# ---- against a live server ---------------------------------------------------------------------------------
async def test_subscribe_publish_request_and_handlers(server: LiveServer) -> None:
    ann = fast_client(server, server.token("ann"))
    bob = fast_client(server, lambda: server.token("bob"))  # a token callable
    seen_by_type: list[dict[str, Any]] = []
    bob.on("publication", seen_by_type.append)
    stream = bob.messages()
    async with ann, bob:
        assert ann.state is ClientState.CONNECTED and ann.session is not None
        assert ann.session["username"] == "ann"
        confirmed = await bob.subscribe("room:lobby")
        assert confirmed["type"] == "subscription_confirmed" and confirmed["subscription"] == "room:lobby"
        ack = await ann.request({"type": "publish", "channel": "room:lobby", "data": {"text": "hello"}})
        assert ack["type"] == "publish_ack"  # offset 1 is bob's join event
        pub = await next_matching(stream, is_pub("room:lobby", "hello"))
        assert pub["data"]["user"]["username"] == "ann" and pub["offset"] == ack["offset"]
        assert bob.position("room:lobby") == (ack["offset"], pub["epoch"])
        assert seen_by_type and seen_by_type[-1]["offset"] == ack["offset"]
        status = await bob.request({"type": "request_status"})
        assert status["type"] == "status_update" and status["user_connections"] >= 2
        with pytest.raises(RequestError) as excinfo:
            await bob.request({"type": "nonsense"})
        assert excinfo.value.code == "unknown_type"
        with pytest.raises(RequestError) as excinfo:
            await bob.subscribe("nope!")
        assert excinfo.value.code == "invalid_subscription"
        assert "nope!" not in bob.subscriptions
        presence = await bob.request({"type": "presence", "subscription": "room:lobby"})
        assert [u["username"] for u in presence["users"]] == ["bob"]
        assert await bob.unsubscribe("room:lobby") == {"type": "unsubscribed", "subscription": "room:lobby"}
    assert ann.state is ClientState.OFFLINE


async def test_iteration_ends_when_closed_and_broadcasts_arrive(server: LiveServer) -> None:
    client = fast_client(server, server.token("ann"))
    await client.connect()
    received: list[dict[str, Any]] = []

    async def consume() -> None:
        async for message in client:
            received.append(message)
            if message.get("type") == "system_notification":
                await client.close()

    consumer = asyncio.create_task(consume())
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers()) as http:
        (await http.post("/admin/broadcast", json={"message": "maintenance at noon"})).raise_for_status()
    await asyncio.wait_for(consumer, WAIT)  # ends by itself: the iteration stops when the client is closed
    assert received[-1]["message"] == "maintenance at noon"
    assert received[-1]["channel"] == "broadcast"


async def test_close_sends_what_was_sent_before_it(server: LiveServer) -> None:
    reader = fast_client(server, server.token("bob"))
    stream = reader.messages()
    async with reader:
        await reader.subscribe("room:flush")
        writer = fast_client(server, server.token("ann"))
        await writer.connect()
        for n in range(20):
            assert writer.publish("room:flush", {"text": str(n)}) is True
        await writer.close()  # fire-and-forget publications still go out before the close frame
        texts: list[str] = []
        while len(texts) < 20:
            texts.append((await next_matching(stream, is_pub("room:flush")))["data"]["body"]["text"])
    assert texts == [str(n) for n in range(20)]


async def test_duplicates_are_dropped(server: LiveServer) -> None:
    client = fast_client(server, server.token("ann"))
    stream = client.messages()
    async with client:
        await client.subscribe("room:dups")
        for text in ("a", "b", "c"):
            await client.request({"type": "publish", "channel": "room:dups", "data": {"text": text}})
        await next_matching(stream, is_pub("room:dups", "c"))
        offset, epoch = client.position("room:dups") or (0, "")
        assert offset == 4  # the join event, then a, b, c
        # Ask the server to replay the whole history: offsets 1..3 again, then the confirmation.
        replay = await client.request(
            {"type": "subscribe", "subscription": "room:dups", "since": {"offset": 0, "epoch": epoch}}
        )
        assert replay["recovered"] is True
        await client.request({"type": "publish", "channel": "room:dups", "data": {"text": "d"}})
        after = []
        async for message in stream:
            after.append(message)
            if is_pub("room:dups", "d")(message):
                break
    assert [m["data"]["body"]["text"] for m in after if is_pub("room:dups")(m)] == ["d"]
    assert not any(m.get("type") == "join" for m in after)


async def test_terminal_close_raises_a_clear_error(server: LiveServer) -> None:
    client = fast_client(server, "not-a-jwt")
    events = Events(client, "terminal", "reconnecting")
    with pytest.raises(TerminalError) as excinfo:
        await client.connect()
    assert excinfo.value.code == 1008 and excinfo.value.reason == "Invalid token"
    assert client.state is ClientState.OFFLINE
    assert [name for name, _ in events.seen] == ["terminal"]
    with pytest.raises(TerminalError):
        async for _ in client:
            pass


async def test_offline_queue_is_bounded_and_flushed_in_order(server: LiveServer) -> None:
    client = fast_client(server, server.token("ann"), max_offline_queue=3)
    overflow = Events(client, "queue_overflow")
    subscribed = asyncio.create_task(client.subscribe("room:q"))  # remembered, made on connect
    dropped = asyncio.create_task(client.request({"type": "publish", "channel": "room:q", "data": {"text": "0"}}))
    await asyncio.sleep(0)  # let the request enter the queue
    for n in range(1, 5):
        assert client.publish("room:q", {"text": str(n)}) is False
    assert client.queue_size == 3
    assert len(overflow.seen) == 2
    with pytest.raises(MessageDropped):
        await dropped
    stream = client.messages()
    async with client:
        await subscribed
        texts = []
        while len(texts) < 3:
            message = await next_matching(stream, is_pub("room:q"))
            texts.append(message["data"]["body"]["text"])
    assert texts == ["2", "3", "4"]


async def test_heartbeat_detects_a_dead_connection(server: LiveServer) -> None:
    client = fast_client(server, server.token("ann"), ping_interval=0.2, pong_timeout=0.5, connect_timeout=1)
    events = Events(client, "disconnected", "connected")
    await client.connect()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # the server stops answering; the TCP connection stays up
    try:
        lost = await events.wait("disconnected")
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert lost["code"] == 1006 and lost["reason"] == "Heartbeat timeout" and lost["will_reconnect"]
    await events.wait("connected", lambda m: client.connections == 2)
    assert client.state is ClientState.CONNECTED
    await client.close()


def _redis_available() -> str | None:
    if importlib.util.find_spec("tidings.broker.redis") is None:
        return "the Redis broker (tidings.broker.redis) has not landed"
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return "no Redis on 127.0.0.1:6379"
    return None


@pytest.mark.parametrize(
    "broker",
    [
        "memory",
        pytest.param(
            "redis",
            marks=[
                pytest.mark.redis,
                pytest.mark.skipif(_redis_available() is not None, reason=str(_redis_available())),
            ],
        ),
    ],
)
async def test_restart_reconnects_and_recovers(server_factory: Any, broker: str) -> None:
    env = {}
    if broker == "redis":
        env = {"TIDINGS_BROKER_URL": "redis://127.0.0.1:6379", "TIDINGS_BROKER_PREFIX": f"t{secrets.token_hex(6)}"}
    server: LiveServer = server_factory(env=env)
    server.create_user("ann")
    gate = asyncio.Event()
    gate.set()

    async def token() -> str:
        await gate.wait()  # held closed while the test publishes behind the client's back
        return server.token("ann")

    client = fast_client(server, token)
    events = Events(client, "state", "recovery_failed", "connected")
    stream = client.messages()
    async with client:
        await client.subscribe("room:restart")
        await rest_publish(server, "room:restart", {"text": "before"})
        first = await next_matching(stream, is_pub("room:restart", "before"))

        gate.clear()
        await asyncio.to_thread(server.stop)
        await events.wait("state", lambda p: p["state"] == "reconnecting" and p["code"] == 1001)
        await asyncio.to_thread(server.start)
        await rest_publish(server, "room:restart", {"text": "meanwhile-1"})
        await rest_publish(server, "room:restart", {"text": "meanwhile-2"})
        gate.set()

        await events.wait("connected", lambda m: client.connections == 2)
        # The server replays what was missed, then confirms: collect the publications up to the confirmation.
        texts: list[str] = []

        def replayed_until_confirmed(m: dict[str, Any]) -> bool:
            if is_pub("room:restart")(m):
                texts.append(m["data"]["text"])
            return m.get("type") == "subscription_confirmed" and m["subscription"] == "room:restart"

        confirmed = await next_matching(stream, replayed_until_confirmed)
        if broker == "memory":
            # History lived in the old process: a new epoch, reported as not recovered.
            assert confirmed["recovered"] is False and confirmed["epoch"] != first["epoch"]
            failed = await events.wait("recovery_failed")
            assert failed["channel"] == "room:restart" and failed["epoch"] == confirmed["epoch"]
        else:
            assert confirmed["recovered"] is True and confirmed["epoch"] == first["epoch"]
        await rest_publish(server, "room:restart", {"text": "after"})
        await next_matching(stream, lambda m: replayed_until_confirmed(m) or is_pub("room:restart", "after")(m))
    if broker == "redis":
        assert texts == ["meanwhile-1", "meanwhile-2", "after"]  # nothing lost, nothing twice
    else:
        assert texts == ["after"]
    assert client.position("room:restart") is not None


# ---- the command line --------------------------------------------------------------------------------------
class Lines:
    """Lines of a subprocess stream, read by a thread."""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            self.queue.put(line)

    def next_json(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            line = self.queue.get(timeout=WAIT)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if pred(obj):
                return obj  # type: ignore[no-any-return]


def _cli(server: LiveServer, *args: str, **kwargs: Any) -> Any:
    env = {**server.env}
    return [sys.executable, "-m", "tidings", *args], {"env": env, "cwd": server.data_dir, "text": True, **kwargs}


def test_cli_listen_and_publish(server: LiveServer) -> None:
    argv, kw = _cli(server, "listen", "room:cli", "property_updates", "--url", server.ws_url(), "--user", "ann")
    listener = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        out, err = Lines(listener.stdout), Lines(listener.stderr)
        err.next_json(lambda o: o.get("event") == "subscribed" and o.get("subscription") == "room:cli")
        err.next_json(lambda o: o.get("event") == "subscribed" and o.get("subscription") == "property_updates")

        argv, kw = _cli(server, "publish", "room:cli", '{"text": "from the shell"}', "--url", server.url)
        done = subprocess.run(argv, capture_output=True, check=False, **kw)
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["channel"] == "room:cli" and reply["offset"] == 2  # offset 1: ann's join event

        join = out.next_json(lambda o: o.get("channel") == "room:cli")
        assert join["type"] == "join" and join["user"]["username"] == "ann"
        event = out.next_json(lambda o: o.get("channel") == "room:cli")
        assert event["type"] == "publication" and event["data"] == {"text": "from the shell"}
        assert (event["offset"], event["epoch"]) == (reply["offset"], reply["epoch"])

        argv, kw = _cli(
            server, "publish", "property_updates", '{"n": 2}', "--url", server.url, "--token", server.token("admin")
        )
        assert subprocess.run(argv, capture_output=True, check=False, **kw).returncode == 0
        assert out.next_json(lambda o: o.get("channel") == "property_updates")["data"] == {"n": 2}
    finally:
        listener.send_signal(signal.SIGINT)
        try:
            listener.wait(WAIT)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
    assert listener.returncode == 0


def test_cli_publish_refuses_non_admins_and_bad_json(server: LiveServer) -> None:
    argv, kw = _cli(server, "publish", "room:x", '{"a": 1}', "--url", server.url, "--user", "ann")
    done = subprocess.run(argv, capture_output=True, check=False, **kw)
    assert done.returncode == 1 and "403" in done.stderr
    argv, kw = _cli(server, "publish", "room:x", "{not json", "--url", server.url)
    done = subprocess.run(argv, capture_output=True, check=False, **kw)
    assert done.returncode == 1 and "not JSON" in done.stderr


def test_cli_listen_stops_on_a_bad_token(server: LiveServer) -> None:
    argv, kw = _cli(server, "listen", "room:x", "--url", server.ws_url(), "--token", "bogus")
    done = subprocess.run(argv, capture_output=True, check=False, timeout=WAIT * 2, **kw)
    assert done.returncode == 2
    assert '"code": 1008' in done.stderr and "Invalid token" in done.stderr


@pytest.mark.redis
@pytest.mark.skipif(_redis_available() is not None, reason=str(_redis_available()))
async def test_cli_publish_through_the_redis_broker(server_factory: Any) -> None:
    env = {"TIDINGS_BROKER_URL": "redis://127.0.0.1:6379", "TIDINGS_BROKER_PREFIX": f"t{secrets.token_hex(6)}"}
    server: LiveServer = server_factory(env=env)
    server.create_user("ann")
    client = fast_client(server, server.token("ann"))
    stream = client.messages()
    async with client:
        await client.subscribe("property_updates")
        argv, kw = _cli(server, "publish", "property_updates", '{"via": "redis"}', "--broker")
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=False, **kw)
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        message = await next_matching(stream, lambda m: m.get("channel") == "property_updates")
    assert message["data"] == {"via": "redis"} and (message["offset"], message["epoch"]) == (
        reply["offset"],
        reply["epoch"],
    )
    argv, kw = _cli(server, "publish", "nope!", "{}", "--broker")
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=False, **kw)
    assert done.returncode == 1 and "invalid channel" in done.stderr
