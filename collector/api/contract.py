"""The OpenAPI 3.1 contract, written from the operations' own declarations, and its docs page."""

import json
from functools import cache
from pathlib import Path
from typing import Any

import swagger_ui
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from collector import __version__
from collector.api.operations import API, Api, Operation
from collector.api.problems import PROBLEM_TYPE, Problem

REF = "#/components/schemas/{model}"
EVENT_STREAM = "text/event-stream"
_EVENT_STREAM_DOC = (
    "Server-Sent Events (text/event-stream): per event, `id:`, `event:` (its kind) and"
    " `data:`, one JSON document as `x-event-data` describes; comment lines as heartbeats."
)
DOCS_STATIC = Path(swagger_ui.__file__).parent / "static"
DOCS_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")

_ERRORS = {
    400: "A parameter, header or body field is invalid; invalid_params names each.",
    401: "No API key, or one that is unknown, revoked or expired.",
    403: "The key's role may not call this operation.",
    404: "The resource named by the path or a parameter does not exist.",
    409: "The change conflicts with the resource's state: managed elsewhere, or still in use.",
    413: "The request body is too large.",
    414: "The query string is too long.",
    415: "The request body is not JSON.",
    422: "The body is well-formed but cannot be acted on.",
    429: "Too many requests for this key: wait as long as Retry-After says.",
    500: "The collector failed; its log has the cause under the error id in `detail`.",
    503: "The database cannot be reached; try again after Retry-After.",
}
_HEADER_DOCS = {
    429: {
        "Retry-After": "Seconds until the limit lets a request through.",
        "RateLimit-Policy": "The limit: requests per window (IETF RateLimit headers).",
        "RateLimit": "What is left of it, and when it resets.",
    },
    401: {"WWW-Authenticate": "How to authenticate: Bearer."},
    503: {"Retry-After": "Seconds to wait before trying again."},
}


def error_statuses(op: Operation) -> list[int]:
    """Every error status an operation can answer with."""
    statuses = {400, 414, 500, 503, *op.errors}
    if op.role is not None:
        statuses |= {401, 403, 429}
    if op.body is not None:
        statuses |= {413, 415, 422}
    return sorted(statuses)


def _parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the null a pydantic Optional adds: absent is null."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "default")}
    options = schema.get("anyOf")
    if options is not None:
        kept = [option for option in options if option.get("type") != "null"]
        schema.pop("anyOf")
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    return schema


def _parameters(op: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    document = op.params.model_json_schema(by_alias=True, ref_template=REF)
    schemas.update(document.pop("$defs", {}))
    required = set(document.get("required", ()))
    parameters = []
    for name, schema in document.get("properties", {}).items():
        where = "path" if "{" + name + "}" in op.path else "query"
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": _parameter_schema(schema),
        }
        if "description" in schema:
            parameter["description"] = schema["description"]
        parameters.append(parameter)
    return parameters


def _models(api: Api) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for op in api.operations:
        if op.response is not None:
            models.append((op.response, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
    return list(dict.fromkeys(models))


def _operation(op: Operation, refs: dict[Any, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.response is not None:
        schema = refs[(op.response, "serialization")]
        content: dict[str, Any] = {"schema": schema}
        if op.media_type == EVENT_STREAM:
            # OpenAPI 3.1 cannot type the events of a stream: the body is text, and the schema
            # of each event's `data:` JSON is given beside it.
            content = {"schema": {"type": "string", "description": _EVENT_STREAM_DOC}}
            content["x-event-data"] = schema
        responses[str(op.status)] = {
            "description": op.summary,
            "content": {op.media_type: content},
        }
    problem = refs[(Problem, "serialization")]
    for status in error_statuses(op):
        response: dict[str, Any] = {
            "description": _ERRORS[status],
            "content": {PROBLEM_TYPE: {"schema": problem}},
        }
        if status in _HEADER_DOCS:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in _HEADER_DOCS[status].items()
            }
        responses[str(status)] = response
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "parameters": _parameters(op, schemas),
        "responses": responses,
    }
    if op.role is None:
        document["security"] = []
    else:
        document["security"] = [{"bearer": []}, {"apiKey": []}]
        document["x-required-role"] = op.role.value
        document["description"] = f"Needs the **{op.role.value}** role.\n\n{op.description}"
    if op.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return document


def openapi(api: Api) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared operation."""
    refs, definitions = models_json_schema(_models(api), ref_template=REF)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in api.operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Plantwire collector API",
            "version": __version__,
            "description": "Readings, agents and dead letters of a Plantwire plant. Every"
            " operation needs an API key (docs/api.md); errors are RFC 9457 problem documents.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer pwk_<prefix>_<secret>",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


@cache
def _contract_json() -> bytes:
    return json.dumps(openapi(API), indent=1).encode()


async def contract(request: web.Request) -> web.Response:
    """The OpenAPI document (open: it holds no data)."""
    return web.Response(body=_contract_json(), content_type="application/json")


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Plantwire collector API</title>
<link rel="icon" href="/api/docs/static/favicon-32x32.png">
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css">
</head>
<body>
<div id="api"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script src="/api/docs/start.js"></script>
</body>
</html>
"""
_DOCS_START = """window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#api",
  deepLinking: true,
  persistAuthorization: false,
});
"""
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)
"""The docs page's policy: scripts only from here; Swagger UI sets inline styles."""


async def docs_page(request: web.Request) -> web.Response:
    """A human reading of the contract, served from the installed Swagger UI package."""
    return web.Response(
        text=_DOCS_PAGE, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP}
    )


async def docs_start(request: web.Request) -> web.Response:
    """The docs page's start-up script (a file, so the policy needs no inline script)."""
    return web.Response(text=_DOCS_START, content_type="text/javascript")


async def docs_static(request: web.Request) -> web.FileResponse:
    """Swagger UI's own files."""
    name = request.match_info["name"]
    if name not in DOCS_FILES:
        raise web.HTTPNotFound(text=f"no docs file {name!r}")
    return web.FileResponse(DOCS_STATIC / name, headers={"Cache-Control": "public, max-age=3600"})


def add_contract_routes(app: web.Application) -> None:
    """Serve the contract and its docs page."""
    app.router.add_get("/api/openapi.json", contract)
    app.router.add_get("/api/docs", docs_page)
    app.router.add_get("/api/docs/start.js", docs_start)
    app.router.add_get("/api/docs/static/{name}", docs_static)
