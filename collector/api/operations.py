"""Operations declared once: method, path, role, parameter and response models, errors.

The same declaration routes the request, checks its key's role, parses its parameters and
body with pydantic, serialises the answer and writes the OpenAPI contract, so the contract
cannot drift from the code.
"""

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from collector.api.problems import InvalidParam, ProblemError

Handler = Callable[..., Awaitable[BaseModel | web.StreamResponse]]
Guard = Callable[[web.Request, "Operation"], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024
"""Largest request body any operation takes."""


class Role(StrEnum):
    """What a key may do; each role may do everything the roles before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: "Role") -> bool:
        """Whether a key of this role may call an operation that needs `needed`."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


class Params(BaseModel):
    """Base of every operation's path and query parameters: unknown ones are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """An operation without parameters."""


class Body(BaseModel):
    """Base of every request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Operation:
    """One HTTP operation of the API, as routed, guarded and documented."""

    method: str
    path: str
    handler: Handler
    summary: str
    description: str
    tag: str
    role: Role | None
    params: type[Params]
    response: type[BaseModel] | None
    status: int
    body: type[Body] | None
    errors: tuple[int, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str = "application/json"
    """How a success is sent; text/event-stream: `response` is each event's data."""

    @property
    def operation_id(self) -> str:
        """The handler's name, unique within the API."""
        return self.handler.__name__


def _single_values(request: web.Request) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in request.query:
        given = request.query.getall(name)
        if len(given) > 1:
            raise ProblemError(
                400,
                "Invalid request parameter",
                f"{name}: given {len(given)} times; give it once",
                [InvalidParam(name, "given more than once")],
            )
        values[name] = given[0]
    for name, value in request.match_info.items():
        values[name] = value
    return values


def invalid_params(error: ValidationError) -> list[InvalidParam]:
    """Each rejected parameter or field, named as the client spelled it."""
    invalid = []
    for problem in error.errors(include_url=False):
        location = ".".join(str(part) for part in problem["loc"]) or "body"
        reason = problem["msg"]
        if problem["type"] == "extra_forbidden":
            reason = "not a parameter of this operation"
        invalid.append(InvalidParam(location, reason))
    return invalid


def _rejected(what: str, error: ValidationError) -> ProblemError:
    invalid = invalid_params(error)
    detail = "; ".join(f"{p.name}: {p.reason}" for p in invalid)
    return ProblemError(400, f"Invalid {what}", detail, invalid)


async def _read_body(request: web.Request, model: type[Body]) -> Body:
    raw = await request.read()  # aiohttp refuses more than client_max_size with 413
    if request.content_type != "application/json":
        raise ProblemError(
            415,
            "Unsupported Media Type",
            f"the body must be application/json, not {request.content_type!r}",
            [InvalidParam("Content-Type", "expected application/json")],
        )
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProblemError(
            400, "Invalid request body", f"not JSON: {exc}", [InvalidParam("body", "not JSON")]
        ) from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise _rejected("request body", exc) from None


class Api:
    """The registry of operations, and the aiohttp routes made from it."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        role: Role | None,
        params: type[Params] = NoParams,
        response: type[BaseModel] | None = None,
        status: int = 200,
        body: type[Body] | None = None,
        errors: Iterable[int] = (),
        headers: Mapping[str, str] | None = None,
        media_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as an operation; it gets (request, params[, body])."""

        def register(handler: Handler) -> Handler:
            doc = (handler.__doc__ or "").strip()
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    description=doc,
                    tag=tag,
                    role=role,
                    params=params,
                    response=response,
                    status=status,
                    body=body,
                    errors=tuple(errors),
                    headers=dict(headers or {}),
                    media_type=media_type,
                )
            )
            return handler

        return register

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """One aiohttp route per operation; `guard` authenticates, authorises and limits."""
        return [
            web.route(op.method, op.path, self._endpoint(op, guard), name=op.operation_id)
            for op in self.operations
        ]

    @staticmethod
    def _endpoint(op: Operation, guard: Guard) -> Callable[[web.Request], Awaitable[Any]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            await guard(request, op)
            try:
                params = op.params.model_validate(_single_values(request))
            except ValidationError as exc:
                raise _rejected("request parameter", exc) from None
            if op.body is not None:
                result = await op.handler(request, params, await _read_body(request, op.body))
            else:
                result = await op.handler(request, params)
            if isinstance(result, web.StreamResponse):
                return result
            return web.Response(
                status=op.status,
                body=result.model_dump_json(by_alias=True).encode(),
                content_type="application/json",
            )

        return endpoint


API = Api()
"""The collector's operations; each resource module adds its own on import."""
