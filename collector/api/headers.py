"""Headers every answer carries (security, caching), CORS for configured origins, and limits
on what a request may send."""

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from collector.api.problems import Handler, InvalidParam, ProblemError

API_CSP = "default-src 'none'; frame-ancestors 'none'"
"""JSON needs nothing loaded; pages set their own policy."""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CORS_METHODS = "GET, POST, PATCH, DELETE"
CORS_HEADERS = "Authorization, X-API-Key, Content-Type"
CORS_EXPOSED = "RateLimit, RateLimit-Policy, Retry-After, Link"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, errors and files included (an on_response_prepare signal)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", API_CSP)
    # Readings and keys are private: no shared cache may keep them.
    response.headers.setdefault("Cache-Control", "no-store")


def limits_middleware(max_query_bytes: int) -> Middleware:
    """Refuse over-long query strings with a problem naming the query."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        size = len(request.rel_url.raw_query_string)
        if size > max_query_bytes:
            raise ProblemError(
                414,
                "URI Too Long",
                f"the query string has {size} bytes; at most {max_query_bytes} are accepted",
                [InvalidParam("query", f"longer than {max_query_bytes} bytes")],
            )
        return await handler(request)

    return limit


def cors_middleware(origins: Sequence[str]) -> Middleware:
    """CORS for exactly the configured origins; with none, browsers of other origins get none."""
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            # Outside the problem middleware: errors arrive here as responses too.
            response = await handler(request)
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        return response

    return cors
