"""``install_offline_docs`` on a host's own app: /docs and /redoc reference only this server's assets (served), and
without ``fastapi-offline`` FastAPI's default pages stay (the AsyncAPI viewer is served either way)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tidings.api import docs


def test_host_app_gets_local_docs_assets() -> None:
    app = FastAPI(title="Host")
    assert docs.install_offline_docs(app) is True
    client = TestClient(app)
    for path in ("/docs", "/redoc"):
        page = client.get(path).text
        assert "cdn.jsdelivr.net" not in page and "fonts.googleapis.com" not in page, page
        assert "/static/docs/ui/" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert client.get(f"/static/docs/ui/{asset}").status_code == 200
    viewer = client.get("/asyncapi").text
    assert '"/asyncapi.json"' in viewer and "cdn" not in viewer
    assert client.get("/static/docs/asyncapi/asyncapi.js").status_code == 200


def test_without_fastapi_offline_the_defaults_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs, "offline_assets_dir", lambda: None)  # as if the docs extra were not installed
    app = FastAPI(title="Host")
    assert docs.install_offline_docs(app) is False
    client = TestClient(app)
    assert "cdn.jsdelivr.net" in client.get("/docs").text  # FastAPI's own page, still working
    assert client.get("/asyncapi").status_code == 200
