"""Request bodies: a size cap answered with 413 before the body is read; admin and publish endpoints
authenticate before they parse (401/403 before 413/422); an unread body is never drained after the reply."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.security.rawhttp import close_quietly, closed_by_server, open_raw, read_response, request_head

ENDPOINTS = ["/api/publish", "/admin/broadcast", "/admin/notify-admins"]


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    server.create_user("ann")
    return server


@pytest.mark.parametrize(("size", "who"), [(30_000_000, None), (100_000_000, "admin")])
async def test_an_oversized_body_gets_413_without_being_read(srv: LiveServer, size: int, who: str | None) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(size)}
    if who:
        headers["Authorization"] = f"Bearer {srv.token(who)}"
    reader, writer = await open_raw(srv.port)
    try:
        # a first packet of the body only (bytes the server has not read when it closes would make it reset)
        writer.write(request_head("POST", "/api/publish", headers) + b"{" + b"x" * 1024)
        await writer.drain()
        started = time.monotonic()
        status, response_headers, body = await read_response(reader)
        assert status == 413, body
        assert b"too large" in body.lower()
        assert response_headers.get("connection") == "close"
        assert await closed_by_server(reader)
        print(f"413 after {time.monotonic() - started:.3f}s with {size} bytes declared and 1 KiB sent")
    finally:
        close_quietly(writer)


async def test_a_chunked_body_over_the_limit_gets_413(srv: LiveServer) -> None:
    headers = {
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
        "Authorization": f"Bearer {srv.token('admin')}",
    }
    reader, writer = await open_raw(srv.port)
    try:
        writer.write(request_head("POST", "/api/publish", headers))
        chunk = b"x" * 65536
        for _ in range(16):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")  # 1 MiB + 1 KiB, never terminated: answer at the limit
        await writer.drain()
        status, _, body = await read_response(reader)
        assert status == 413, body
        assert await closed_by_server(reader)
    finally:
        close_quietly(writer)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_authentication_comes_before_body_parsing(srv: LiveServer, path: str) -> None:
    invalid = b'{"channel": "room:x", "data": '  # truncated JSON
    async with httpx.AsyncClient(base_url=srv.url) as http:
        json_type = {"Content-Type": "application/json"}
        anonymous = await http.post(path, content=invalid, headers=json_type)
        assert anonymous.status_code == 401, anonymous.text
        user = await http.post(path, content=invalid, headers={**json_type, **srv.admin_headers("ann")})
        assert user.status_code == 403, user.text
        admin = await http.post(path, content=invalid, headers={**json_type, **srv.admin_headers()})
        assert admin.status_code == 422, admin.text
        ok_body = {"channel": "room:x", "data": {"n": 1}} if path == "/api/publish" else {"message": "hi"}
        ok = await http.post(path, json=ok_body, headers=srv.admin_headers())
        assert ok.status_code == 200, ok.text


async def test_an_unauthenticated_upload_is_answered_and_dropped_unread(srv: LiveServer) -> None:
    """900 KB declared (under the limit), 1 KB sent: the 401 comes at once and the rest is not waited for."""
    headers = {"Content-Type": "application/json", "Content-Length": "900000"}
    reader, writer = await open_raw(srv.port)
    try:
        writer.write(request_head("POST", "/api/publish", headers) + b"[" * 1024)
        await writer.drain()
        status, response_headers, _ = await read_response(reader, timeout=5)
        assert status == 401
        assert response_headers.get("connection") == "close"
        assert await closed_by_server(reader)
    finally:
        close_quietly(writer)


async def test_openapi_still_documents_the_bodies(srv: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        spec = (await http.get("/openapi.json")).json()
    schema = spec["paths"]["/api/publish"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"channel", "data"}
