"""The dashboard's sign-out revokes the token on the server (POST /auth/logout): a copy of it stops working."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.conftest import sign_in
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser


def test_sign_out_revokes_the_token(server: LiveServer, new_page: Callable[[], Any]) -> None:
    page = sign_in(new_page(), server, "ann")
    token = page.evaluate("sessionStorage.getItem('tidings.token')")
    assert httpx.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with page.expect_request(lambda request: request.url.endswith("/auth/logout")):
        page.click("#logout")
    page.wait_for_url(f"{server.url}/login**")
    resp = httpx.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json()["detail"] == "Token revoked"
