"""Issue 9 item 3: access ends when it is revoked, for tokens and for the sockets already open, on every node.

Real ``tidings serve`` processes; the cluster test runs two of them on the local Redis.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, expect_close, recv_json, recv_until, ws_connect
from tests.test_redis_cluster import cluster_env, start_node
from tidings.db import Database, User


async def login(server: LiveServer, username: str, password: str = "pw") -> str:
    async with httpx.AsyncClient(base_url=server.url) as http:
        resp = await http.post("/auth/token", data={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])


async def open_ws(server: LiveServer, token: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await ws_connect(server.ws_url(), token)
    hello = await recv_json(ws)
    assert hello["type"] == "connection_established", hello
    return ws, hello


async def closed_within(ws: ClientConnection, seconds: float) -> tuple[int | None, str | None, float]:
    start = time.monotonic()
    code, reason = await expect_close(ws, timeout=seconds + 5)
    return code, reason, time.monotonic() - start


async def me(server: LiveServer, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})


async def refused_on_connect(server: LiveServer, token: str) -> tuple[int | None, str | None]:
    ws = await ws_connect(server.ws_url(), token)
    return await expect_close(ws)


async def patch_user(server: LiveServer, user_id: int, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers()) as http:
        resp = await http.patch(f"/api/admin/users/{user_id}", json=body)
        assert resp.status_code == 200, resp.text


@pytest.fixture
def srv(server_factory: Any) -> LiveServer:
    server: LiveServer = server_factory()
    server.ids = {name: server.create_user(name) for name in ("ann", "bob")}  # type: ignore[attr-defined]
    server.ids["root2"] = server.create_user("root2", role="admin")  # type: ignore[attr-defined]
    return server


async def test_a_password_change_invalidates_older_tokens_and_closes_open_sockets(srv: LiveServer) -> None:
    token = await login(srv, "ann")
    ws, _ = await open_ws(srv, token)
    bystander, _ = await open_ws(srv, await login(srv, "bob"))
    await patch_user(srv, srv.ids["ann"], {"password": "new-secret"})  # type: ignore[attr-defined]
    code, reason, took = await closed_within(ws, 2)
    assert (code, reason) == (1008, "Credentials changed") and took < 2.0
    resp = await me(srv, token)
    assert resp.status_code == 401 and resp.json()["detail"] == "Credentials changed"
    assert await refused_on_connect(srv, token) == (1008, "Credentials changed")
    fresh = await login(srv, "ann", "new-secret")
    assert (await me(srv, fresh)).status_code == 200
    await bystander.send('{"type": "ping"}')
    assert (await recv_until(bystander, "pong"))["type"] == "pong"  # other users are untouched
    await bystander.close()


async def test_deactivation_and_deletion_close_sockets_as_account_disabled(srv: LiveServer) -> None:
    ann_token, bob_token = await login(srv, "ann"), await login(srv, "bob")
    ann_ws, _ = await open_ws(srv, ann_token)
    bob_ws, _ = await open_ws(srv, bob_token)
    await patch_user(srv, srv.ids["ann"], {"is_active": False})  # type: ignore[attr-defined]
    code, reason, took = await closed_within(ann_ws, 2)
    assert (code, reason) == (1008, "Account disabled") and took < 2.0
    assert (await me(srv, ann_token)).status_code == 401
    await patch_user(srv, srv.ids["ann"], {"is_active": True})  # type: ignore[attr-defined]
    assert (await me(srv, ann_token)).status_code == 401  # the old token stays invalid after reactivation
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.admin_headers()) as http:
        resp = await http.delete(f"/api/admin/users/{srv.ids['bob']}")  # type: ignore[attr-defined]
        assert resp.status_code == 204, resp.text
    code, reason, took = await closed_within(bob_ws, 2)
    assert (code, reason) == (1008, "Account disabled") and took < 2.0
    assert (await me(srv, bob_token)).status_code == 401
    assert (await refused_on_connect(srv, bob_token))[0] == 1008


async def test_a_demoted_admin_is_reconnected_without_admin_notifications(srv: LiveServer) -> None:
    token = await login(srv, "root2")
    ws, hello = await open_ws(srv, token)
    assert "admins" in hello["channels"]
    await patch_user(srv, srv.ids["root2"], {"role": "user"})  # type: ignore[attr-defined]
    code, reason, took = await closed_within(ws, 2)
    assert (code, reason) == (4004, "Permissions changed") and took < 2.0
    ws, hello = await open_ws(srv, token)  # a role change does not invalidate the token: reconnect
    assert hello["role"] == "user" and "admins" not in hello["channels"]
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.admin_headers()) as http:
        assert (await http.post("/admin/notify-admins", json={"message": "for admins"})).status_code == 200
        assert (await http.post("/admin/broadcast", json={"message": "for all"})).status_code == 200
    seen = []
    while True:
        msg = await recv_json(ws)
        seen.append(msg["type"])
        if msg["type"] == "system_notification":
            break
    assert "admin_notification" not in seen
    await ws.close()


async def test_logout_revokes_that_token_and_closes_only_its_sockets(srv: LiveServer) -> None:
    first, second = await login(srv, "ann"), await login(srv, "ann")
    ws_first, _ = await open_ws(srv, first)
    ws_second, _ = await open_ws(srv, second)
    async with httpx.AsyncClient(base_url=srv.url) as http:
        resp = await http.post("/auth/logout", headers={"Authorization": f"Bearer {first}"})
        assert resp.status_code == 200, resp.text
        assert (await http.post("/auth/logout")).status_code == 401
    code, reason, took = await closed_within(ws_first, 2)
    assert (code, reason) == (1008, "Logged out") and took < 2.0
    resp = await me(srv, first)
    assert resp.status_code == 401 and resp.json()["detail"] == "Token revoked"
    assert await refused_on_connect(srv, first) == (1008, "Token revoked")
    assert (await me(srv, second)).status_code == 200
    await ws_second.send('{"type": "ping"}')
    assert (await recv_until(ws_second, "pong"))["type"] == "pong"
    await ws_second.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_a_revocation_on_node_a_closes_the_socket_on_node_b(server_factory: Any, tmp_path: Path) -> None:
    env = cluster_env(tmp_path)
    node_a, node_b = start_node(server_factory, env), start_node(server_factory, env)
    ann = node_a.create_user("ann")
    node_a.create_user("bob")
    ws_b, _ = await open_ws(node_b, await login(node_a, "ann"))
    await patch_user(node_a, ann, {"is_active": False})
    code, reason, took = await closed_within(ws_b, 2)
    assert (code, reason) == (1008, "Account disabled") and took < 2.0
    # a logout on A closes the sockets opened with that token on B, and only those
    bob_one, bob_two = await login(node_a, "bob"), await login(node_a, "bob")
    ws_one, _ = await open_ws(node_b, bob_one)
    ws_two, _ = await open_ws(node_b, bob_two)
    async with httpx.AsyncClient(base_url=node_a.url) as http:
        assert (await http.post("/auth/logout", headers={"Authorization": f"Bearer {bob_one}"})).status_code == 200
    code, reason, took = await closed_within(ws_one, 2)
    assert (code, reason) == (1008, "Logged out") and took < 2.0
    await ws_two.send('{"type": "ping"}')
    assert (await recv_until(ws_two, "pong"))["type"] == "pong"
    assert (await me(node_b, bob_one)).status_code == 401
    await ws_two.close()
    await asyncio.sleep(0)


def _cli(server: LiveServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        env=server.env,
        cwd=server.data_dir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _change_row(server: LiveServer, user_id: int, **values: Any) -> None:
    """Edit a user's row behind the server's back (another admin tool, a SQL console)."""
    db = Database(server.database_url)
    try:
        async with db.sessions() as session:
            await session.execute(update(User).where(User.id == user_id).values(**values))
            await session.commit()
    finally:
        await db.dispose()


async def test_a_password_changed_with_the_cli_closes_the_running_servers_sockets(srv: LiveServer) -> None:
    """The default mode (memory broker): `tidings users passwd` runs in another process than the server, and the
    server's sockets opened with older credentials still close, within 2 s (the server re-checks its accounts)."""
    ws, _ = await open_ws(srv, await login(srv, "ann"))
    bystander, _ = await open_ws(srv, await login(srv, "bob"))
    done = await asyncio.to_thread(_cli, srv, "users", "passwd", "ann", "--password-stdin", stdin="new-secret\n")
    assert done.returncode == 0, done.stderr
    code, reason, took = await closed_within(ws, 2)
    assert (code, reason) == (1008, "Credentials changed") and took < 2.0
    fresh, _ = await open_ws(srv, await login(srv, "ann", "new-secret"))
    await asyncio.sleep(2.5)  # sweeps after the change leave sockets opened with the new credentials alone
    for survivor in (fresh, bystander):
        await survivor.send('{"type": "ping"}')
        assert (await recv_until(survivor, "pong"))["type"] == "pong"
        await survivor.close()


async def test_account_rows_changed_outside_the_server_close_its_sockets(srv: LiveServer) -> None:
    """Deactivation, deletion and a role change made directly in the database reach the open sockets too."""
    ids = srv.ids  # type: ignore[attr-defined]
    ann, _ = await open_ws(srv, await login(srv, "ann"))
    bob, _ = await open_ws(srv, await login(srv, "bob"))
    root2, _ = await open_ws(srv, await login(srv, "root2"))
    await _change_row(srv, ids["ann"], is_active=False)
    await _change_row(srv, ids["root2"], role="user")
    db = Database(srv.database_url)
    try:
        async with db.sessions() as session:
            await session.execute(delete(User).where(User.id == ids["bob"]))
            await session.commit()
    finally:
        await db.dispose()
    disabled, demoted = (1008, "Account disabled"), (4004, "Permissions changed")
    expected = [(ann, disabled), (bob, disabled), (root2, demoted)]
    for ws, want in expected:
        code, reason, took = await closed_within(ws, 2)
        assert (code, reason) == want and took < 2.0
