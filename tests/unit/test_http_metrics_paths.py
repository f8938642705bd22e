"""Answers that are not errors but still raised (redirects) are passed on, and counted."""

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector.api.http_metrics import metrics_middleware
from collector.api.problems import problem_middleware
from collector.metrics import CollectorMetrics


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/api/v1/agents")


async def test_a_raised_redirect_reaches_the_client_as_it_is_and_is_counted() -> None:
    metrics = CollectorMetrics()
    app = web.Application(middlewares=[metrics_middleware(metrics), problem_middleware])
    app.router.add_get("/api/agents", moved)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/agents", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == "/api/v1/agents"
        assert response.content_type != "application/problem+json"
    labels = {"method": "GET", "route": "/api/agents", "status": "302"}
    assert metrics.registry.get_sample_value("http_requests_total", labels) == 1
    assert metrics.registry.get_sample_value("http_request_duration_seconds_count", labels) == 1
