"""Puts the API on the application: middlewares, the guarded operations, the contract."""

from aiohttp import web
from aiohttp.typedefs import Middleware

from collector.api import (
    agents,
    alerts,
    api_keys,
    commands,
    dead_letters,
    downtime,
    equipment,
    kpis,
    machine_states,
    readings,
    series,
    stream,
    tags,
    webhooks,
)
from collector.api.auth import PRINCIPAL, authorize
from collector.api.contract import add_contract_routes
from collector.api.headers import add_security_headers, cors_middleware, limits_middleware
from collector.api.http_metrics import metrics_middleware
from collector.api.operations import API, Operation
from collector.api.ports import ports_middleware
from collector.api.problems import problem_middleware
from collector.api.ratelimit import RateLimits, add_limit_headers
from collector.config import HttpSettings
from collector.metrics import CollectorMetrics
from collector.state import AUTH, LIMITS, METRICS, SETTINGS

RESOURCES = (
    agents,
    alerts,
    api_keys,
    commands,
    dead_letters,
    downtime,
    equipment,
    kpis,
    machine_states,
    readings,
    series,
    stream,
    tags,
    webhooks,
)
"""Imported for their operations, which they declare on API."""


def middlewares(settings: HttpSettings, metrics: CollectorMetrics | None) -> list[Middleware]:
    """Outermost first: metrics and CORS see every answer, errors included."""
    measured = [metrics_middleware(metrics)] if metrics is not None else []
    split = [ports_middleware(settings.ops_port)] if settings.ops_port is not None else []
    return [
        *measured,
        cors_middleware(settings.cors_origins),
        problem_middleware,
        *split,
        limits_middleware(settings.max_query_bytes),
    ]


async def guard(request: web.Request, op: Operation) -> None:
    """Authenticate the request's key, check its role and count it, unless the operation is open."""
    if op.role is None:
        return
    key = await request.app[AUTH].authenticate(request)
    authorize(key, op)
    request[PRINCIPAL] = key
    limits = request.app.get(LIMITS)
    if limits is not None:
        await limits.check(request, key)


async def unguarded(request: web.Request, op: Operation) -> None:
    """No authentication, roles or limits: only for measuring what they cost (bench-api)."""


def add_api(app: web.Application, platform: bool = True) -> None:
    """Every operation, the contract and its docs, and the headers every answer carries.

    Without `platform`, operations are not guarded (no key, role or rate limit): only
    `make bench-api` does that, to measure the platform's own cost.
    """
    app.add_routes(API.routes(guard if platform else unguarded))
    add_contract_routes(app)
    app.on_response_prepare.append(add_security_headers)
    app.on_response_prepare.append(add_limit_headers)
    settings = app[SETTINGS].rate_limits
    if platform and settings.enabled:
        app[LIMITS] = RateLimits(settings, app[METRICS])
