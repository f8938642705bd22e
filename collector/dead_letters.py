"""Dead letters: list, inspect and purge what could not be ingested; expire it with retention."""

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.batches_v3 import named_dictionary
from collector.pagination import MAX_NUMBER, encode_cursor

KINDS = ("batch", "state", "heartbeat", "unknown")
"""What a dead letter's topic said the message was."""

_COLUMNS = sql.SQL(
    "id, received_at, topic, agent_id, kind, reason, error, epoch, batch_id, readings, partial,"
    " replayed_at, replay_error, octet_length(payload)"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One row of dead_letters, without its payload."""

    id: int
    received_at: datetime
    topic: str
    agent_id: str | None
    kind: str
    reason: str
    error: str
    epoch: int | None
    batch_id: int | None
    readings: int
    partial: bool
    replayed_at: datetime | None
    replay_error: str | None
    payload_bytes: int


@dataclass(frozen=True, slots=True)
class RefusedReading:
    """One reading of a partly stored batch that was refused (a row of dead_readings)."""

    idx: int
    seq: int
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class NamedDictionary:
    """The tag dictionary a version 3 payload names without carrying it."""

    hash: str
    dictionary: bytes | None
    """As kept in tag_dictionaries; None if no collector has kept it."""


@dataclass(frozen=True, slots=True)
class DeadLetterDetail:
    """A dead letter with its raw payload and the readings it refused one by one."""

    letter: DeadLetter
    payload: bytes
    refused: list[RefusedReading]
    dictionary: NamedDictionary | None = None
    """Set when the payload only names its tag dictionary: what it takes to read it."""


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters a query covers; every field that is set must match."""

    agent: str | None = None
    reason: str | None = None
    kind: str | None = None
    since: datetime | None = None
    """received_at >= since"""
    until: datetime | None = None
    """received_at < until"""
    replayed: bool | None = None
    dead_letter_id: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """One page of a listing, newest first, and the cursor of the next page (None: last page)."""

    items: list[DeadLetter]
    next_cursor: str | None


def valid_id(raw: str) -> int | None:
    """A dead letter id from text, or None if the text cannot be one."""
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_NUMBER:
        return None
    return int(raw)


def _where(
    selection: DeadLetterFilter, after: tuple[datetime, int] | None = None
) -> tuple[sql.Composed, list[object]]:
    """The WHERE clause of a selection, with placeholders, and its parameters."""
    conditions: list[sql.Composable] = []
    params: list[object] = []
    for column, value in (
        ("agent_id", selection.agent),
        ("reason", selection.reason),
        ("kind", selection.kind),
        ("id", selection.dead_letter_id),
    ):
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if selection.since is not None:
        conditions.append(sql.SQL("received_at >= %s"))
        params.append(selection.since)
    if selection.until is not None:
        conditions.append(sql.SQL("received_at < %s"))
        params.append(selection.until)
    if selection.replayed is not None:
        test = "IS NOT NULL" if selection.replayed else "IS NULL"
        conditions.append(sql.SQL("replayed_at " + test))
    if after is not None:
        # A row comparison, so ties on received_at are broken by id and none is skipped.
        conditions.append(sql.SQL("(received_at, id) < (%s, %s)"))
        params.extend(after)
    if not conditions:
        return sql.Composed([]), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions), params


def _letter(row: TupleRow) -> DeadLetter:
    return DeadLetter(*row)


class DeadLetters:
    """Queries over the dead_letters table through a connection pool."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[TupleRow]]) -> None:
        self._pool = pool

    async def list(
        self, selection: DeadLetterFilter, limit: int, after: tuple[datetime, int] | None = None
    ) -> DeadLetterPage:
        """Up to `limit` dead letters newest first, after a decoded cursor's position if given."""
        where, params = _where(selection, after)
        query = (
            sql.SQL("SELECT {columns} FROM dead_letters").format(columns=_COLUMNS)
            + where
            + sql.SQL(" ORDER BY received_at DESC, id DESC LIMIT %s")
        )
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query, [*params, limit + 1])).fetchall()
        items = [_letter(row) for row in rows[:limit]]
        more = len(rows) > limit
        return DeadLetterPage(
            items, encode_cursor(items[-1].received_at, items[-1].id) if more else None
        )

    async def get(self, dead_letter_id: int) -> DeadLetterDetail | None:
        """One dead letter with its payload and refused readings, or None if there is none."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT {columns}, payload FROM dead_letters WHERE id = %s").format(
                    columns=_COLUMNS
                ),
                (dead_letter_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            cursor = await conn.execute(
                "SELECT idx, seq, reason, error FROM dead_readings"
                " WHERE dead_letter_id = %s ORDER BY idx",
                (dead_letter_id,),
            )
            refused = [RefusedReading(*reading) for reading in await cursor.fetchall()]
            payload = bytes(row[-1])
            named = named_dictionary(payload)
            dictionary = None
            if named is not None:
                cursor = await conn.execute(
                    "SELECT dictionary FROM tag_dictionaries WHERE agent_id = %s AND hash = %s",
                    named,
                )
                kept = await cursor.fetchone()
                dictionary = NamedDictionary(named[1], None if kept is None else bytes(kept[0]))
            # Inside the block: coverage.py on Python 3.11 misplaces the arc out of an `if` that
            # ends an `async with`, and would report the branch without a dictionary as never run.
            return DeadLetterDetail(_letter(row[:-1]), payload, refused, dictionary)

    async def count(self, selection: DeadLetterFilter) -> int:
        """How many dead letters match."""
        where, params = _where(selection)
        query = sql.SQL("SELECT count(*) FROM dead_letters") + where
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return int(row[0]) if row is not None else 0

    async def purge(self, selection: DeadLetterFilter) -> int:
        """Delete the matching dead letters (and their refused readings); return how many.

        The selection must name an id or an upper bound on received_at, so that a filter left
        empty by mistake cannot delete everything.
        """
        if selection.dead_letter_id is None and selection.until is None:
            raise ValueError("purge needs a dead letter id or a time to purge before")
        where, params = _where(selection)
        query = sql.SQL("DELETE FROM dead_letters") + where
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount


async def expire_dead_letters(conn: AsyncConnection[TupleRow], days: int) -> int:
    """Delete dead letters received more than `days` days ago; return how many."""
    # The database's clock, the one that stamped received_at.
    cursor = await conn.execute(
        "DELETE FROM dead_letters WHERE received_at < now() - make_interval(days => %s)",
        (days,),
    )
    return cursor.rowcount
