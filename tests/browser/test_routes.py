"""The dashboard's routes over plain HTTP (no browser): pages, static files, rates and history endpoints."""

from __future__ import annotations

import importlib.util
import secrets
import socket
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer


def _no_redis() -> str | None:
    if importlib.util.find_spec("tidings.broker.redis") is None:
        return "the Redis broker has not landed"
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
            "redis", marks=[pytest.mark.redis, pytest.mark.skipif(bool(_no_redis()), reason=str(_no_redis()))]
        ),
    ],
)
def test_pages_static_files_and_json_endpoints(server_factory: Any, broker: str) -> None:
    env = {}
    if broker == "redis":
        env = {"TIDINGS_BROKER_URL": "redis://127.0.0.1:6379", "TIDINGS_BROKER_PREFIX": f"t{secrets.token_hex(6)}"}
    server: LiveServer = server_factory(env=env)
    server.create_user("ann")
    ann = {"Authorization": f"Bearer {server.token('ann')}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        root = http.get("/")
        assert root.status_code in (302, 307) and root.headers["location"] == "/dashboard"
        for page in ("/login", "/dashboard"):
            response = http.get(page)
            assert response.status_code == 200 and "text/html" in response.headers["content-type"]
            assert response.headers["cache-control"] == "no-store"
        assert 'src="/dashboard/static/app.js"' in http.get("/dashboard").text
        for path in ("/dashboard/static/app.js", "/dashboard/static/style.css", "/dashboard/static/login.js"):
            assert http.get(path).status_code == 200, path
        chart = http.get("/dashboard/static/vendor/chart-4.6.1.umd.min.js")
        assert chart.status_code == 200 and "Chart.js v4.6.1" in chart.text[:200]

        assert http.get("/api/dashboard/rates").status_code == 401
        rates = http.get("/api/dashboard/rates", headers=ann).json()
        assert set(rates) >= {"time", "connections", "publications", "deliveries", "messages_received"}

        admin = server.admin_headers()
        for n in range(3):
            http.post("/api/publish", json={"channel": "room:hist", "data": {"n": n}}, headers=admin).raise_for_status()
        history = http.get("/api/history/room:hist", params={"limit": 2}, headers=ann).json()
        assert history["offset"] == 3 and [m["data"]["n"] for m in history["messages"]] == [1, 2]
        assert [m["offset"] for m in history["messages"]] == [2, 3]
        assert all(m["epoch"] == history["epoch"] for m in history["messages"])
        empty = http.get("/api/history/room:never-used", headers=ann).json()
        assert empty["offset"] == 0 and empty["messages"] == []

        assert http.get("/api/history/room:hist").status_code == 401
        assert http.get("/api/history/nope!", headers=ann).status_code == 404
        assert http.get("/api/history/job_updates", headers=ann).status_code == 403  # only their own jobs' events
        assert http.get("/api/history/user:1", headers=ann).status_code == 403  # someone else's channel
        assert http.get("/api/history/job_updates", headers=admin).status_code == 200
