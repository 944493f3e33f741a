"""Jobs on real Celery workers: ``tidings serve`` + ``tidings worker`` + Redis, crawling the server's sample site.

Run against SQLite and PostgreSQL (``database_env``).
"""

from __future__ import annotations

import re
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
from tidings.crawler.sample_site import price_changed_ids, summary

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LISTING_ID = re.compile(r"/listing/(\d+)\.html$")


async def test_worker_crawl_end_to_end_then_price_changes(
    server_factory: Any, worker_factory: Any, database_env: dict[str, str], redis_env: dict[str, str]
) -> None:
    server: LiveServer = platform_server(server_factory, {**database_env, **redis_env})
    worker = worker_factory(server)
    expected = summary().items_expected

    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        ann_channel = f"user:{hello['user_id']}"
        assert (await subscribe(ws, "property_updates"))["type"] == "subscription_confirmed"

        # 1. first crawl: every listing is new
        job = await create_job(server, "ann", [site_url(server)])
        assert job["status"] == "pending" and job["owner_id"] == hello["user_id"]
        seen = await collect_job(ws, job["job_id"], ann_channel)
        assert seen.final["event"] == "job_completed", (seen.final, worker.log()[-3000:])
        check_job_stream(seen.job, expected)

        listed = (await api_get(server, "ann", "/api/properties", limit=500)).json()
        assert listed["total"] == expected == len(listed["properties"])
        new = [p for p in seen.properties if p["event"] == "new_properties"]
        assert sum(p["count"] for p in new) == expected
        assert {p["location"] for p in new} == {"Amsterdam", "London", "Boston"}
        assert not [p for p in seen.properties if p["event"] == "price_change"]

        stored = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert stored["status"] == "completed" and stored["items_scraped"] == expected
        assert stored["executions"][0]["worker"].startswith("celery@")
        assert stored["executions"][0]["items_scraped"] == expected

        # 2. prices change on the site; a second crawl reports exactly those listings
        by_listing = {int(LISTING_ID.search(p["url"]).group(1)): p for p in listed["properties"]}  # type: ignore[union-attr]
        watched = by_listing[5]["property_id"]
        assert (await subscribe(ws, f"property:{watched}"))["type"] == "subscription_confirmed"
        set_price_version(server, 1)
        job2 = await create_job(server, "ann", [site_url(server)])
        seen2 = await collect_job(ws, job2["job_id"], ann_channel)
        check_job_stream(seen2.job, expected)
        changes = [p for p in seen2.properties if p["event"] == "price_change"]
        changed_ids = {int(LISTING_ID.search(p["url"]).group(1)) for p in changes}  # type: ignore[union-attr]
        assert changed_ids == set(price_changed_ids(1))
        assert all(p["old_price"] != p["new_price"] for p in changes)
        assert not [p for p in seen2.properties if p["event"] == "new_properties"]

        detail = (await api_get(server, "ann", f"/api/properties/{watched}")).json()
        [history] = detail["price_history"]
        [change] = [p for p in changes if p["property_id"] == watched]
        assert (history["old_price"], history["new_price"]) == (change["old_price"], change["new_price"])
        assert detail["price"] == change["new_price"]

        # published on property_updates and property:<id>: a connection subscribed to both gets it once
        watched_channel = f"property:{watched}"
        on_property_channel = [
            m
            for m in [*seen2.properties, *seen2.other]
            if m.get("type") == "property_notification"
            and watched_channel in (m.get("copies") or [m.get("channel")])
        ]
        assert [m["event"] for m in on_property_channel] == ["price_change"]
        assert on_property_channel[0]["new_price"] == change["new_price"]
        await ws.send('{"type": "request_status"}')
        while (status := await recv_json(ws, 10))["type"] != "status_update":
            pass
        assert status["total_properties"] == expected
        assert status["active_jobs"] == 0
    finally:
        await ws.close()


async def test_killed_worker_without_retries_left_fails_the_job_and_tells_the_owner(
    server_factory: Any, worker_factory: Any, database_env: dict[str, str], redis_env: dict[str, str]
) -> None:
    env = {**database_env, **redis_env, "TIDINGS_JOB_LEASE_SECONDS": "3", "TIDINGS_JOB_MAX_RETRIES": "0"}
    server: LiveServer = platform_server(server_factory, env)
    worker = worker_factory(server, {"TIDINGS_CRAWL_SETTINGS": SLOW_CRAWL})

    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        job = await create_job(server, "ann", [site_url(server)])
        job_channel = f"job:{job['job_id']}"
        assert (await subscribe(ws, job_channel))["type"] == "subscription_confirmed"
        seen = await collect_job(ws, job["job_id"], f"user:{hello['user_id']}", until=("job_progress",))
        assert seen.final["event"] == "job_progress", seen.job
        running = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert running["status"] == "running"

        worker.kill()

        rest = await collect_job(ws, job["job_id"], f"user:{hello['user_id']}")
        assert rest.final["event"] == "job_failed", rest.job
        assert rest.final["error"] == "worker lost (gave up after 1 attempt)"  # the reason, and the retries spent
        assert rest.final["status"] == "failed"
        failed = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert failed["status"] == "failed" and failed["error"] == "worker lost (gave up after 1 attempt)"
        assert failed["finished_at"] is not None
        assert failed["executions"][0]["error"] == "worker lost"
        await ws.send('{"type": "request_status"}')
        while (msg := await recv_json(ws, 10))["type"] != "status_update":
            pass
        assert msg["active_jobs"] == 0
    finally:
        await ws.close()


async def test_job_of_a_killed_worker_is_requeued_and_resumed_by_another(
    server_factory: Any, worker_factory: Any, database_env: dict[str, str], redis_env: dict[str, str]
) -> None:
    env = {**database_env, **redis_env, "TIDINGS_JOB_LEASE_SECONDS": "3"}
    server: LiveServer = platform_server(server_factory, env)
    worker = worker_factory(server, {"TIDINGS_CRAWL_SETTINGS": SLOW_CRAWL})
    expected = summary().items_expected

    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        channel = f"user:{hello['user_id']}"
        job = await create_job(server, "ann", [site_url(server)])
        seen = await collect_job(ws, job["job_id"], channel, until=("job_progress",))
        assert seen.final["event"] == "job_progress", seen.job
        first_start = next(e for e in seen.job if e["event"] == "job_started")
        assert first_start["attempt"] == 1 and "resumed" not in first_start

        worker.kill()  # SIGKILL mid-crawl: the lease runs out, the reaper re-queues the job
        requeued = await collect_job(ws, job["job_id"], channel, until=("job_progress",))
        while requeued.final.get("status") != "pending":
            requeued = await collect_job(ws, job["job_id"], channel, until=("job_progress",))
        assert requeued.final["requeued"] is True and requeued.final["resume_reason"] == "worker lost"
        waiting = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert waiting["status"] == "pending" and waiting["resumed"] is True

        worker_factory(server)  # another worker takes the re-queued job
        rest = await collect_job(ws, job["job_id"], channel)
        assert rest.final["event"] == "job_completed", (rest.job, rest.final)
        started = next(e for e in rest.job if e["event"] == "job_started")
        assert started["attempt"] == 2 and started["resumed"] is True and started["resume_reason"] == "worker lost"
        done = (await api_get(server, "ann", f"/api/jobs/{job['job_id']}")).json()
        assert done["status"] == "completed" and done["attempts"] == 2 and done["resumed"] is True
        assert [e["error"] for e in done["executions"]] == ["worker lost", None]
        # crawled again from the start, idempotently: every listing once
        assert done["items_scraped"] == expected
        assert (await api_get(server, "ann", "/api/properties", limit=1)).json()["total"] == expected
    finally:
        await ws.close()


async def test_cancelled_pending_job_is_skipped_by_the_worker(
    server_factory: Any, worker_factory: Any, redis_env: dict[str, str]
) -> None:
    """A job cancelled while queued ends at once; the worker that later receives its message leaves it alone."""
    server: LiveServer = platform_server(server_factory, redis_env)
    ws = await ws_connect(server.ws_url(), server.token("ann"))
    try:
        hello = await recv_json(ws)
        channel = f"user:{hello['user_id']}"
        queued = await create_job(server, "ann", [site_url(server)])
        async with httpx.AsyncClient(base_url=server.url, headers=headers(server, "ann")) as http:
            resp = await http.post(f"/api/jobs/{queued['job_id']}/cancel")
        assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
        seen = await collect_job(ws, queued["job_id"], channel)
        assert [e["event"] for e in seen.job] == ["job_failed"]
        assert seen.final["error"] == "cancelled" and seen.final["status"] == "cancelled"

        worker = worker_factory(server)
        after = await create_job(server, "ann", ["http://127.0.0.1:9/"])
        done = await collect_job(ws, after["job_id"], channel)
        assert done.final["event"] == "job_failed" and "Connection refused" in done.final["error"]
        assert not [m for m in done.other if m.get("job_id") == queued["job_id"]]
        job = (await api_get(server, "ann", f"/api/jobs/{queued['job_id']}")).json()
        assert job["status"] == "cancelled" and job["executions"] == [] and job["started_at"] is None
        assert f"job {queued['job_id']} is not pending" in worker.log()
    finally:
        await ws.close()


async def test_unreachable_celery_broker_fails_the_job_at_once(server_factory: Any, redis_env: dict[str, str]) -> None:
    env = {**redis_env, "TIDINGS_CELERY_BROKER_URL": "redis://127.0.0.1:9/0"}
    server: LiveServer = platform_server(server_factory, env)
    async with httpx.AsyncClient(base_url=server.url, headers=headers(server, "ann")) as http:
        resp = await http.post("/api/jobs", json={"spider_name": "listings", "target_urls": [site_url(server)]})
        assert resp.status_code == 503
        assert resp.json()["detail"].startswith("could not queue the job")
        jobs = (await http.get("/api/jobs")).json()["jobs"]
    assert [(j["status"], j["error"][:25]) for j in jobs] == [("failed", "could not queue the job: ")]
