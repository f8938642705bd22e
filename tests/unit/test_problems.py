"""The collector's HTTP error middleware: every failure is answered as RFC 9457 problem details."""

import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector.api.problems import PROBLEM_TYPE, problem_middleware, problem_response

SECRET = "postgresql://collector:hunter2@db.internal:5432/plant"  # noqa: S105 - a fake, to test it is hidden


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError(f"connection to {SECRET} lost")


async def fine(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_an_unexpected_error_is_a_500_problem_naming_no_internals_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/api/v1/broken", broken)
    app.router.add_get("/api/v1/fine", fine)
    caplog.set_level(logging.DEBUG)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/broken")
        assert response.status == 500
        assert response.content_type == PROBLEM_TYPE
        text = await response.text()
        body = json.loads(text)
        assert body["status"] == 500
        assert body["title"] == "Internal Server Error"
        assert body["type"] == "about:blank"
        assert body["instance"] == "/api/v1/broken"
        for leak in ("hunter2", "db.internal", "RuntimeError", "Traceback", "broken("):
            assert leak not in text
        # The server goes on answering.
        assert (await client.get("/api/v1/fine")).status == 200
    with_traceback = [record for record in caplog.records if record.exc_info]
    assert len(with_traceback) == 1, [record.getMessage() for record in with_traceback]
    record = with_traceback[0]
    assert record.levelno == logging.ERROR
    assert "GET /api/v1/broken" in record.getMessage()
    error_id = body["detail"].rsplit(" ", 1)[1].rstrip(".")
    assert error_id in record.getMessage(), "the answer's error id finds the log record"
    assert record.exc_info is not None
    assert SECRET in str(record.exc_info[1])


async def test_http_errors_keep_their_own_status() -> None:
    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such agent")

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/missing", missing)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/missing")
        assert response.status == 404
        assert (await response.json(content_type=None))["detail"] == "no such agent"
        assert (await client.get("/nowhere")).status == 404


def test_a_problem_without_an_instance_leaves_the_member_out() -> None:
    response = problem_response(409, "Conflict", "already there")
    assert response.status == 409
    assert response.content_type == PROBLEM_TYPE
    assert response.text is not None
    assert json.loads(response.text) == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "already there",
    }
