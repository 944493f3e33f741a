"""examples/orders end to end: its own SQLite users, cookie login and UUID ids, an ``orders`` namespace with a
model, an order update pushed from an endpoint -- to a real WebSocket client and to Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import expect_close, free_port, recv_json, recv_until

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "orders"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("shop")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["ORDERS_DB"] = str(data / "orders.db")
    log = open(data / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=EXAMPLE,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (data / "server.log").read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the example did not start"
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()
    assert "Traceback" not in (data / "server.log").read_text()


def signed_up(url: str, name: str) -> httpx.Client:
    http = httpx.Client(base_url=url)
    resp = http.post("/signup", data={"username": name, "password": "pw-" + name})
    assert resp.status_code == 303, resp.text
    return http


async def test_an_order_update_reaches_its_owner_over_the_websocket(shop: str) -> None:
    alice, mallory = signed_up(shop, "alice"), signed_up(shop, "mallory")
    me = alice.get("/me").json()
    assert len(me["user_id"]) == 36  # a UUID
    order = alice.post("/orders", json={"item": "teapot"}).json()
    ws_url = shop.replace("http", "ws") + "/ws/authenticated"
    cookie = f"shop_session={alice.cookies['shop_session']}"
    async with websockets.connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
        hello = await recv_json(ws)
        assert hello["user_id"] == me["user_id"] and f"user:{me['user_id']}" in hello["channels"]
        await ws.send(json.dumps({"type": "subscribe", "subscription": f"orders:{order['id']}"}))
        assert (await recv_json(ws))["type"] == "subscription_confirmed"
        resp = alice.post(f"/orders/{order['id']}/status", json={"status": "shipped"})
        assert resp.status_code == 200, resp.text
        pub = await recv_until(ws, "publication")
        assert pub["channel"] == f"orders:{order['id']}"
        assert (pub["data"]["order_id"], pub["data"]["status"]) == (order["id"], "shipped")
        bad = alice.post(f"/orders/{order['id']}/status", json={"status": "lost"})
        assert bad.status_code == 422 and "status" in bad.json()["detail"]
        alice.post("/logout")  # the example closes the user's sockets when they sign out
        assert (await expect_close(ws))[:2] == (1008, "Signed out")
    other = f"shop_session={mallory.cookies['shop_session']}"
    async with websockets.connect(ws_url, additional_headers={"Cookie": other}) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "subscribe", "subscription": f"orders:{order['id']}"}))
        denied = await recv_json(ws)
        assert (denied["type"], denied["code"]) == ("subscription_error", "forbidden")
    async with websockets.connect(ws_url) as ws:
        assert await expect_close(ws) == (1008, "Authentication required")


@pytest.mark.browser
def test_the_browser_shows_the_update_live(shop: str, new_page: Any) -> None:
    page = new_page()
    page.goto(shop)
    page.fill("#signin form[action='/signup'] input[name=username]", "carol")
    page.fill("#signin form[action='/signup'] input[name=password]", "pw-carol")
    page.click("#signin form[action='/signup'] button")
    page.wait_for_selector("text=(live)")
    page.fill("#order input[name=item]", "kettle")
    page.click("#order button")
    page.wait_for_selector("#orders li .status:text('placed')")
    order_id = page.get_attribute("#orders li", "id").removeprefix("o-")  # type: ignore[union-attr]
    resp = httpx.post(f"{shop}/orders/{order_id}/status", json={"status": "shipped"})
    assert resp.status_code == 200, resp.text
    page.wait_for_selector(f"#o-{order_id} .status:text('shipped')", timeout=10_000)
