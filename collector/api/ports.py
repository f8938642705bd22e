"""With http.ops_port set, /healthz, /readyz and /metrics answer there and only there."""

import socket

from aiohttp import web
from aiohttp.typedefs import Middleware

from collector.api.problems import Handler

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def local_port(request: web.Request) -> int | None:
    """The port the request came in on."""
    transport = request.transport
    name = transport.get_extra_info("sockname") if transport is not None else None
    return int(name[1]) if isinstance(name, tuple) and len(name) >= 2 else None


def ports_middleware(ops_port: int) -> Middleware:
    """Keep operations endpoints on the ops port, and everything else off it (404 elsewhere)."""

    @web.middleware
    async def split(request: web.Request, handler: Handler) -> web.StreamResponse:
        on_ops_port = local_port(request) == ops_port
        if (request.path in OPS_PATHS) != on_ops_port:
            raise web.HTTPNotFound(text=f"{request.path} is not served on this port")
        return await handler(request)

    return split


def listening_sockets(host: str, ports: list[int]) -> list[socket.socket]:
    """Bound sockets for each port, for web.run_app(sock=...) to serve one app on several."""
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
