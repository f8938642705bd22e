"""/api/v1/stream: the live events as Server-Sent Events, resumable by event id (docs/stream.md)."""

import asyncio
import json
import logging
from typing import Any

import psycopg
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from pydantic import BaseModel, Field

from collector.analytics.equipment import ID_PATTERN
from collector.api.auth import PRINCIPAL
from collector.api.contract import EVENT_STREAM
from collector.api.operations import API, Params, Role
from collector.api.params import Timestamp
from collector.api.problems import RETRY_AFTER_S, ProblemError, bad_param
from collector.event_hub import Accepts, Subscriber
from collector.events import KIND_PATTERN, StoredEvent, events_after, oldest_event_id
from collector.state import EVENT_HUB, METRICS, SETTINGS, STORE
from shared.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

TAG = "stream"
LAST_EVENT_ID = "Last-Event-ID"
MAX_ID = 2**63 - 1
READY_TIMEOUT_S = 5.0
"""Longest a client waits for the hub's first connection before a 503."""
WRITE_TIMEOUT_S = 30.0
"""A client that takes nothing for this long is let go."""
FRAMES_KEPT = 10_000
"""Events whose encoded frame is kept: each is encoded once, however many clients it goes to."""
_KIND = KIND_PATTERN
_AGENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID = ID_PATTERN.removeprefix("^").removesuffix("$")
_MACHINE = rf"{_ID}/{_ID}"


class StreamQuery(Params):
    """Which events, and where to resume."""

    kinds: str | None = Field(
        default=None,
        max_length=1000,
        pattern=rf"^{_KIND}(,{_KIND})*$",
        description="Only these kinds, comma-separated, e.g. agent.status (absent: all).",
    )
    agents: str | None = Field(
        default=None,
        max_length=2000,
        pattern=rf"^{_AGENT}(,{_AGENT})*$",
        description="Only events about these agents (`body.agent`), comma-separated.",
    )
    machines: str | None = Field(
        default=None,
        max_length=4000,
        pattern=rf"^{_MACHINE}(,{_MACHINE})*$",
        description="Only events about these machines (`body.site`/`body.machine`),"
        " comma-separated as site/machine.",
    )
    last_event_id: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="Resume after this event id on the first connect; a Last-Event-ID header"
        " (sent by EventSource on reconnects) takes precedence.",
    )


class StreamEventOut(BaseModel):
    """The `data:` of one event of the stream."""

    id: int = Field(description="Increases with every event; resume after it.")
    at: Timestamp = Field(description="When it was appended.")
    kind: str
    subject: str = Field(description="What it is about, e.g. the agent's id.")
    body: dict[str, Any]


def _resume_after(request: web.Request, query: StreamQuery) -> int | None:
    header = request.headers.get(LAST_EVENT_ID)
    if header is None:
        return query.last_event_id
    raw = header.strip()
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise bad_param(LAST_EVENT_ID, f"expected an event id (a whole number), got {header!r}")
    return int(raw)


def _filter(role: Role, query: StreamQuery) -> Accepts:
    kinds = frozenset(query.kinds.split(",")) if query.kinds is not None else None
    agents = frozenset(query.agents.split(",")) if query.agents is not None else None
    machines = frozenset(query.machines.split(",")) if query.machines is not None else None

    def accepts(event: StoredEvent) -> bool:
        body = event.body
        return (
            role.allows(Role(event.role))
            and (kinds is None or event.kind in kinds)
            and (agents is None or body.get("agent") in agents)
            and (machines is None or f"{body.get('site')}/{body.get('machine')}" in machines)
        )

    return accepts


def _unavailable(detail: str) -> ProblemError:
    return ProblemError(
        503, "Service Unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


@API.operation(
    "GET",
    "/api/v1/stream",
    summary="Live events as Server-Sent Events, resumable with Last-Event-ID",
    tag=TAG,
    role=Role.VIEWER,
    params=StreamQuery,
    response=StreamEventOut,
    media_type=EVENT_STREAM,
)
async def get_stream(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    """Events as they are appended, those the key's role may see; with Last-Event-ID (or
    `last_event_id`), first those after it. A `reset` event says some were already deleted
    (retention); a `dropped` event ends the stream of a client that fell too far behind."""
    after = _resume_after(request, query)
    settings = request.app[SETTINGS].stream
    hub = request.app[EVENT_HUB]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await hub.wait_ready()
    except TimeoutError:
        raise _unavailable("the event stream is not connected to the database yet") from None
    if hub.clients >= settings.max_clients:  # checked and subscribed with no wait between
        raise _unavailable(f"{settings.max_clients} stream clients already; try again later")
    accepts = _filter(request[PRINCIPAL].role, query)
    # Subscribed before reading the table: what the hub hands out from here on is queued,
    # what it handed out before is in the table, so nothing falls between.
    subscriber, position = hub.subscribe(accepts)
    try:
        return await _stream(request, subscriber, position, after)
    finally:
        hub.unsubscribe(subscriber)


async def _stream(
    request: web.Request, subscriber: Subscriber, position: int, after: int | None
) -> web.StreamResponse:
    resume = None
    if after is not None:
        async with request.app[STORE].pool.connection() as conn:
            resume = (after, await oldest_event_id(conn))
    # A write the client does not take within WRITE_TIMEOUT_S aborts its connection.
    response = EventSourceResponse(
        ping_interval=request.app[SETTINGS].stream.heartbeat, send_timeout=WRITE_TIMEOUT_S
    )
    await response.prepare(request)
    try:
        sent = position
        if resume is not None:
            sent = await _replay(request, response, subscriber, position, *resume)
        await _send_live(request, response, subscriber, sent)
    except (ConnectionResetError, TimeoutError):
        pass  # the client went away, or took nothing for long (its connection is aborted)
    except psycopg.OperationalError as exc:
        raise_if_cancelled(exc)
        # The headers are sent: end the stream; the client resumes where it was.
        log.warning("stream ended: database: %s", exc)
    finally:
        # Cancelled, not awaited as `async with response` would: a sleeping task ends at
        # once, and on Python 3.11 catching the CancelledError of an awaited task stops
        # coverage tracing this frame and its callers (their branches would go unmeasured).
        response.stop_streaming()
    return response


async def _replay(
    request: web.Request,
    response: EventSourceResponse,
    subscriber: Subscriber,
    position: int,
    after: int,
    oldest: int,
) -> int:
    """Send the kept events after `after`, up to `position`; return the last id handled."""
    if after < oldest - 1:
        # Events after `after` were deleted: say so before sending those kept.
        await response.send(json.dumps({"oldest": oldest}), event="reset")
    sent = after
    while True:
        async with request.app[STORE].pool.connection() as conn:
            page = await events_after(conn, sent, position)
        if not page:
            return sent
        await _send(request, response, [e for e in page if subscriber.accepts(e)])
        sent = page[-1].id


async def _send_live(
    request: web.Request, response: EventSourceResponse, subscriber: Subscriber, sent: int
) -> None:
    heartbeat = request.app[SETTINGS].stream.heartbeat
    while response.is_connected():
        try:
            event = await subscriber.next(heartbeat)
        except TimeoutError:
            continue  # nothing new: see whether the client is still there
        if event is None:
            await response.send(json.dumps({"reason": subscriber.dropped}), event="dropped")
            return
        # Everything queued goes in one write. Skipped when sent already: a client resuming at
        # another replica can be ahead of this one's hub by the events it has not read yet.
        queued = [event, *subscriber.take_queued()]  # in id order
        await _send(request, response, [e for e in queued if e.id > sent])
        sent = max(sent, queued[-1].id)


async def _send(
    request: web.Request, response: EventSourceResponse, events: list[StoredEvent]
) -> None:
    """Write events in one go; a client that takes nothing for WRITE_TIMEOUT_S is aborted."""
    encoded = request.app[EVENT_HUB].encoded
    data = b"".join(_frame(encoded, event) for event in events)
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.write(data)
    except TimeoutError:
        # A graceful close would wait for the stalled client forever. (No transport: the
        # connection is gone already.)
        getattr(request.transport, "abort", lambda: None)()
        raise
    request.app[METRICS].stream_events.inc(len(events))


def _frame(encoded: dict[int, bytes], event: StoredEvent) -> bytes:
    """The event as Server-Sent Events lines, from `encoded` or encoded and kept there."""
    frame = encoded.get(event.id)
    if frame is None:
        data = StreamEventOut(
            id=event.id, at=event.at, kind=event.kind, subject=event.subject, body=event.body
        ).model_dump_json()  # one line: JSON escapes line breaks
        frame = f"id: {event.id}\r\nevent: {event.kind}\r\ndata: {data}\r\n\r\n".encode()
        if len(encoded) >= FRAMES_KEPT:
            del encoded[next(iter(encoded))]  # the first kept (dicts keep order)
        encoded[event.id] = frame
    return frame
