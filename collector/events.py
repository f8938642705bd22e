"""Events of the live stream: appended inside their cause's transaction, read back by id."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from shared.invariants import required

CHANNEL = "plantwire_events"
"""The NOTIFY channel that wakes every collector's event hub."""
EVENTS_LOCK = 0x706C_6576  # "plev": one appending transaction at a time, held to commit
PAGE = 1000
"""Most events one read returns."""
KIND_PATTERN = r"[a-z][a-z0-9_.]{0,63}"
"""What an event's kind looks like, e.g. agent.status (for filters naming kinds)."""

EventRole = Literal["viewer", "operator", "admin"]


class Event(BaseModel):
    """Something that happened, as a producer appends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="What happened, e.g. agent.status.")
    subject: str = Field(description="What it happened to, e.g. the agent's id.")
    role: EventRole = Field(description="The least role whose keys may see it.")
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as kept: its id orders it among every collector's events."""

    id: int
    at: datetime
    kind: str
    role: EventRole
    subject: str
    body: dict[str, Any]


_COLUMNS = "id, at, kind, role, subject, body"


async def append_events(conn: AsyncConnection[TupleRow], events: Sequence[Event]) -> list[int]:
    """Add events in the caller's transaction (visible when it commits); return their ids."""
    if not events:
        return []
    # Ids are taken under a lock held until this transaction ends, so transactions commit in
    # the order of their ids, across collectors: once a reader sees id N, every smaller id that
    # will ever be visible already is, and `id > N` resumes without skipping one. (Without it
    # a transaction that took id 5 could commit after one that took 6 and was read.)
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))
    ids = []
    for event in events:
        cursor = await conn.execute(
            "INSERT INTO events (id, kind, role, subject, body)"
            " VALUES (nextval('events_id_seq'), %s, %s, %s, %s) RETURNING id",
            (event.kind, event.role, event.subject, Jsonb(event.body)),
        )
        ids.append(int(required(await cursor.fetchone(), "the event's id")[0]))
    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return ids


async def events_after(
    conn: AsyncConnection[TupleRow], after: int, upto: int | None = None
) -> list[StoredEvent]:
    """The first PAGE events with ids above `after` (and at most `upto`), by id."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE id > %s"  # noqa: S608 - a constant column list
        " AND (%s::int8 IS NULL OR id <= %s) ORDER BY id LIMIT %s",
        (after, upto, upto, PAGE),
    )
    return [StoredEvent(*row) for row in await cursor.fetchall()]


async def last_event_id(conn: AsyncConnection[TupleRow]) -> int:
    """The largest id visible (0: none yet); every smaller id that will be visible is."""
    cursor = await conn.execute("SELECT coalesce(max(id), 0) FROM events")
    return int(required(await cursor.fetchone(), "the largest id")[0])


async def oldest_event_id(conn: AsyncConnection[TupleRow]) -> int:
    """The oldest id retained; with none retained, the next id the sequence gives."""
    cursor = await conn.execute(
        "SELECT coalesce((SELECT min(id) FROM events),"
        " (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
        " FROM events_id_seq))"
    )
    return int(required(await cursor.fetchone(), "the oldest id")[0])


async def expire_events(conn: AsyncConnection[TupleRow], retention_s: float) -> int:
    """Delete the events older than `retention_s`; return how many went.

    Only a prefix of ids goes (every id below the oldest one kept), so what is retained has no
    holes a resuming client could fall into unnoticed.
    """
    cursor = await conn.execute(
        "DELETE FROM events WHERE id < coalesce((SELECT min(id) FROM events"
        " WHERE at >= now() - make_interval(secs => %s)), 9223372036854775807)",
        (retention_s,),
    )
    return cursor.rowcount
