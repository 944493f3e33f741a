"""The platform's REST API and channel rules against a real server (embedded mode), on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, recv_json, ws_connect
from tests.platform.conftest import collect_job, create_job, headers, platform_server, subscribe
from tidings.crawler import store
from tidings.crawler.items import PropertyItem
from tidings.db import Database


@pytest.fixture
def api_server(server_factory: Any, database_env: dict[str, str]) -> LiveServer:
    """An embedded-mode server with ``admin``, ``ann`` and ``bob``."""
    return platform_server(server_factory, database_env)


async def test_job_validation(api_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, headers=headers(api_server, "ann")) as http:
        resp = await http.post("/api/jobs", json={"spider_name": "nope", "target_urls": ["http://example.com/"]})
        assert resp.status_code == 422
        assert resp.json()["detail"] == "Unknown spider 'nope' (available: listings)"
        for urls in (["not a url"], ["ftp://example.com/"], [], ["http://"]):
            resp = await http.post("/api/jobs", json={"spider_name": "listings", "target_urls": urls})
            assert resp.status_code == 422, (urls, resp.text)
            assert resp.json()["detail"][0]["loc"][:2] == ["body", "target_urls"]
        resp = await http.post("/api/jobs", json={"target_urls": ["http://example.com/"]})
        assert resp.status_code == 422
        assert (await http.get("/api/jobs/999999")).status_code == 404
    async with httpx.AsyncClient(base_url=api_server.url) as http:
        assert (await http.get("/api/jobs")).status_code == 401
        assert (await http.get("/api/properties")).status_code == 401
        spec = (await http.get("/openapi.json")).json()
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel", "/api/properties"):
        assert path in spec["paths"], path
    assert {"/api/properties/{property_id}", "/api/admin/users", "/api/admin/users/{user_id}"} <= spec["paths"].keys()


async def test_users_see_only_their_jobs(api_server: LiveServer) -> None:
    ws = await ws_connect(api_server.ws_url(), api_server.token("ann"))
    try:
        hello = await recv_json(ws)
        job = await create_job(api_server, "ann", ["http://127.0.0.1:9/"])
        job_id = job["job_id"]
        await collect_job(ws, job_id, f"user:{hello['user_id']}")
    finally:
        await ws.close()
    async with httpx.AsyncClient(base_url=api_server.url) as http:
        as_bob = headers(api_server, "bob")
        assert (await http.get(f"/api/jobs/{job_id}", headers=as_bob)).status_code == 404
        assert (await http.post(f"/api/jobs/{job_id}/cancel", headers=as_bob)).status_code == 404
        assert (await http.get("/api/jobs", headers=as_bob)).json()["total"] == 0
        mine = (await http.get("/api/jobs", headers=headers(api_server, "ann"))).json()
        assert [j["job_id"] for j in mine["jobs"]] == [job_id] and mine["total"] == 1
        admin = (await http.get("/api/jobs", headers=api_server.admin_headers(), params={"status": "failed"})).json()
        assert job_id in [j["job_id"] for j in admin["jobs"]]
        assert (await http.get(f"/api/jobs/{job_id}", headers=api_server.admin_headers())).status_code == 200

    # the job:<id> channel follows the same rule
    for username, expected in (("bob", "subscription_error"), ("ann", "subscription_confirmed"), ("admin", None)):
        ws = await ws_connect(api_server.ws_url(), api_server.token(username))
        try:
            await recv_json(ws)
            reply = await subscribe(ws, f"job:{job_id}")
            assert reply["type"] == (expected or "subscription_confirmed"), (username, reply)
            if username != "admin":
                assert (await subscribe(ws, "job:abc"))["type"] == "subscription_error"
        finally:
            await ws.close()


def _item(n: int, city: str, price: int | None) -> PropertyItem:
    return PropertyItem(
        url=f"http://listings.test/{city.lower()}/{n}",
        title=f"Flat {n}",
        price=None if price is None else Decimal(price),
        currency="EUR",
        location=f"Centre, {city}",
        bedrooms=2,
        area_m2=70.0,
    )


async def test_properties_filters_pagination_and_history(api_server: LiveServer) -> None:
    db = Database(api_server.database_url)
    try:
        for n in range(12):
            await store.upsert_property(db, _item(n, "Amsterdam", 100_000 * (n + 1)))
        for n in range(5):
            await store.upsert_property(db, _item(n, "London", None if n == 0 else 300_000))
        changed = await store.upsert_property(db, _item(3, "Amsterdam", 425_000))
        again = await store.upsert_property(db, _item(3, "Amsterdam", 425_000))
    finally:
        await db.dispose()
    assert changed.price_changed and (changed.old_price, changed.new_price) == (Decimal(400_000), Decimal(425_000))
    assert not again.price_changed and not again.created

    async with httpx.AsyncClient(base_url=api_server.url, headers=headers(api_server, "bob")) as http:

        async def get(**params: Any) -> dict[str, Any]:
            resp = await http.get("/api/properties", params=params)
            assert resp.status_code == 200, resp.text
            body: dict[str, Any] = resp.json()
            return body

        assert (await get())["total"] == 17
        page = await get(location="amsterdam", limit=5, offset=10)
        assert page["total"] == 12 and len(page["properties"]) == 2 and page["offset"] == 10
        assert (await get(location="AMSTER", min_price=500_000))["total"] == 8
        assert (await get(min_price=250_000, max_price=425_000))["total"] == 6  # 300k, 425k (x1), London x4
        assert (await get(location="london", max_price=1))["total"] == 0
        assert (await http.get("/api/properties", params={"limit": 0})).status_code == 422

        detail = (await http.get(f"/api/properties/{changed.property_id}")).json()
        assert detail["price"] == 425_000 and detail["location"] == "Centre, Amsterdam"
        assert [(h["old_price"], h["new_price"]) for h in detail["price_history"]] == [(400_000, 425_000)]
        assert (await http.get("/api/properties/999999")).status_code == 404

    ws = await ws_connect(api_server.ws_url(), api_server.token("bob"))
    try:
        await recv_json(ws)
        await ws.send('{"type": "request_status"}')
        while (status := await recv_json(ws))["type"] != "status_update":
            pass
        assert status["total_properties"] == 17 and status["active_jobs"] == 0
    finally:
        await ws.close()


async def test_admin_user_management(api_server: LiveServer) -> None:
    admin = api_server.admin_headers()
    async with httpx.AsyncClient(base_url=api_server.url) as http:
        users = (await http.get("/api/admin/users", headers=admin)).json()["users"]
        assert [u["username"] for u in users] == ["admin", "ann", "bob"]
        assert (await http.get("/api/admin/users", headers=headers(api_server, "ann"))).status_code == 403

        resp = await http.post("/api/admin/users", headers=admin, json={"username": "carol", "password": "secret1"})
        assert resp.status_code == 201, resp.text
        carol = resp.json()
        assert carol["role"] == "user" and carol["is_active"] is True
        dup = await http.post("/api/admin/users", headers=admin, json={"username": "carol", "password": "secret1"})
        assert dup.status_code == 409

        token = await http.post("/auth/token", data={"username": "carol", "password": "secret1"})
        assert token.status_code == 200
        carol_headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert (await http.get("/api/admin/users", headers=carol_headers)).status_code == 403

        url = f"/api/admin/users/{carol['user_id']}"
        promoted = await http.patch(url, headers=admin, json={"role": "admin"})
        assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
        assert (await http.get("/api/admin/users", headers=carol_headers)).status_code == 200

        changed = await http.patch(url, headers=admin, json={"password": "another2"})
        assert changed.status_code == 200
        assert (await http.post("/auth/token", data={"username": "carol", "password": "secret1"})).status_code == 401
        assert (await http.post("/auth/token", data={"username": "carol", "password": "another2"})).status_code == 200

        off = await http.patch(url, headers=admin, json={"is_active": False})
        assert off.status_code == 200 and off.json()["is_active"] is False
        assert (await http.get("/api/jobs", headers=carol_headers)).status_code == 401

        admin_id = users[0]["user_id"]
        last = await http.patch(f"/api/admin/users/{admin_id}", headers=admin, json={"role": "user"})
        assert last.status_code == 409
        assert (await http.patch("/api/admin/users/999999", headers=admin, json={"role": "user"})).status_code == 404
        bad = await http.patch(url, headers=admin, json={"role": "superuser"})
        assert bad.status_code == 422
