"""http_requests_total and http_request_duration_seconds for every answer, by route template."""

import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from collector.api.problems import Handler
from collector.metrics import CollectorMetrics


def route_of(request: web.Request) -> str:
    """The matched route's template (/api/v1/agents/{agent_id}), or unmatched: few labels."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: CollectorMetrics) -> Middleware:
    """Count and time each request; outermost, so every answer, errors included, is seen."""

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            labels = (request.method, route_of(request), str(status))
            metrics.http_requests.labels(*labels).inc()
            metrics.http_seconds.labels(*labels).observe(time.perf_counter() - started)

    return measure
