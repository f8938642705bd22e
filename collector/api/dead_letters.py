"""/api/v1/dead-letters: list with filters and a cursor, show one with its payload."""

import base64
import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from collector.api.operations import API, Params, Role
from collector.api.pages import position
from collector.api.params import AgentName, QueryBool, QueryTime, Timestamp
from collector.api.problems import InvalidParam, ProblemError, bad_param
from collector.dead_letters import (
    DeadLetter,
    DeadLetterFilter,
    DeadLetters,
)
from collector.pagination import CURSOR_PATTERN
from collector.state import STORE

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ID = 2**63 - 1


class DeadLetterQuery(Params):
    """Which dead letters, and which page."""

    agent: AgentName | None = None
    reason: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[^\x00-\x1f]*$",
        description="Why it was refused, e.g. malformed or timestamp.",
    )
    kind: Literal["batch", "state", "heartbeat", "result", "unknown"] | None = Field(
        default=None, description="Which kind of topic it came on."
    )
    since: QueryTime | None = Field(default=None, alias="from", description="Received at or after.")
    until: QueryTime | None = Field(default=None, alias="to", description="Received before.")
    replayed: QueryBool | None = Field(default=None, description="Replayed already, or not.")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class DeadLetterPath(Params):
    """Which dead letter."""

    id: int = Field(ge=1, le=MAX_ID, description="Dead letter id.")


class DeadLetterOut(BaseModel):
    """A quarantined message, without its payload."""

    id: int
    received_at: Timestamp
    topic: str
    agent: str | None
    kind: str
    reason: str
    error: str
    epoch: int | None
    batch: int | None
    readings: int = Field(description="Readings refused (of a partly stored batch) or held.")
    partial: bool = Field(description="True when the batch's other readings were stored.")
    replayed_at: Timestamp | None
    replay_error: str | None
    payload_bytes: int


class DeadLetterPage(BaseModel):
    """One page of dead letters, newest first."""

    items: list[DeadLetterOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class RefusedReadingOut(BaseModel):
    """One reading of a batch that was refused alone."""

    idx: int
    seq: int
    reason: str
    error: str


class NamedDictionaryOut(BaseModel):
    """The tag dictionary a version 3 payload names, as kept."""

    hash: str
    dictionary: Any = Field(description="The dictionary (null if no collector kept it).")


class DeadLetterDetailOut(DeadLetterOut):
    """A dead letter with its raw payload and what it refused."""

    payload_base64: str
    refused_readings: list[RefusedReadingOut]
    tag_dictionary: NamedDictionaryOut | None = None


def _dead_letters(request: web.Request) -> DeadLetters:
    return DeadLetters(request.app[STORE].pool)


def _letter_fields(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "received_at": letter.received_at,
        "topic": letter.topic,
        "agent": letter.agent_id,
        "kind": letter.kind,
        "reason": letter.reason,
        "error": letter.error,
        "epoch": letter.epoch,
        "batch": letter.batch_id,
        "readings": letter.readings,
        "partial": letter.partial,
        "replayed_at": letter.replayed_at,
        "replay_error": letter.replay_error,
        "payload_bytes": letter.payload_bytes,
    }


@API.operation(
    "GET",
    "/api/v1/dead-letters",
    summary="Dead letters, newest first",
    tag="dead letters",
    role=Role.ADMIN,
    params=DeadLetterQuery,
    response=DeadLetterPage,
)
async def list_dead_letters(request: web.Request, query: DeadLetterQuery) -> DeadLetterPage:
    """Dead letters newest first, filtered by agent, reason, kind, time and replay; paginated."""
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise bad_param("from", "must be earlier than `to`")
    after = position(query.cursor)
    selection = DeadLetterFilter(
        agent=query.agent,
        reason=query.reason,
        kind=query.kind,
        since=query.since,
        until=query.until,
        replayed=query.replayed,
    )
    page = await _dead_letters(request).list(selection, query.limit, after)
    # The next page's URL keeps every filter and the limit, so following it needs nothing else.
    following = (
        str(request.rel_url.update_query(cursor=page.next_cursor)) if page.next_cursor else None
    )
    return DeadLetterPage(
        items=[DeadLetterOut(**_letter_fields(letter)) for letter in page.items], next=following
    )


@API.operation(
    "GET",
    "/api/v1/dead-letters/{id}",
    summary="One dead letter with its payload",
    tag="dead letters",
    role=Role.ADMIN,
    params=DeadLetterPath,
    response=DeadLetterDetailOut,
    errors=(404,),
)
async def get_dead_letter(request: web.Request, path: DeadLetterPath) -> DeadLetterDetailOut:
    """One dead letter with its raw payload (base64) and the readings it refused."""
    detail = await _dead_letters(request).get(path.id)
    if detail is None:
        raise ProblemError(
            404,
            "Unknown dead letter",
            f"no dead letter {path.id} (purged, expired, or never there)",
            [InvalidParam("id", "no such dead letter")],
        )
    named = None
    if detail.dictionary is not None:
        # A version 3 payload that names its tag dictionary cannot be read without it.
        kept = detail.dictionary.dictionary
        named = NamedDictionaryOut(
            hash=detail.dictionary.hash, dictionary=None if kept is None else json.loads(kept)
        )
    return DeadLetterDetailOut(
        **_letter_fields(detail.letter),
        payload_base64=base64.b64encode(detail.payload).decode("ascii"),
        refused_readings=[
            RefusedReadingOut(idx=r.idx, seq=r.seq, reason=r.reason, error=r.error)
            for r in detail.refused
        ],
        tag_dictionary=named,
    )
