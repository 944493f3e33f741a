"""The embedded default: memory broker, jobs run inside ``tidings serve`` (nothing else started).

Run against SQLite and PostgreSQL (``database_env``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, recv_json, ws_connect
from tests.platform.conftest import (
    SLOW_CRAWL,
    api_get,
    check_job_stream,
    collect_job,
    create_job,
    headers,
    platform_server,
    set_price_version,
    site_url,
    subscribe,
)
from tidings.crawler import store
from tidings.crawler.sample_site import price_changed_ids, summary
from tidings.db import Database

pytestmark = [pytest.mark.slow]


async def test_embedded_crawl_end_to_end(server_factory: Any, database_env: dict[str, str]) -> None:
    server: LiveServer = platform_server(server_factory, database_env)
    expected = summary().items_expected
    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        assert (await subscribe(ws, "property_updates"))["type"] == "subscription_confirmed"
        job = await create_job(server, "ann", [site_url(server)])
        job_channel = f"job:{job['job_id']}"
        # the job's own channel: its owner may subscribe. The job may start before the
        # subscription does (a loaded machine), so the whole stream is read from the user's channel, subscribed
        # since the connection opened, and the job channel must carry the same events from its subscription on.
        backlog: list[dict[str, Any]] = []
        assert (await subscribe(ws, job_channel, backlog))["type"] == "subscription_confirmed"
        seen = await collect_job(ws, job["job_id"], f"user:{hello['user_id']}", backlog=backlog)
        check_job_stream(seen.job, expected)
        assert sum(p["count"] for p in seen.properties if p["event"] == "new_properties") == expected
        # one delivery per connection: subscribed to both, the connection got each event once, and each names
        # the job channel among the channels it was published on
        assert all(job_channel in (e.get("copies") or [e["channel"]]) for e in seen.job), seen.job
        assert not [m for m in seen.other if m.get("type") == "job_update" and m.get("job_id") == job["job_id"]]

        stored = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert stored["status"] == "completed" and stored["items_scraped"] == expected
        assert stored["executions"][0]["worker"].startswith("server@")

        set_price_version(server, 2)
        job2 = await create_job(server, "ann", [site_url(server)])
        seen2 = await collect_job(ws, job2["job_id"], f"user:{hello['user_id']}")
        check_job_stream(seen2.job, expected)
        changes = [p for p in seen2.properties if p["event"] == "price_change"]
        assert len(changes) == len(price_changed_ids(2))
        listed = (await api_get(server, "ann", "/api/properties", limit=1)).json()
        assert listed["total"] == expected
    finally:
        await ws.close()


async def test_unreachable_target_fails_the_job_readably(server_factory: Any, database_env: dict[str, str]) -> None:
    server: LiveServer = platform_server(server_factory, database_env)
    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        job = await create_job(server, "ann", ["http://127.0.0.1:9/"])
        seen = await collect_job(ws, job["job_id"], f"user:{hello['user_id']}")
        assert [e["event"] for e in seen.job] == ["job_started", "job_failed"]
        error = seen.final["error"]
        assert "http://127.0.0.1:9/" in error and "Connection refused" in error, error
        assert seen.final["status"] == "failed"
        failed = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert failed["status"] == "failed" and failed["error"] == error
        assert failed["items_scraped"] == 0
    finally:
        await ws.close()


async def test_cancel_stops_the_spider_and_reports_it(server_factory: Any, database_env: dict[str, str]) -> None:
    server: LiveServer = platform_server(server_factory, {**database_env, "TIDINGS_CRAWL_SETTINGS": SLOW_CRAWL})
    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        channel = f"user:{hello['user_id']}"
        job = await create_job(server, "ann", [site_url(server)])
        seen = await collect_job(ws, job["job_id"], channel, until=("job_progress",))
        assert seen.final["event"] == "job_progress"

        async with httpx.AsyncClient(base_url=server.url) as http:
            other = await http.post(f"/api/jobs/{job['job_id']}/cancel", headers=headers(server, "bob"))
            assert other.status_code == 404
            resp = await http.post(f"/api/jobs/{job['job_id']}/cancel", headers=headers(server, "ann"))
            assert resp.status_code == 200, resp.text
            assert resp.json()["cancel_requested"] is True

        rest = await collect_job(ws, job["job_id"], channel)
        assert rest.final["event"] == "job_failed"
        assert rest.final["error"] == "cancelled" and rest.final["status"] == "cancelled"
        progress = [e["items_scraped"] for e in seen.job + rest.job if e["event"] == "job_progress"]
        assert progress == sorted(progress)

        job_now = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert job_now["status"] == "cancelled"
        stored = (await api_get(server, "ann", "/api/properties", limit=1)).json()["total"]
        assert job_now["items_scraped"] == stored == rest.final["items_scraped"]
        assert stored < summary().items_expected

        async with httpx.AsyncClient(base_url=server.url) as http:
            again = await http.post(f"/api/jobs/{job['job_id']}/cancel", headers=headers(server, "ann"))
        assert again.status_code == 409
    finally:
        await ws.close()


async def _wait_final(server: LiveServer, job_id: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := (await api_get(server, "ann", f"/api/jobs/{job_id}")).json())["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.3)
    result: dict[str, Any] = found
    return result


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["shutdown", "crash"])
async def test_restart_requeues_and_resumes_running_jobs_and_runs_pending_ones(
    server_factory: Any, stop: signal.Signals
) -> None:
    server: LiveServer = platform_server(server_factory, {"TIDINGS_CRAWL_SETTINGS": SLOW_CRAWL})
    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        running = await create_job(server, "ann", [site_url(server)])
        await collect_job(ws, running["job_id"], f"user:{hello['user_id']}", until=("job_progress",))
    finally:
        await ws.close()
    server.stop(stop)  # SIGTERM: a graceful shutdown; SIGKILL: the process dies with the job

    reason = "interrupted: the server shut down" if stop == signal.SIGTERM else None
    db = Database(server.database_url)
    try:
        job = await store.get_job(db, running["job_id"])
        assert job is not None
        if reason:  # the shutdown put it back in the queue itself
            assert (job.status, job.resume_reason, job.error) == ("pending", reason, None)
        else:  # nobody could: it is still "running" until the next start takes it back
            assert job.status == "running"
        ann = await db.get_user("ann")
        assert ann is not None
        queued = await store.create_job(db, ann.id, "listings", ["http://127.0.0.1:9/"])
    finally:
        await db.dispose()

    server.start(timeout=120)
    found = await _wait_final(server, queued.id)
    assert found["status"] == "failed" and "Connection refused" in found["error"]
    resumed = await _wait_final(server, running["job_id"])
    assert resumed["status"] == "completed", resumed
    assert resumed["resumed"] is True and resumed["attempts"] == 2
    assert resumed["resume_reason"] == (reason or "interrupted: the server stopped unexpectedly")
    assert resumed["items_scraped"] == summary().items_expected  # crawled again, items upserted by URL
    assert len(resumed["executions"]) == 2
    total = (await api_get(server, "ann", "/api/properties", limit=1)).json()["total"]
    assert total == summary().items_expected


async def test_job_interrupted_more_often_than_the_retry_limit_fails_with_the_reason(server_factory: Any) -> None:
    env = {"TIDINGS_CRAWL_SETTINGS": SLOW_CRAWL, "TIDINGS_JOB_MAX_RETRIES": "1"}
    server: LiveServer = platform_server(server_factory, env)
    job = await create_job(server, "ann", [site_url(server)])
    for _ in range(2):  # the first run and its one retry are both interrupted
        deadline = time.monotonic() + 120
        while (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        server.stop()
        server.start(timeout=120)
    failed = await _wait_final(server, job["job_id"])
    assert failed["status"] == "failed"
    assert failed["error"] == "interrupted: the server shut down (gave up after 2 attempts)"
    assert failed["attempts"] == 2
