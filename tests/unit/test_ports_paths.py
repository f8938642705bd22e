"""One application on two ports: operations endpoints on one, the API on the other."""

import errno
import socket

import aiohttp
import pytest
from aiohttp import web

from collector.api.ports import listening_sockets, ports_middleware
from collector.api.problems import PROBLEM_TYPE, problem_middleware
from tests.servers import free_port


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def agents(request: web.Request) -> web.Response:
    return web.json_response([])


async def test_operations_endpoints_answer_on_their_port_and_nothing_else_does() -> None:
    api_port, ops_port = free_port(), free_port()
    app = web.Application(middlewares=[problem_middleware, ports_middleware(ops_port)])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/agents", agents)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        for sock in listening_sockets("127.0.0.1", [api_port, ops_port]):
            await web.SockSite(runner, sock).start()
        api, ops = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{ops}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{api}/api/v1/agents") as response:
                assert response.status == 200
            for base, path in ((api, "/healthz"), (ops, "/api/v1/agents")):
                async with session.get(f"{base}{path}") as response:
                    assert response.status == 404
                    assert response.content_type == PROBLEM_TYPE
                    problem = await response.json(content_type=None)
                    assert problem["detail"] == f"{path} is not served on this port"
    finally:
        await runner.cleanup()


def test_a_port_in_use_closes_the_sockets_already_bound() -> None:
    free = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use") as refused:
            listening_sockets("127.0.0.1", [free, busy])
    assert refused.value.errno == errno.EADDRINUSE
    # `refused` keeps the failed call's frame, and its sockets, alive: the free port is
    # bindable (without SO_REUSEADDR) only because its socket was closed, not leaked.
    with socket.socket() as again:
        again.bind(("127.0.0.1", free))
    assert refused.traceback
