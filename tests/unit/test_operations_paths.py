"""Operations the collector's API does not declare yet: open ones, bodies, answers of their own.

An API of the test's own goes through the same registry, routes, guard and contract writer.
"""

import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector.api.contract import error_statuses, openapi
from collector.api.operations import Api, Body, Params
from collector.api.problems import PROBLEM_TYPE, problem_middleware
from collector.api.routes import guard


class Thing(Body):
    """A body with one field."""

    name: str


class Lookup(Params):
    """A parameter that is a number or a word."""

    id: int | str | None = None


API = Api()


@API.operation(
    "POST", "/things", summary="Echo a thing", tag="things", role=None, body=Thing, response=Thing
)
async def echo_thing(request: web.Request, params: Lookup, thing: Thing) -> Thing:
    """Answer with the thing sent."""
    return thing


@API.operation("GET", "/export", summary="A CSV file", tag="things", role=None, params=Lookup)
async def export(request: web.Request, params: Lookup) -> web.StreamResponse:
    """Answer with a response of its own."""
    return web.Response(text=f"id\n{params.id}\n", content_type="text/csv", status=203)


def app() -> web.Application:
    application = web.Application(middlewares=[problem_middleware])
    application.add_routes(API.routes(guard))
    return application


async def test_an_open_operation_needs_no_key_and_may_answer_with_its_own_response() -> None:
    # The app has no authenticator at all: an open operation never asks for one.
    async with TestClient(TestServer(app())) as client:
        response = await client.get("/export", params={"id": "7"})
        assert response.status == 203
        assert response.content_type == "text/csv"
        assert await response.text() == "id\n7\n"
        response = await client.post("/things", json={"name": "press"})
        assert response.status == 200
        assert await response.json() == {"name": "press"}


async def test_a_body_that_is_not_json_is_a_400_naming_the_body() -> None:
    async with TestClient(TestServer(app())) as client:
        for raw in (b'{"name": ', b"\xff\xfe"):
            response = await client.post(
                "/things", data=raw, headers={"Content-Type": "application/json"}
            )
            assert response.status == 400
            assert response.content_type == PROBLEM_TYPE
            problem = await response.json(content_type=None)
            assert problem["title"] == "Invalid request body"
            assert problem["detail"].startswith("not JSON: ")
            assert problem["invalid_params"] == [{"name": "body", "reason": "not JSON"}]


def test_the_contract_of_an_open_operation_promises_no_key_errors() -> None:
    document = openapi(API)
    by_id: dict[str, Any] = {
        op["operationId"]: op for path in document["paths"].values() for op in path.values()
    }
    for op in API.operations:
        assert not {401, 403, 429} & set(error_statuses(op))
    exported = by_id["export"]
    assert exported["security"] == []
    assert "x-required-role" not in exported
    assert exported["description"] == "Answer with a response of its own."
    # No response model: the contract names only the errors.
    assert sorted(exported["responses"]) == ["400", "414", "500", "503"]
    echoed = by_id["echo_thing"]
    assert sorted(echoed["responses"]) == ["200", "400", "413", "414", "415", "422", "500", "503"]
    assert echoed["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    # An optional parameter of several types keeps them all, without the null.
    (parameter,) = exported["parameters"]
    assert parameter["in"] == "query"
    assert parameter["required"] is False
    assert parameter["schema"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    json.dumps(document)  # serialisable as it is served
