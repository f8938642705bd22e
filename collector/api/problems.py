"""RFC 9457 problem details: every API error is application/problem+json naming what is wrong."""

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import psycopg
from aiohttp import web
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field

from shared.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
RETRY_AFTER_S = 5
"""What a 503 tells the client to wait before trying again."""


class InvalidParamOut(BaseModel):
    """A rejected parameter in a problem document."""

    name: str = Field(description="The parameter, header or body field, as the client sent it.")
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem document: every error of the API has this shape."""

    type: str = Field(default="about:blank")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request's path.")
    invalid_params: list[InvalidParamOut] | None = Field(
        default=None, description="Each rejected parameter, when the request had bad ones."
    )


@dataclass(frozen=True, slots=True)
class InvalidParam:
    """One request parameter that was rejected, and why."""

    name: str
    reason: str


class ProblemError(Exception):
    """Raised by a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        invalid: Sequence[InvalidParam] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid = invalid
        self.headers = dict(headers or {})


def bad_param(name: str, reason: str) -> ProblemError:
    """A 400 problem naming the request parameter that was rejected."""
    return ProblemError(
        400, "Invalid request parameter", f"{name}: {reason}", [InvalidParam(name, reason)]
    )


def problem_response(
    status: int,
    title: str,
    detail: str,
    invalid: Sequence[InvalidParam] = (),
    instance: str = "",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A problem+json response."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if invalid:
        body["invalid_params"] = [{"name": p.name, "reason": p.reason} for p in invalid]
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_TYPE, headers=headers
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ProblemError, aiohttp's HTTP errors and unexpected errors into problem+json answers."""
    try:
        return await handler(request)
    except ProblemError as exc:
        return problem_response(
            exc.status, exc.title, exc.detail, exc.invalid, request.path, exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {name: exc.headers[name] for name in ("Allow",) if name in exc.headers}
        return problem_response(
            exc.status, exc.reason, exc.text or exc.reason, (), request.path, kept
        )
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise_if_cancelled(exc)  # a cancelled query surfaces as QueryCanceled
        log.warning("answering %s %s with 503: database: %s", request.method, request.path, exc)
        return problem_response(
            503,
            "Service Unavailable",
            "The database cannot be reached; try again shortly.",
            (),
            request.path,
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    except Exception:
        # The answer names no cause (it could leak internals such as a database URL); the
        # id ties it to the one log record that has the traceback.
        error_id = uuid.uuid4().hex[:12]
        log.exception(
            "unexpected error answering %s %s (error id %s)", request.method, request.path, error_id
        )
        return problem_response(
            500,
            "Internal Server Error",
            f"The collector failed to answer this request; its log names the cause under error"
            f" id {error_id}.",
            (),
            request.path,
        )
