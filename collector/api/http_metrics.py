"""http_requests_total and http_request_duration_seconds for every answer, by route template."""

import time

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter, Histogram

from collector.api.problems import Handler
from collector.metrics import CollectorMetrics


def route_of(request: web.Request) -> str:
    """The matched route's template (/api/v1/agents/{agent_id}), or unmatched: few labels."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: CollectorMetrics) -> Middleware:
    """Count and time each request; outermost, so every answer, errors included, is seen."""

    # The labelled children, found once per (method, route, status): a lookup per request
    # through prometheus_client's labels() costs more than the observation itself.
    series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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
            labels = (request.method, route_of(request), status)
            children = series.get(labels)
            if children is None:
                named = (labels[0], labels[1], str(status))
                children = (
                    metrics.http_requests.labels(*named),
                    metrics.http_seconds.labels(*named),
                )
                series[labels] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

    return measure
