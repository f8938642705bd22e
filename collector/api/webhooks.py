"""/api/v1/webhooks: endpoints that events are delivered to, and what each was sent (admin)."""

from datetime import UTC, datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, HttpUrl, StrictBool

from collector.api.auth import PRINCIPAL
from collector.api.operations import API, Body, Params, Role
from collector.api.pages import key_position, next_link, position
from collector.api.params import Timestamp
from collector.api.problems import InvalidParam, ProblemError
from collector.events import KIND_PATTERN
from collector.pagination import CURSOR_PATTERN
from collector.state import WEBHOOKS
from collector.webhooks import Attempt, Endpoint, Message

TAG = "webhooks"
MAX_LIMIT = 1000
ENDPOINT_ID = r"^wh_[0-9a-f]{24}$"

Kind = Annotated[str, Field(pattern=f"^{KIND_PATTERN}$", examples=["agent.status"])]
Kinds = Annotated[list[Kind], Field(max_length=50)]


class WebhookOut(BaseModel):
    """An endpoint as listed: never its secret."""

    id: str = Field(examples=["wh_3f9a1c07b2d4e6f8a0c2e4f6"])
    url: str
    kinds: list[str] = Field(description="The event kinds it gets (empty: all).")
    enabled: bool
    disabled_reason: str | None = Field(description="Why it is disabled (null: it is not).")
    previous_secret_until: Timestamp | None = Field(
        description="After a rotation, until when the previous secret signs too."
    )
    created_at: Timestamp
    created_by: str = Field(description="The key that made it: key <prefix>.")


class WebhookWithSecret(WebhookOut):
    """A new endpoint, or one with a new secret: the secret is shown this once."""

    secret: str = Field(description="The signing secret, whsec_...: store it now.")


class WebhookPage(BaseModel):
    """A page of endpoints, by id."""

    items: list[WebhookOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class MessageOut(BaseModel):
    """A message of the outbox: one event for one endpoint."""

    id: int
    webhook_id: str = Field(description="Its webhook-id header, the same on every attempt.")
    event_id: int
    kind: str
    state: str = Field(description="pending, delivered or failed (gave up).")
    attempts: int
    next_attempt_at: Timestamp = Field(description="While pending: when it is tried next.")
    created_at: Timestamp
    last_status: int | None = Field(description="The last attempt's HTTP status (null: none).")
    last_error: str | None = Field(description="The last attempt's error, if it got no answer.")


class MessagePage(BaseModel):
    """A page of messages, oldest first."""

    items: list[MessageOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class AttemptOut(BaseModel):
    """One delivery attempt."""

    id: int
    at: Timestamp
    status: int | None = Field(description="The HTTP status it got (null: no answer).")
    error: str | None = Field(description="Why it got no answer (timeout, connection).")
    duration_ms: int


class AttemptPage(BaseModel):
    """A page of a message's attempts, oldest first."""

    items: list[AttemptOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class NewWebhook(Body):
    """Where to deliver, and which events."""

    url: HttpUrl = Field(description="http or https URL the events are POSTed to.")
    kinds: Kinds = Field(default_factory=list, description="Event kinds (empty: all).")


class WebhookChange(Body):
    """What to change; what is absent stays as it is."""

    url: HttpUrl | None = None
    kinds: Kinds | None = None
    enabled: StrictBool | None = Field(
        default=None, description="true re-enables it (clearing why it was disabled)."
    )


class PageQuery(Params):
    """A page."""

    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class WebhookPath(Params):
    """Which endpoint."""

    id: str = Field(pattern=ENDPOINT_ID, description="The endpoint's id.")


class MessagesQuery(WebhookPath, PageQuery):
    """An endpoint's messages, a page."""


class AttemptsQuery(MessagesQuery):
    """A message's attempts, a page."""

    message_id: int = Field(ge=1, le=2**63 - 1, description="The message's id.")


def _out(endpoint: Endpoint) -> WebhookOut:
    grace = endpoint.previous_until
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        kinds=endpoint.kinds,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        previous_secret_until=grace if grace is not None and grace > datetime.now(UTC) else None,
        created_at=endpoint.created_at,
        created_by=endpoint.created_by,
    )


def _with_secret(endpoint: Endpoint) -> WebhookWithSecret:
    return WebhookWithSecret(**_out(endpoint).model_dump(), secret=endpoint.secret)


def _message(message: Message) -> MessageOut:
    return MessageOut(
        id=message.id,
        webhook_id=message.webhook_id,
        event_id=message.event_id,
        kind=message.kind,
        state=message.state,
        attempts=message.attempts,
        next_attempt_at=message.next_attempt_at,
        created_at=message.created_at,
        last_status=message.last_status,
        last_error=message.last_error,
    )


def _attempt(attempt: Attempt) -> AttemptOut:
    return AttemptOut(
        id=attempt.id,
        at=attempt.at,
        status=attempt.status,
        error=attempt.error,
        duration_ms=attempt.duration_ms,
    )


def _unknown(what: str, name: str, value: object) -> ProblemError:
    return ProblemError(
        404, f"Unknown {what}", f"no {what} {value}", [InvalidParam(name, f"no such {what}")]
    )


def _found(endpoint: Endpoint | None, endpoint_id: str) -> Endpoint:
    if endpoint is None:
        raise _unknown("webhook", "id", endpoint_id)
    return endpoint


def _actor(request: web.Request) -> str:
    return f"key {request[PRINCIPAL].prefix}"


@API.operation(
    "POST",
    "/api/v1/webhooks",
    summary="Add a webhook endpoint",
    tag=TAG,
    role=Role.ADMIN,
    body=NewWebhook,
    response=WebhookWithSecret,
    status=201,
)
async def create_webhook(request: web.Request, _: Params, body: NewWebhook) -> WebhookWithSecret:
    """It gets the events appended from now on; the answer is the only time the secret shows."""
    made = await request.app[WEBHOOKS].create(str(body.url), body.kinds, _actor(request))
    return _with_secret(made)


@API.operation(
    "GET",
    "/api/v1/webhooks",
    summary="Webhook endpoints, by id",
    tag=TAG,
    role=Role.ADMIN,
    params=PageQuery,
    response=WebhookPage,
)
async def list_webhooks(request: web.Request, query: PageQuery) -> WebhookPage:
    """Every endpoint, enabled or not; paginated; no secrets."""
    found = await request.app[WEBHOOKS].listing(key_position(query.cursor), query.limit + 1)
    last = found[query.limit - 1].id if len(found) > query.limit else None
    return WebhookPage(items=[_out(e) for e in found[: query.limit]], next=next_link(request, last))


@API.operation(
    "GET",
    "/api/v1/webhooks/{id}",
    summary="A webhook endpoint",
    tag=TAG,
    role=Role.ADMIN,
    params=WebhookPath,
    response=WebhookOut,
    errors=(404,),
)
async def get_webhook(request: web.Request, path: WebhookPath) -> WebhookOut:
    """One endpoint, without its secret."""
    return _out(_found(await request.app[WEBHOOKS].get(path.id), path.id))


@API.operation(
    "PATCH",
    "/api/v1/webhooks/{id}",
    summary="Change a webhook endpoint's URL, kinds, or whether it is enabled",
    tag=TAG,
    role=Role.ADMIN,
    params=WebhookPath,
    body=WebhookChange,
    response=WebhookOut,
    errors=(404,),
)
async def update_webhook(
    request: web.Request, path: WebhookPath, body: WebhookChange
) -> WebhookOut:
    """Re-enabling clears why it was disabled; its pending messages are then delivered, in order.
    A disabled endpoint gets no messages for the events appended meanwhile."""
    changed = await request.app[WEBHOOKS].update(
        path.id,
        None if body.url is None else str(body.url),
        body.kinds,
        body.enabled,
        _actor(request),
    )
    return _out(_found(changed, path.id))


@API.operation(
    "DELETE",
    "/api/v1/webhooks/{id}",
    summary="Delete a webhook endpoint and its messages",
    tag=TAG,
    role=Role.ADMIN,
    params=WebhookPath,
    response=WebhookOut,
    errors=(404,),
)
async def delete_webhook(request: web.Request, path: WebhookPath) -> WebhookOut:
    """Its undelivered messages go too; the answer is what it was."""
    return _out(_found(await request.app[WEBHOOKS].delete(path.id), path.id))


@API.operation(
    "POST",
    "/api/v1/webhooks/{id}/rotate-secret",
    summary="Give a webhook endpoint a new signing secret",
    tag=TAG,
    role=Role.ADMIN,
    params=WebhookPath,
    response=WebhookWithSecret,
    errors=(404,),
)
async def rotate_webhook_secret(request: web.Request, path: WebhookPath) -> WebhookWithSecret:
    """The new secret signs from now on; the old one signs alongside it for 24 hours (both
    signatures in webhook-signature), so receivers can switch without missing a message."""
    return _with_secret(_found(await request.app[WEBHOOKS].rotate(path.id), path.id))


@API.operation(
    "GET",
    "/api/v1/webhooks/{id}/messages",
    summary="What a webhook endpoint was sent: each message's state and last answer",
    tag=TAG,
    role=Role.ADMIN,
    params=MessagesQuery,
    response=MessagePage,
    errors=(404,),
)
async def list_webhook_messages(request: web.Request, query: MessagesQuery) -> MessagePage:
    """Oldest first; paginated."""
    store = request.app[WEBHOOKS]
    _found(await store.get(query.id), query.id)
    after = position(query.cursor)
    found = await store.messages(query.id, after[1] if after else 0, query.limit + 1)
    last = found[query.limit - 1] if len(found) > query.limit else None
    return MessagePage(
        items=[_message(m) for m in found[: query.limit]],
        next=next_link(request, None if last is None else (last.created_at, last.id)),
    )


@API.operation(
    "GET",
    "/api/v1/webhooks/{id}/messages/{message_id}/attempts",
    summary="Every delivery attempt of one message",
    tag=TAG,
    role=Role.ADMIN,
    params=AttemptsQuery,
    response=AttemptPage,
    errors=(404,),
)
async def list_webhook_attempts(request: web.Request, query: AttemptsQuery) -> AttemptPage:
    """Oldest first, with the status got or the error; paginated."""
    after = position(query.cursor)
    found = await request.app[WEBHOOKS].attempts(
        query.id, query.message_id, after[1] if after else 0, query.limit + 1
    )
    if found is None:
        raise _unknown("message", "message_id", query.message_id)
    last = found[query.limit - 1] if len(found) > query.limit else None
    return AttemptPage(
        items=[_attempt(a) for a in found[: query.limit]],
        next=next_link(request, None if last is None else (last.at, last.id)),
    )
