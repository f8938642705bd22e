"""The HTTP API over dead letters: list with filters and a cursor, show one with its payload."""

import base64
import json
from datetime import datetime

from aiohttp import web

from collector.api import format_ts, parse_limit, parse_time
from collector.dead_letters import (
    KINDS,
    DeadLetter,
    DeadLetterFilter,
    DeadLetters,
    decode_cursor,
    valid_id,
)
from collector.problems import InvalidParam, ProblemError, bad_param
from collector.state import STORE

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _dead_letters(request: web.Request) -> DeadLetters:
    return DeadLetters(request.app[STORE].pool)


def _optional_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    # parse_time's default is never used here: the value is present.
    return None if raw is None else parse_time(name, raw, datetime.min)


def _selection(request: web.Request) -> DeadLetterFilter:
    query = request.query
    kind = query.get("kind")
    if kind is not None and kind not in KINDS:
        raise bad_param("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    replayed_raw = query.get("replayed")
    if replayed_raw not in (None, "true", "false"):
        raise bad_param("replayed", f"expected true or false, got {replayed_raw!r}")
    since = _optional_time(request, "from")
    until = _optional_time(request, "to")
    if since is not None and until is not None and since >= until:
        raise bad_param("from", "must be earlier than `to`")
    return DeadLetterFilter(
        agent=query.get("agent"),
        reason=query.get("reason"),
        kind=kind,
        since=since,
        until=until,
        replayed=None if replayed_raw is None else replayed_raw == "true",
    )


def _letter_json(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "received_at": format_ts(letter.received_at),
        "topic": letter.topic,
        "agent": letter.agent_id,
        "kind": letter.kind,
        "reason": letter.reason,
        "error": letter.error,
        "epoch": letter.epoch,
        "batch": letter.batch_id,
        "readings": letter.readings,
        "partial": letter.partial,
        "replayed_at": format_ts(letter.replayed_at) if letter.replayed_at else None,
        "replay_error": letter.replay_error,
        "payload_bytes": letter.payload_bytes,
    }


@routes.get("/api/v1/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    """Dead letters newest first, filtered by agent, reason, kind, time and replay; paginated."""
    selection = _selection(request)
    raw_limit = request.query.get("limit")
    limit = DEFAULT_LIMIT if raw_limit is None else parse_limit(raw_limit, MAX_LIMIT)
    cursor = request.query.get("cursor")
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except ValueError as exc:
        raise bad_param("cursor", str(exc)) from None
    page = await _dead_letters(request).list(selection, limit, after)
    # The next page's URL keeps every filter and the limit, so following it needs nothing else.
    following = (
        str(request.rel_url.update_query(cursor=page.next_cursor)) if page.next_cursor else None
    )
    return web.json_response(
        {"items": [_letter_json(letter) for letter in page.items], "next": following}
    )


@routes.get("/api/v1/dead-letters/{id}")
async def get_dead_letter(request: web.Request) -> web.Response:
    """One dead letter with its raw payload (base64) and the readings it refused."""
    raw = request.match_info["id"]
    dead_letter_id = valid_id(raw)
    if dead_letter_id is None:
        raise bad_param("id", f"expected a dead letter id (a positive whole number), got {raw!r}")
    detail = await _dead_letters(request).get(dead_letter_id)
    if detail is None:
        raise ProblemError(
            404,
            "Unknown dead letter",
            f"no dead letter {dead_letter_id} (purged, expired, or never there)",
            [InvalidParam("id", "no such dead letter")],
        )
    document = _letter_json(detail.letter)
    document["payload_base64"] = base64.b64encode(detail.payload).decode("ascii")
    document["refused_readings"] = [
        {"idx": r.idx, "seq": r.seq, "reason": r.reason, "error": r.error} for r in detail.refused
    ]
    if detail.dictionary is not None:
        # A version 3 payload that names its tag dictionary cannot be read without it.
        kept = detail.dictionary.dictionary
        document["tag_dictionary"] = {
            "hash": detail.dictionary.hash,
            "dictionary": None if kept is None else json.loads(kept),
        }
    return web.json_response(document)
