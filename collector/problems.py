"""RFC 9457 problem details: every API error is application/problem+json naming what is wrong."""

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class InvalidParam:
    """One request parameter that was rejected, and why."""

    name: str
    reason: str


class ProblemError(Exception):
    """Raised by a handler to answer with a problem document."""

    def __init__(
        self, status: int, title: str, detail: str, invalid: Sequence[InvalidParam] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid = invalid


def bad_param(name: str, reason: str) -> ProblemError:
    """A 400 problem naming the request parameter that was rejected."""
    return ProblemError(
        400, "Invalid request parameter", f"{name}: {reason}", [InvalidParam(name, reason)]
    )


def problem_response(
    status: int, title: str, detail: str, invalid: Sequence[InvalidParam] = (), instance: str = ""
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
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ProblemError, aiohttp's HTTP errors and unexpected errors into problem+json answers."""
    try:
        return await handler(request)
    except ProblemError as exc:
        return problem_response(exc.status, exc.title, exc.detail, exc.invalid, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(exc.status, exc.reason, exc.text or exc.reason, (), request.path)
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
