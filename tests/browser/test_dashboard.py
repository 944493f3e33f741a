"""The dashboard end to end: a real ``tidings serve``, Debian's Chromium, two users in two browser contexts."""

from __future__ import annotations

import importlib.util
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import UI_TIMEOUT, admin_password, sign_in
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

expect: Any = pytest.importorskip("playwright.sync_api").expect


def _no_redis() -> str | None:
    if importlib.util.find_spec("tidings.broker.redis") is None:
        return "the Redis broker has not landed"
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return "no Redis on 127.0.0.1:6379"
    return None


def publish(server: LiveServer, channel: str, data: Any) -> None:
    """Publish through the REST API as the administrator."""
    response = httpx.post(
        f"{server.url}/api/publish", json={"channel": channel, "data": data}, headers=server.admin_headers(), timeout=10
    )
    response.raise_for_status()


def test_login_broadcast_toast_and_charts(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    ann = new_page()
    ann.goto(f"{server.url}/dashboard")
    ann.wait_for_url(f"{server.url}/login**")  # no token yet: sent to sign in
    shot(ann, "login")
    ann.fill("#username", "ann")
    ann.fill("#password", "wrong")
    ann.click("button[type=submit]")
    expect(ann.locator("#login-error")).to_contain_text("Incorrect username or password")
    ann.fill("#password", "pw")
    ann.click("button[type=submit]")
    ann.wait_for_url(f"{server.url}/dashboard**")
    expect(ann.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(ann.locator("#conn-label")).to_have_text("connected")
    expect(ann.locator("#whoami")).to_contain_text("ann")
    expect(ann.locator("[data-tab=admin]")).to_be_hidden()  # not an administrator

    # The administrator signs in with the password printed at first start.
    admin = sign_in(new_page(), server, "admin", admin_password(server), "#admin")
    expect(admin.locator("#view-admin")).to_be_visible()
    # First a note for administrators only: the admin's own page toasts it.
    admin.fill("#broadcast-message", "admins only: rotate the keys")
    admin.select_option("#broadcast-audience", "admins")
    admin.click("#broadcast-form button[type=submit]")
    expect(admin.locator("#broadcast-status")).to_contain_text("Sent to administrators")
    expect(admin.locator(".toast[data-kind=admin] .toast-message")).to_have_text("admins only: rotate the keys")

    message = "Maintenance at 23:00 <b>not bold</b>"
    admin.select_option("#broadcast-audience", "everyone")
    admin.fill("#broadcast-message", message)
    admin.select_option("#broadcast-category", "maintenance")
    shot(admin, "admin-broadcast")
    admin.click("#broadcast-form button[type=submit]")
    expect(admin.locator("#broadcast-status")).to_contain_text("Sent to everyone")

    toast = ann.locator(".toast[data-kind=system]").first
    expect(toast).to_be_visible()
    expect(toast.locator(".toast-title")).to_have_text("Announcement · maintenance")
    expect(toast.locator(".toast-message")).to_have_text(message)  # shown as text, not HTML
    assert toast.locator("b").count() == 0
    # Published before the broadcast on the same broker, the admins-only note would have arrived first: it did not.
    assert ann.locator(".toast[data-kind=admin]").count() == 0
    expect(admin.locator(".toast[data-kind=system] .toast-message")).to_have_text(message)

    # Live charts fed by /api/stats and /api/dashboard/rates: two users connected, a rate measured.
    expect(ann.locator("#stat-connections")).to_have_text("2")
    expect(ann.locator("#stat-rate")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    assert ann.evaluate("() => Boolean(window.Chart) && document.querySelectorAll('#view-jobs canvas').length") == 2
    shot(ann, "dashboard-toast")


def test_chat_room_messages_and_presence(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    ann = sign_in(new_page(), server, "ann", hash_="#rooms/lobby")
    ann_room = ann.locator("#room-lobby")
    expect(ann_room.locator(".presence li[data-user=ann]")).to_be_visible()
    ann_room.locator(".send-form input").fill("hello before bob")
    ann_room.locator(".send-form button").click()
    expect(ann_room.locator(".msg .msg-text")).to_have_text(["hello before bob"])

    bob = sign_in(new_page(), server, "bob")
    bob.click("[data-tab=rooms]")
    bob.fill("#room-name", "lobby")
    bob.click("#room-join button")
    bob_room = bob.locator("#room-lobby")
    # History on join: ann's earlier message is there, and both users are listed.
    expect(bob_room.locator(".msg .msg-text")).to_have_text(["hello before bob"])
    expect(bob_room.locator(".presence li")).to_have_count(2)
    expect(ann_room.locator(".presence li[data-user=bob]")).to_be_visible()
    expect(ann_room.locator(".event").last).to_have_text("bob joined")

    hostile = '<img src=x onerror="window.pwned=1">'
    bob_room.locator(".send-form input").fill(hostile)
    bob_room.locator(".send-form button").click()
    last = ann_room.locator(".msg").last
    expect(last.locator(".msg-user")).to_have_text("bob")
    expect(last.locator(".msg-text")).to_have_text(hostile)
    assert ann_room.locator(".messages img").count() == 0
    assert ann.evaluate("() => window.pwned") is None
    shot(ann, "chat-room")

    bob.close()  # bob's connection ends: ann sees him leave
    expect(ann_room.locator(".presence li[data-user=bob]")).to_have_count(0)
    expect(ann_room.locator(".event").last).to_have_text("bob left")


def test_property_page_shows_who_is_viewing(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    ann = sign_in(new_page(), server, "ann", hash_="#property/1")
    bob = sign_in(new_page(), server, "bob", hash_="#property/1")
    for page in (ann, bob):
        expect(page.locator("#property-view")).to_be_visible()
        expect(page.locator("#viewers li")).to_have_count(2)
        expect(page.locator("#viewer-count")).to_have_text("2")
    expect(ann.locator("#viewers li[data-user=bob]")).to_be_visible()
    shot(ann, "property-viewers")
    bob.click("text=← all properties")
    expect(bob.locator("#property-list-panel")).to_be_visible()
    expect(ann.locator("#viewers li")).to_have_count(1)
    expect(ann.locator("#viewers li[data-user=ann]")).to_be_visible()


@pytest.mark.parametrize(
    "broker",
    [
        "memory",
        pytest.param(
            "redis", marks=[pytest.mark.redis, pytest.mark.skipif(bool(_no_redis()), reason=str(_no_redis()))]
        ),
    ],
)
def test_restart_shows_reconnecting_then_recovers(
    server_factory: Any, new_page: Callable[[], Any], shot: Callable[[Any, str], Path], broker: str
) -> None:
    env = {}
    if broker == "redis":
        env = {"TIDINGS_BROKER_URL": "redis://127.0.0.1:6379", "TIDINGS_BROKER_PREFIX": f"t{secrets.token_hex(6)}"}
    server: LiveServer = server_factory(env=env)
    server.create_user("ann")
    ann = sign_in(new_page(), server, "ann", hash_="#rooms/ops")
    room = ann.locator("#room-ops")
    publish(server, "room:ops", {"text": "before the restart"})
    expect(room.locator(".msg .msg-text")).to_have_text(["before the restart"])

    server.stop()  # closes every client with 1001; nothing is published while it is down
    expect(ann.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(ann.locator("#conn-label")).to_have_text("reconnecting")
    shot(ann, f"reconnecting-{broker}")

    server.start()  # same port, same database
    publish(server, "room:ops", {"text": "published meanwhile"})
    expect(ann.locator("#conn")).to_have_attribute("data-state", "connected", timeout=UI_TIMEOUT * 2)
    if broker == "memory":
        # A new epoch: the resubscription could not recover, recovery_failed made the page reload the room.
        expect(room).to_have_attribute("data-reloads", "1")
        expect(room.locator(".divider")).to_have_count(1)
    expect(room.locator(".msg .msg-text")).to_contain_text(["before the restart", "published meanwhile"])
    publish(server, "room:ops", {"text": "after reconnecting"})
    expect(room.locator(".msg .msg-text")).to_have_text(
        ["before the restart", "published meanwhile", "after reconnecting"]
    )
    if broker == "redis":
        # Redis kept the history and its epoch: recovered through the resubscription, nothing reloaded.
        assert room.get_attribute("data-reloads") is None
        assert room.locator(".divider").count() == 0
    shot(ann, f"recovered-{broker}")


def _crawler_missing(server: LiveServer) -> str | None:
    paths = httpx.get(f"{server.url}/openapi.json", timeout=10).json().get("paths", {})
    if "/api/jobs" not in paths:
        return "the crawler platform (POST /api/jobs) is not mounted in this build"
    if httpx.get(f"{server.url}/sample-site/", timeout=10).status_code != 200:
        return "the sample listings site (/sample-site/) is not mounted in this build"
    return None


def test_job_card_updates_live_to_completion(
    server: LiveServer, new_page: Callable[[], Any], shot: Callable[[Any, str], Path]
) -> None:
    reason = _crawler_missing(server)
    if reason:
        pytest.skip(reason)
    ann = sign_in(new_page(), server, "ann")
    response = httpx.post(
        f"{server.url}/api/jobs",
        json={"spider_name": "listings", "target_urls": [f"{server.url}/sample-site/"]},
        headers={"Authorization": f"Bearer {server.token('ann')}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    card = ann.locator(f"#job-{job_id}")
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-status", "completed", timeout=UI_TIMEOUT * 4)
    expect(card.locator(".status")).to_have_text("completed")
    expect(card.locator(".items")).not_to_have_text("0 items scraped")
    expect(card.locator(".progress")).to_have_class("progress done")
    final = httpx.get(f"{server.url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {server.token('ann')}"})
    items = final.json()["items_scraped"]
    expect(card.locator(".items")).to_contain_text(f"{items} item")
    expect(ann.locator(".toast[data-kind=job]").first).to_contain_text(f"Job #{job_id} completed")
    expect(ann.locator(".toast[data-kind=property]").first).to_contain_text("new listing")
    shot(ann, "job-completed")

    # The crawl filled the catalogue: the properties page lists it and a property page opens.
    ann.click("[data-tab=properties]")
    rows = ann.locator("#properties tr")
    expect(rows.first).to_be_visible()
    assert rows.count() > 0
    shot(ann, "properties")
    title = rows.first.locator("a").inner_text()
    rows.first.locator("a").click()
    expect(ann.locator("#property-title")).to_have_text(title)
    expect(ann.locator("#viewers li[data-user=ann]")).to_be_visible()
    shot(ann, "property-detail")
    ann.click("[data-tab=jobs]")

    # The form starts a job too.
    ann.click("#job-form button[type=submit]")
    expect(ann.locator(".job-card")).to_have_count(2)
