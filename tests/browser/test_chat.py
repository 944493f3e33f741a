"""Chat rooms as a user meets them: server timestamps shown in the viewer's locale and stable across reloads,
history kept across a server restart (and the page saying what it could replay), join/leave lines collapsed,
leaving a room, and a usable chat on a 390 px wide phone screen."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
from websockets.sync.client import connect

from tests.browser.conftest import UI_TIMEOUT, sign_in
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

expect: Any = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def page_in(browser: Any) -> Iterator[Callable[..., Any]]:
    """``page_in(locale=..., viewport=..., timezone_id=...)``: a page in a fresh context with those options."""
    contexts: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("viewport", {"width": 1360, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(UI_TIMEOUT)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def say(page: Any, room: str, text: str) -> None:
    form = page.locator(f"#room-{room} .send-form")
    form.locator("input").fill(text)
    form.locator("button").click()
    expect(page.locator(f"#room-{room} .msg .msg-text").last).to_have_text(text)


def history(server: LiveServer, channel: str, user: str = "ann") -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/api/history/{channel}", headers={"Authorization": f"Bearer {server.token(user)}"}, timeout=10
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def iso(seconds: float) -> str:
    """What ``Date.prototype.toISOString`` gives for a timestamp (milliseconds, ``Z``)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_timestamps_come_from_the_server_and_stay_across_reloads(
    server: LiveServer, page_in: Callable[..., Any], shot: Callable[[Any, str], Path]
) -> None:
    page = sign_in(page_in(locale="en-GB", timezone_id="Europe/Amsterdam"), server, "ann", hash_="#rooms/times")
    say(page, "times", "first")
    stored = [m for m in history(server, "room:times")["messages"] if m["type"] == "publication"]
    assert isinstance(stored[0]["timestamp"], float)  # the envelope carries the server's time
    first = page.locator("#room-times .msg").first.locator("time")
    expect(first).to_have_attribute("datetime", iso(stored[0]["timestamp"]))
    amsterdam = datetime.fromtimestamp(stored[0]["timestamp"], UTC).astimezone(ZoneInfo("Europe/Amsterdam"))
    expect(first).to_have_text(amsterdam.strftime("%H:%M"))  # "14:03": today's messages show the time only
    page.wait_for_timeout(1100)  # let the clock move on: a re-stamp would show
    say(page, "times", "second")
    expect(first).to_have_attribute("datetime", iso(stored[0]["timestamp"]))  # not re-stamped by a new message
    before = page.locator("#room-times .msg time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")
    assert len(before) == 2 and before[0] != before[1]
    page.reload()
    expect(page.locator("#room-times .msg")).to_have_count(2)
    after = page.locator("#room-times .msg time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")
    assert after == before  # the same times after a reload
    shot(page, "chat-timestamps")


def test_yesterdays_message_says_yesterday(
    server: LiveServer, page_in: Callable[..., Any], shot: Callable[[Any, str], Path]
) -> None:
    headers = {"Authorization": f"Bearer {server.token('admin')}"}
    reply = httpx.post(
        f"{server.url}/api/publish", json={"channel": "room:days", "data": {"text": "from yesterday"}}, headers=headers
    )
    reply.raise_for_status()
    stamp = next(m for m in history(server, "room:days")["messages"] if m["type"] == "publication")["timestamp"]
    page = page_in(locale="en-GB", timezone_id="UTC")
    page.clock.set_fixed_time(stamp + 24 * 3600)  # the viewer looks at it a day later
    sign_in(page, server, "ann", hash_="#rooms/days")
    when = page.locator("#room-days .msg time")
    expected = "yesterday " + datetime.fromtimestamp(stamp, UTC).strftime("%H:%M")
    expect(when).to_have_text(expected)
    shot(page, "chat-yesterday")


def test_history_survives_a_restart_and_the_page_says_what_it_replayed(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    ann = sign_in(new_page(), server, "ann", hash_="#rooms/ops")
    say(ann, "ops", "before the restart 1")
    say(ann, "ops", "before the restart 2")
    stamps = ann.locator("#room-ops .msg time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")

    server.stop()
    expect(ann.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    server.start()  # same database: the room's messages were stored there
    expect(ann.locator("#conn")).to_have_attribute("data-state", "connected", timeout=UI_TIMEOUT * 2)
    divider = ann.locator("#room-ops .divider")
    expect(divider).to_have_text("The server restarted: history kept, nothing was missed")
    expect(divider).to_have_attribute("data-complete", "true")
    say(ann, "ops", "after the restart")

    # Someone who opens the room after the restart sees its last messages, with their original times.
    bob = sign_in(new_page(), server, "bob", hash_="#rooms/ops")
    room = bob.locator("#room-ops")
    expect(room.locator(".msg .msg-text")).to_have_text(
        ["before the restart 1", "before the restart 2", "after the restart"]
    )
    assert room.locator(".msg time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")[:2] == stamps
    expect(room).to_have_attribute("data-durable", "true")
    expect(room.locator(".divider")).to_have_count(1)
    shot(bob, "chat-history-after-restart")
    shot(ann, "chat-replayed-after-restart")


@contextlib.contextmanager
def in_room(server: LiveServer, username: str, channel: str) -> Iterator[Any]:
    """A WebSocket of ``username`` subscribed to ``channel`` (joins; leaves when the block ends)."""
    with connect(server.ws_url(), subprotocols=["bearer", server.token(username)], open_timeout=10) as ws:  # type: ignore[list-item]
        json.loads(ws.recv(10))  # connection_established
        ws.send(json.dumps({"type": "subscribe", "subscription": channel, "id": 1}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if json.loads(ws.recv(10)).get("type") == "subscription_confirmed":
                break
        yield ws


def test_join_and_leave_lines_are_collapsed(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    for name in ("carl", "dan", "eve"):
        server.create_user(name)
    ann = sign_in(new_page(), server, "ann", hash_="#rooms/crowd")
    say(ann, "crowd", "who is coming?")
    events = ann.locator("#room-crowd .event")
    with in_room(server, "bob", "room:crowd"), in_room(server, "carl", "room:crowd"):
        with in_room(server, "dan", "room:crowd"), in_room(server, "eve", "room:crowd"):
            expect(ann.locator("#room-crowd .presence li")).to_have_count(5)
            expect(events.last).to_have_text("bob and 3 others joined")
            expect(events.last).to_have_attribute("title", "bob joined, carl joined, dan joined, eve joined")
        # the two connections close at once: the server may see either leave first
        expect(events.last).to_have_text(re.compile(r"^bob and 3 others joined · (eve and dan|dan and eve) left$"))
    expect(events.last).to_have_text(re.compile(r"^bob and 3 others joined · (eve|dan) and 3 others left$"))
    expect(events).to_have_count(2)  # ann's own join, then one line for everything after her message
    shot(ann, "chat-collapsed-joins")


def test_leave_room(server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]) -> None:
    ann = sign_in(new_page(), server, "ann", hash_="#rooms/lobby")
    bob = sign_in(new_page(), server, "bob", hash_="#rooms/lobby")
    expect(ann.locator("#room-lobby .presence li[data-user=bob]")).to_be_visible()
    bob.locator("#room-lobby .leave-room").click()
    expect(bob.locator("#room-tabs [data-room=lobby]")).to_have_count(0)
    expect(bob.locator("#room-host")).to_contain_text("You left #lobby.")
    expect(ann.locator("#room-lobby .presence li[data-user=bob]")).to_have_count(0)
    expect(ann.locator("#room-lobby .event").last).to_contain_text("bob left")
    shot(bob, "chat-left-room")
    # The room does not come back with a reload of bob's page, and bob is no longer counted in it.
    bob.reload()
    expect(bob.locator("body")).to_have_attribute("data-ready", "true")
    bob.wait_for_timeout(500)
    expect(bob.locator("#room-tabs [data-room=lobby]")).to_have_count(0)
    expect(ann.locator("#room-lobby .presence li")).to_have_count(1)


def test_chat_is_usable_390_px_wide(
    server: LiveServer, page_in: Callable[..., Any], shot: Callable[[Any, str], Path]
) -> None:
    page = page_in(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(f"{server.url}/login?next={quote('/dashboard#rooms/phone', safe='')}")
    page.fill("#username", "ann")
    page.fill("#password", "pw")
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/dashboard**")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    say(page, "phone", "a message long enough to need more than one line on a phone, to see that it wraps")
    sizes = page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth,
            messages: document.querySelector('#room-phone .messages').getBoundingClientRect().width,
            input: document.querySelector('#room-phone .send-form input').getBoundingClientRect().width,
            text: document.querySelector('#room-phone .msg-text').getBoundingClientRect().width,
        })"""
    )
    assert sizes["page"] <= 390, sizes  # no sideways scrolling
    assert sizes["messages"] >= 320, sizes  # the message column takes the width of the screen
    assert sizes["input"] >= 220, sizes
    assert sizes["text"] >= 260, sizes
    shot(page, "chat-390px")
