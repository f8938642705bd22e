"""Serving the dashboard's build: the page, its hashed assets, caching, the policy, no build."""

import logging
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector.api.headers import add_security_headers
from collector.web.dashboard import CSP, IMMUTABLE, REVALIDATE, Dashboard, add_dashboard


def built(folder: Path) -> Path:
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text("<!doctype html><title>dashboard</title>")
    (folder / "assets" / "main-ABCD1234.js").write_text("console.log(1)")
    (folder / "assets" / "main-ABCD1234.js.map").write_text("{}")
    (folder / "assets" / "notes.txt").write_text("not an asset")
    return folder


def app_of(folder: Path) -> web.Application:
    app = web.Application()
    add_dashboard(app, Dashboard(folder))
    app.on_response_prepare.append(add_security_headers)
    return app


async def test_the_page_and_its_assets_are_served_with_the_policy_and_cache_headers(
    tmp_path: Path,
) -> None:
    async with TestClient(TestServer(app_of(built(tmp_path)))) as client:
        root = await client.get("/", allow_redirects=False)
        assert root.status == 302
        assert root.headers["Location"] == "/dashboard/"
        page = await client.get("/dashboard/")
        assert page.status == 200
        assert "<title>dashboard</title>" in await page.text()
        assert page.headers["Content-Security-Policy"] == CSP
        assert page.headers["Cache-Control"] == REVALIDATE
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        for name in ("main-ABCD1234.js", "main-ABCD1234.js.map"):
            asset = await client.get(f"/dashboard/assets/{name}")
            assert asset.status == 200
            assert asset.headers["Cache-Control"] == IMMUTABLE
        script = await client.get("/dashboard/assets/main-ABCD1234.js")
        assert script.content_type in {"text/javascript", "application/javascript"}


async def test_only_the_builds_own_asset_names_are_served(tmp_path: Path) -> None:
    async with TestClient(TestServer(app_of(built(tmp_path)))) as client:
        for name in ("notes.txt", "main-ZZZZ9999.js", "..%2Findex.html", "index.html"):
            response = await client.get(f"/dashboard/assets/{name}")
            assert response.status == 404, name


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "unsafe" not in CSP


async def test_a_collector_without_the_build_explains_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="collector.web.dashboard"):
        app = app_of(tmp_path / "missing")
    assert [r.getMessage() for r in caplog.records if "not built" in r.getMessage()]
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/dashboard/")
        assert page.status == 503
        assert "make dashboard" in await page.text()
        assert page.headers["Content-Security-Policy"] == CSP
        missing = await client.get("/dashboard/assets/main-ABCD1234.js")
        assert missing.status == 404


def test_the_package_build_is_where_the_wheel_takes_it_from() -> None:
    # pyproject's package-data names these patterns; the build writes exactly there.
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"web/static/*.html", "web/static/assets/*"' in pyproject
    assert Dashboard().folder == Path(__file__).parents[2] / "collector" / "web" / "static"
