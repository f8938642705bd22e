"""PostgreSQL storage: batches written with binary COPY, each batch stored exactly once."""

import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import cast

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.analytics.held_readings import BatchKey, HeldReadings, numeric_columns
from collector.batches import Batch
from collector.copy_rows import (
    COPY_SQL,
    HEADER,
    TRAILER,
    binary_row,
    encode_rows,
    int4_array,
    timestamp_field,
)
from collector.partitions import PartitionWindow, ensure_partition
from collector.replica import ReadPools
from shared.blocks import typed_value
from shared.invariants import required
from shared.readings import DataType, Value

_ID_CACHE_SIZE = 1024

TagKey = tuple[str, str, str, DataType]
"""(agent id, device, tag name, data type): a tag whose type changes gets a new row."""
TagIds = dict[tuple[str, bytes], NDArray[np.int32]]
"""Tag ids by tag index, per (agent, dictionary bytes)."""
_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A row of the tag dictionary."""

    tag_id: int
    agent_id: str
    device: str
    name: str
    data_type: DataType


TagRow = tuple[int, str, str, str, str, datetime]
"""A tag version as listed: tag_id, agent_id, device, name, data_type, created_at."""
ReadingRow = tuple[datetime, float | None, str | None, int, datetime | None, int, int]
"""A stored reading as read: ts, value, value_text, quality, server_ts, tag_id, seq."""


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What one grouped write did."""

    batches_stored: int
    batches_duplicate: int
    readings_stored: int
    refused: dict[str, int] = field(default_factory=dict)
    """Readings refused from the batches stored now, by reason."""


def join_value(data_type: DataType, number: float | None, text: str | None) -> Value | None:
    """Rebuild a typed value from the (value, value_text) columns."""
    if data_type is DataType.STRING:
        return text
    if number is None:
        return int(text) if text is not None else None
    return typed_value(data_type, number)


TAG_CACHE_S = 10.0
"""How long the API trusts a tag's versions without asking the database again."""
TAG_CACHE_MAX = 10_000


class ReadingStore:
    """Reads and writes readings through a connection pool."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]],
        partitions: PartitionWindow | None = None,
        reads: ReadPools | None = None,
        derive: bool = True,
        held: HeldReadings | None = None,
    ) -> None:
        """With `held`, the readings written by `write` are held there to be summarised into
        rollups (collector/analytics/rollup_writer.py), else the deriver rolls them up."""
        self._pool = pool
        self._derive = derive
        self._held = held if derive else None
        self.reads = reads or ReadPools(pool)
        self._window = partitions or PartitionWindow(days_back=400, days_ahead=7)
        self._partitions: set[date] = set()
        self._tags: dict[TagKey, TagInfo] = {}
        self._found: dict[tuple[str, str, str | None], tuple[float, list[TagInfo]]] = {}
        # Tag ids per (agent, dictionary bytes): agents resend the same dictionary.
        self._ids: OrderedDict[tuple[str, bytes], NDArray[np.int32]] = OrderedDict()

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConnection[TupleRow]]:
        """The connection pool, for queries that are not about readings."""
        return self._pool

    async def ping(self) -> None:
        """Raise if the database does not answer."""
        async with self._pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
        """Store every batch not stored before, in one transaction.

        Readings a batch refused are kept as its dead letter in the same transaction, so they
        are recorded exactly once, like the batch.
        """
        unique: dict[tuple[str, int, int], Batch] = {}
        for batch in batches:
            unique.setdefault((batch.agent, batch.epoch, batch.batch_id), batch)
        held = self._held
        hold = {
            key
            for key, batch in unique.items()
            if held is not None and held.holds(*key, batch.last_seq)
        }
        try:
            async with self._pool.connection() as conn:
                ids = await self._prepare_in(conn, list(unique.values()))
                async with conn.transaction():
                    fresh = await self.write_in(conn, list(unique.values()), ids, hold)
        except BaseException:
            for key in hold:  # not written: later batches need not wait for these
                required(held, "held readings").forget(key)
            raise
        if held is not None:
            for batch in fresh:
                key = (batch.agent, batch.epoch, batch.batch_id)
                if key in hold:
                    held.add(key, numeric_columns(batch, ids[(batch.agent, batch.tags.raw)]))
                    hold.discard(key)
            for key in hold:  # stored before: nothing to hold
                held.forget(key)
        refused: Counter[str] = Counter()
        for batch in fresh:
            if batch.refused is not None:
                refused.update(batch.refused.reasons)
        stored = sum(len(batch) for batch in fresh)
        return WriteOutcome(len(fresh), len(batches) - len(fresh), stored, dict(refused))

    async def prepare(self, batches: list[Batch]) -> TagIds:
        """Learn the batches' tags and create their days' partitions, before a write."""
        async with self._pool.connection() as conn:
            return await self._prepare_in(conn, batches)

    async def _prepare_in(self, conn: AsyncConnection[TupleRow], batches: list[Batch]) -> TagIds:
        ids = await self._tag_ids(conn, batches)
        await self._place(conn, batches)
        return ids

    async def write_in(
        self,
        conn: AsyncConnection[TupleRow],
        batches: list[Batch],
        ids: TagIds,
        hold: Collection[BatchKey] = (),
    ) -> list[Batch]:
        """Within a transaction: record the batches in the ledger, copy the new ones' readings
        (claimed for their rollups where in `hold` and readings are held)."""
        cursor = await conn.execute(
            "INSERT INTO batches (agent_id, epoch, batch_id, last_seq, readings)"
            " SELECT * FROM unnest(%s::text[], %s::int8[], %s::int8[], %s::int8[],"
            " %s::int4[]) ON CONFLICT DO NOTHING RETURNING agent_id, epoch, batch_id",
            [
                [b.agent for b in batches],
                [b.epoch for b in batches],
                [b.batch_id for b in batches],
                [b.last_seq for b in batches],
                [len(b) for b in batches],
            ],
        )
        by_key = {(b.agent, b.epoch, b.batch_id): b for b in batches}
        fresh = [by_key[(r[0], r[1], r[2])] for r in await cursor.fetchall()]
        await self.copy(conn, fresh, ids, hold)
        for batch in fresh:
            if batch.refused is not None:
                await self._keep_refused(conn, batch)
        await conn.execute(
            "UPDATE agents SET last_seen = now() WHERE agent_id = ANY(%s)",
            [sorted({b.agent for b in batches})],
        )
        return fresh

    async def copy(
        self,
        conn: AsyncConnection[TupleRow],
        batches: Sequence[Batch],
        ids: TagIds,
        hold: Collection[BatchKey] = (),
    ) -> None:
        """COPY the batches' readings (inside the caller's transaction), and log what the alert
        evaluator must evaluate (collector/alerts/evaluator.py) and what the deriver must redo
        for them (collector/analytics/deriver.py); for those in `hold`,
        when readings are held, claim their rollups instead of leaving them to the deriver."""
        filled = [b for b in batches if len(b)]
        if not filled:
            return
        rows = [encode_rows(b, ids[(b.agent, b.tags.raw)]) for b in filled]
        async with conn.cursor().copy(COPY_SQL) as copy:
            await copy.write(b"".join([HEADER, *rows, TRAILER]))
        touched = [_touched(batch, ids) for batch in filled]
        async with conn.cursor().copy(
            "COPY alert_log (tag_ids, lo, hi) FROM STDIN (FORMAT BINARY)"
        ) as alerted:
            alerts = [_log_row(row) for row, _ in _log_rows(filled, touched, [False] * len(filled))]
            await alerted.write(b"".join([HEADER, *alerts, TRAILER]))
        if self._derive:
            claimed = [
                self._held is not None and (b.agent, b.epoch, b.batch_id) in hold for b in filled
            ]
            logged = [
                _log_row(row, b"\x00" if claim else b"\x01")
                for row, claim in _log_rows(filled, touched, claimed)
            ]
            async with conn.cursor().copy(
                "COPY derive_log (tag_ids, lo, hi, rollups) FROM STDIN (FORMAT BINARY)"
            ) as log:
                await log.write(b"".join([HEADER, *logged, TRAILER]))
            claims = [
                binary_row(
                    [
                        batch.agent.encode(),
                        struct.pack(">q", batch.epoch),
                        struct.pack(">q", batch.batch_id),
                        timestamp_field(row[1]),
                        timestamp_field(row[2]),
                    ]
                )
                for batch, row, claim in zip(filled, touched, claimed, strict=True)
                if claim
            ]
            if claims:
                async with conn.cursor().copy(
                    "COPY rollup_claims (agent_id, epoch, batch_id, lo, hi)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    await copy.write(b"".join([HEADER, *claims, TRAILER]))

    async def _keep_refused(self, conn: AsyncConnection[TupleRow], batch: Batch) -> None:
        """One dead letter for a stored batch's refused readings, one row per reading."""
        refused = required(batch.refused, "the batch's refused readings")
        counts = refused.counts()
        reason = max(counts, key=lambda r: counts[r])
        summary = f"{len(refused.idx)} of {len(batch) + len(refused.idx)} readings refused"
        cursor = await conn.execute(
            "INSERT INTO dead_letters (topic, payload, error, agent_id, kind, reason, epoch,"
            " batch_id, readings, partial) VALUES (%s, %s, %s, %s, 'batch', %s, %s, %s, %s, true)"
            " ON CONFLICT (agent_id, epoch, batch_id, md5(payload)) WHERE batch_id IS NOT NULL"
            " DO UPDATE"
            " SET partial = true, readings = EXCLUDED.readings, error = EXCLUDED.error,"
            " reason = EXCLUDED.reason RETURNING id",
            (
                batch.topic,
                batch.raw,
                f"{summary}: {refused.errors[0]}",
                batch.agent,
                reason,
                batch.epoch,
                batch.batch_id,
                len(refused.idx),
            ),
        )
        row = required(await cursor.fetchone(), "the dead letter's id")
        await conn.execute(
            "INSERT INTO dead_readings (dead_letter_id, idx, seq, reason, error)"
            " SELECT %s, * FROM unnest(%s::int4[], %s::int8[], %s::text[], %s::text[])"
            " ON CONFLICT DO NOTHING",
            (row[0], refused.idx, refused.seqs, refused.reasons, refused.errors),
        )

    async def _place(self, conn: AsyncConnection[TupleRow], batches: Iterable[Batch]) -> None:
        """Create the partitions of the days the batches' readings fall on, where allowed."""
        today = datetime.now(UTC).date()
        wanted: set[date] = set()
        for batch in batches:
            if not len(batch):
                continue
            first = int(batch.ts.min()) // _US_PER_DAY
            last = int(batch.ts.max()) // _US_PER_DAY
            for number in range(first, last + 1):
                day = date.fromordinal(_EPOCH_ORDINAL + number)
                if day not in self._partitions and self._window.covers(day, today):
                    wanted.add(day)
        for day in sorted(wanted):
            await ensure_partition(conn, day)
            self._partitions.add(day)

    async def _tag_ids(
        self, conn: AsyncConnection[TupleRow], batches: Iterable[Batch]
    ) -> dict[tuple[str, bytes], NDArray[np.int32]]:
        """Tag ids by tag index for each batch's dictionary, adding unknown tags first."""
        out: dict[tuple[str, bytes], NDArray[np.int32]] = {}
        unknown: list[Batch] = []
        for batch in batches:
            key = (batch.agent, batch.tags.raw)
            cached = self._ids.get(key)
            if cached is None:
                unknown.append(batch)
            else:
                self._ids.move_to_end(key)
                out[key] = cached
        if unknown:
            await self._learn_tags(conn, unknown)
        for batch in unknown:
            key = (batch.agent, batch.tags.raw)
            out[key] = self._ids[key] = np.array(
                [
                    self._tags[(batch.agent, r.device, r.tag, r.type)].tag_id
                    for r in batch.tags.refs
                ],
                np.int32,
            )
            if len(self._ids) > _ID_CACHE_SIZE:
                self._ids.popitem(last=False)
        return out

    async def _learn_tags(self, conn: AsyncConnection[TupleRow], batches: list[Batch]) -> None:
        """Add the batches' tags missing from the dictionary (a new data type is a new row)."""
        missing = sorted(
            {
                (batch.agent, ref.device, ref.tag, ref.type)
                for batch in batches
                for ref in batch.tags.refs
            }
            - self._tags.keys()
        )
        if not missing:
            return
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO agents (agent_id) SELECT DISTINCT unnest(%s::text[])"
                " ON CONFLICT DO NOTHING",
                [[key[0] for key in missing]],
            )
            cursor = await conn.execute(
                "INSERT INTO tags (agent_id, device, name, data_type)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
                " ON CONFLICT (agent_id, device, name, data_type) DO UPDATE"
                " SET data_type = EXCLUDED.data_type"  # a no-op that makes RETURNING see it
                " RETURNING tag_id, agent_id, device, name, data_type",
                [
                    [key[0] for key in missing],
                    [key[1] for key in missing],
                    [key[2] for key in missing],
                    [key[3].value for key in missing],
                ],
            )
            for row in await cursor.fetchall():
                info = _tag_info(row)
                self._tags[(info.agent_id, info.device, info.name, info.data_type)] = info
        # A tag may have a new version now: this replica's API sees it at once.
        self._found.clear()

    async def quarantine(self, letter: "DeadLetter") -> None:
        """Keep a message that could not be ingested, with the reason (once per batch)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO dead_letters (topic, payload, error, agent_id, kind, reason, epoch,"
                " batch_id, readings) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (agent_id, epoch, batch_id, md5(payload))"
                " WHERE batch_id IS NOT NULL DO NOTHING",
                (
                    letter.topic,
                    letter.payload,
                    letter.error,
                    letter.agent,
                    letter.kind,
                    letter.reason,
                    letter.epoch,
                    letter.batch_id,
                    letter.readings,
                ),
            )

    async def save_dictionary(self, agent: str, dict_hash: str, raw: bytes, tags: int) -> None:
        """Keep an agent's version 3 tag dictionary under its hash (kept once)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO tag_dictionaries (agent_id, hash, tags, dictionary)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (agent, dict_hash, tags, raw),
            )

    async def load_dictionary(self, agent: str, dict_hash: str) -> bytes | None:
        """An agent's tag dictionary by its hash, or None if no collector has kept it."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT dictionary FROM tag_dictionaries WHERE agent_id = %s AND hash = %s",
                (agent, dict_hash),
            )
            row = await cursor.fetchone()
        return None if row is None else bytes(row[0])

    async def find_tags(self, device: str, name: str, agent: str | None) -> list[TagInfo]:
        """Tags with this device and name, from one agent or from all (a row per data type).

        What was found is remembered for TAG_CACHE_S: a tag's versions change only when its
        type does. What was not found is asked again each time, so a new tag shows at once.
        """
        lookup = (device, name, agent)
        cached = self._found.get(lookup)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]

        async def find(conn: AsyncConnection[TupleRow]) -> list[TagInfo]:
            cursor = await conn.execute(
                "SELECT tag_id, agent_id, device, name, data_type FROM tags"
                " WHERE device = %s AND name = %s AND (%s::text IS NULL OR agent_id = %s)"
                " ORDER BY agent_id, tag_id",
                (device, name, agent, agent),
            )
            return [_tag_info(row) for row in await cursor.fetchall()]

        found = await self.reads.run(find)
        if found:
            if len(self._found) >= TAG_CACHE_MAX:
                self._found.clear()
            self._found[lookup] = (now + TAG_CACHE_S, found)
        return found

    async def list_tags(
        self, agent: str | None, device: str | None, after_id: int, limit: int
    ) -> list[TagRow]:
        """Tag versions by id after `after_id`, as rows (a page has many)."""

        async def select(conn: AsyncConnection[TupleRow]) -> list[TagRow]:
            cursor = await conn.execute(
                "SELECT tag_id, agent_id, device, name, data_type, created_at FROM tags"
                " WHERE tag_id > %s AND (%s::text IS NULL OR agent_id = %s)"
                " AND (%s::text IS NULL OR device = %s) ORDER BY tag_id LIMIT %s",
                (after_id, agent, agent, device, device, limit),
            )
            return cast(list[TagRow], await cursor.fetchall())

        return await self.reads.run(select)

    async def latest(self, tags: Sequence[TagInfo]) -> TagInfo:
        """The version of a tag that holds its most recent reading (the last one if none has)."""
        if len(tags) == 1:
            return tags[0]

        async def newest(conn: AsyncConnection[TupleRow]) -> TagInfo:
            found: tuple[datetime, TagInfo] | None = None
            for tag in tags:
                cursor = await conn.execute(
                    "SELECT max(ts) FROM readings WHERE tag_id = %s", (tag.tag_id,)
                )
                row = await cursor.fetchone()
                if row is not None and row[0] is not None and (found is None or row[0] >= found[0]):
                    found = (row[0], tag)
            return tags[-1] if found is None else found[1]

        return await self.reads.run(newest)

    async def readings(
        self,
        tags: Sequence[TagInfo],
        start: datetime,
        end: datetime,
        limit: int,
        after: tuple[datetime, int] | None = None,
    ) -> list[ReadingRow]:
        """Readings of one tag's versions with start <= ts < end, oldest first, at most `limit`.

        `after` is the (ts, seq) of the last reading of the previous page. The rows are as
        stored: `join_value` with the data type of the row's tag version rebuilds each value.
        """
        after_ts, after_seq = after if after is not None else (None, None)

        async def select(conn: AsyncConnection[TupleRow]) -> list[ReadingRow]:
            cursor = await conn.execute(
                "SELECT ts, value, value_text, quality, server_ts, tag_id, seq FROM readings"
                # ts >= the later of start and the cursor, so a deep page starts its index
                # range scan where the last one ended, not at `start`.
                " WHERE tag_id = ANY(%s) AND ts >= greatest(%s::timestamptz, %s) AND ts < %s"
                " AND (%s::timestamptz IS NULL OR (ts, seq) > (%s, %s))"
                " ORDER BY ts, seq LIMIT %s",
                (
                    [tag.tag_id for tag in tags],
                    start,
                    after_ts,
                    end,
                    after_ts,
                    after_ts,
                    after_seq,
                    limit,
                ),
                binary=True,
            )
            return cast(list[ReadingRow], await cursor.fetchall())

        return await self.reads.run(select)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be ingested as a whole."""

    topic: str
    payload: bytes
    error: str
    reason: str
    kind: str
    agent: str | None = None
    epoch: int | None = None
    batch_id: int | None = None
    readings: int = 0


Touched = tuple[NDArray[np.int32], int, int]
"""The tag versions a batch holds readings of, and its first and last reading's time (µs)."""
JOIN_US = 60_000_000
"""Log rows of batches this close in time (and of the same tag versions) are one row."""


def _touched(batch: Batch, ids: TagIds) -> Touched:
    """The tag versions a batch holds readings of, and the span of their times."""
    touched = np.unique(ids[(batch.agent, batch.tags.raw)][np.unique(batch.t)])
    return touched, int(batch.ts.min()), int(batch.ts.max())


def _log_rows(
    batches: Sequence[Batch], touched: Sequence[Touched], flags: Sequence[bool]
) -> list[tuple[Touched, bool]]:
    """The rows logging what the batches wrote, for the deriver and the alert evaluator: an
    agent's batches of the same tag versions (and flag) whose spans lie within JOIN_US of each
    other are one row, which says the same (every tag's earliest reading, its latest). Never
    across agents: one agent's backlog must not widen what another's live batches make the
    deriver redo, or make the alert evaluator take for late."""
    runs: dict[tuple[str, bool], list[Touched]] = {}
    for batch, row, flag in zip(batches, touched, flags, strict=True):
        runs.setdefault((batch.agent, flag), []).append(row)
    out: list[tuple[Touched, bool]] = []
    for (_, flag), rows in runs.items():
        rows.sort(key=lambda row: row[1])
        tags, lo, hi = rows[0]
        for later in rows[1:]:
            if later[1] <= hi + JOIN_US and np.array_equal(later[0], tags):
                hi = max(hi, later[2])
                continue
            out.append(((tags, lo, hi), flag))
            tags, lo, hi = later
        out.append(((tags, lo, hi), flag))
    return out


def _log_row(row: Touched, *more: bytes) -> bytes:
    """A log row's binary COPY fields: its tag versions, span, and `more`."""
    tags, lo, hi = row
    return binary_row([int4_array(tags), timestamp_field(lo), timestamp_field(hi), *more])


def _tag_info(row: TupleRow) -> TagInfo:
    return TagInfo(row[0], row[1], row[2], row[3], DataType(row[4]))
