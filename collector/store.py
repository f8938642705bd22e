"""PostgreSQL storage: batches written with binary COPY, each batch stored exactly once."""

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.batches import Batch, typed_value
from collector.copy_rows import COPY_SQL, HEADER, TRAILER, encode_rows
from shared.readings import DataType, Quality, Value

_ID_CACHE_SIZE = 1024

TagKey = tuple[str, str, str]
"""(agent id, device, tag name)."""


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A row of the tag dictionary."""

    tag_id: int
    agent_id: str
    device: str
    name: str
    data_type: DataType


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as read back from the database."""

    ts: datetime
    value: Value | None
    quality: Quality
    server_ts: datetime | None


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What one grouped write did."""

    batches_stored: int
    batches_duplicate: int
    readings_stored: int


def join_value(data_type: DataType, number: float | None, text: str | None) -> Value | None:
    """Rebuild a typed value from the (value, value_text) columns."""
    if data_type is DataType.STRING:
        return text
    if number is None:
        return int(text) if text is not None else None
    return typed_value(data_type, number)


class ReadingStore:
    """Reads and writes readings through a connection pool."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[TupleRow]]) -> None:
        self._pool = pool
        self._tags: dict[TagKey, TagInfo] = {}
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
        """Store every batch not stored before, in one transaction."""
        unique: dict[tuple[str, int, int], Batch] = {}
        for batch in batches:
            unique.setdefault((batch.agent, batch.epoch, batch.batch_id), batch)
        async with self._pool.connection() as conn:
            ids = await self._tag_ids(conn, unique.values())
            async with conn.transaction():
                cursor = await conn.execute(
                    "INSERT INTO batches (agent_id, epoch, batch_id, last_seq, readings)"
                    " SELECT * FROM unnest(%s::text[], %s::int8[], %s::int8[], %s::int8[],"
                    " %s::int4[]) ON CONFLICT DO NOTHING RETURNING agent_id, epoch, batch_id",
                    [
                        [b.agent for b in unique.values()],
                        [b.epoch for b in unique.values()],
                        [b.batch_id for b in unique.values()],
                        [b.last_seq for b in unique.values()],
                        [len(b) for b in unique.values()],
                    ],
                )
                fresh = [unique[(r[0], r[1], r[2])] for r in await cursor.fetchall()]
                stored = sum(len(batch) for batch in fresh)
                if fresh:
                    rows = [HEADER]
                    for batch in fresh:
                        rows.append(encode_rows(batch, ids[(batch.agent, batch.tags.raw)]))
                    rows.append(TRAILER)
                    async with conn.cursor().copy(COPY_SQL) as copy:
                        await copy.write(b"".join(rows))
                await conn.execute(
                    "UPDATE agents SET last_seen = now() WHERE agent_id = ANY(%s)",
                    [sorted({b.agent for b in unique.values()})],
                )
        return WriteOutcome(len(fresh), len(batches) - len(fresh), stored)

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
                [self._tags[(batch.agent, r.device, r.tag)].tag_id for r in batch.tags.refs],
                np.int32,
            )
            if len(self._ids) > _ID_CACHE_SIZE:
                self._ids.popitem(last=False)
        return out

    async def _learn_tags(self, conn: AsyncConnection[TupleRow], batches: list[Batch]) -> None:
        """Add the batches' tags missing from the dictionary, or whose data type changed."""
        wanted: dict[TagKey, DataType] = {}
        for batch in batches:
            for ref in batch.tags.refs:
                wanted[(batch.agent, ref.device, ref.tag)] = ref.type
        missing = sorted(
            key
            for key, data_type in wanted.items()
            if key not in self._tags or self._tags[key].data_type is not data_type
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
                " ON CONFLICT (agent_id, device, name) DO UPDATE"
                " SET data_type = EXCLUDED.data_type"
                " RETURNING tag_id, agent_id, device, name, data_type",
                [
                    [key[0] for key in missing],
                    [key[1] for key in missing],
                    [key[2] for key in missing],
                    [wanted[key].value for key in missing],
                ],
            )
            for row in await cursor.fetchall():
                info = _tag_info(row)
                self._tags[(info.agent_id, info.device, info.name)] = info
        # A data type changed or a tag is new: a cached dictionary may now be stale.
        self._ids.clear()

    async def quarantine(self, topic: str, payload: bytes, error: str) -> None:
        """Keep a payload that could not be ingested, with the reason."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO dead_letters (topic, payload, error) VALUES (%s, %s, %s)",
                (topic, payload, error),
            )

    async def find_tags(self, device: str, name: str, agent: str | None) -> list[TagInfo]:
        """Tags with this device and name, from one agent or from all."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT tag_id, agent_id, device, name, data_type FROM tags"
                " WHERE device = %s AND name = %s AND (%s::text IS NULL OR agent_id = %s)"
                " ORDER BY agent_id",
                (device, name, agent, agent),
            )
            return [_tag_info(row) for row in await cursor.fetchall()]

    async def readings(
        self, tag: TagInfo, start: datetime, end: datetime, limit: int
    ) -> list[StoredReading]:
        """Readings of one tag with start <= ts < end, oldest first, at most `limit`."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT ts, value, value_text, quality, server_ts FROM readings"
                " WHERE tag_id = %s AND ts >= %s AND ts < %s ORDER BY ts, seq LIMIT %s",
                (tag.tag_id, start, end, limit),
            )
            rows = await cursor.fetchall()
        return [
            StoredReading(
                row[0], join_value(tag.data_type, row[1], row[2]), Quality(row[3]), row[4]
            )
            for row in rows
        ]


def _tag_info(row: TupleRow) -> TagInfo:
    return TagInfo(row[0], row[1], row[2], row[3], DataType(row[4]))
