"""The store-and-forward buffer: every reading is committed to SQLite before it is sent.

Readings get a sequence number on entry. A batch is a contiguous range of sequence numbers,
recorded durably before it is first sent, so a batch id always names the same readings,
also after a crash; the collector relies on that to store each batch exactly once.
"""

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from shared.readings import DataType, Quality, Reading

SCHEMA_VERSION = 1
_SQLITE_MAX_INT = 2**63 - 1
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Readings handed to the forwarder, not yet acknowledged."""

    batch_id: int
    last_seq: int
    seqs: Sequence[int]
    readings: Sequence[Reading]


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What the buffer holds right now."""

    readings: int
    batches_in_flight: int
    oldest_ts_us: int | None


class Buffer(Protocol):
    """Durable queue of readings between the pollers and the forwarder."""

    epoch: int

    async def add(self, readings: Sequence[Reading]) -> int:
        """Commit readings; return how many were dropped by the full-buffer policy."""
        ...

    async def begin(self, limit: int) -> PendingBatch | None:
        """Hand out the next batch to send (one not yet acknowledged comes first)."""
        ...

    async def end(self, batch: PendingBatch, *, accepted: bool) -> None:
        """Delete an accepted batch, or return it to be sent again."""
        ...

    async def acknowledge(self, batch_id: int) -> int:
        """Delete a batch the collector has committed; return how many readings it held."""
        ...

    async def stats(self) -> BufferStats:
        """Current depth and age."""
        ...

    def wait_for_data(self) -> asyncio.Event:
        """An event set whenever readings are added."""
        ...


class SqliteBuffer:
    """Buffer in one SQLite file (WAL, synchronous=FULL), used from one worker thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._conn: sqlite3.Connection | None = None
        self._types = {t.value: t for t in DataType}
        self._unsent_batches: list[tuple[int, int]] = []
        self._in_flight: set[int] = set()
        self._next_seq_to_batch = 1
        self._count = 0
        self._data = asyncio.Event()
        self.epoch = 0

    async def open(self) -> None:
        """Open or create the file and recover batches left unacknowledged by the last run."""
        await self._run(self._open)

    async def close(self) -> None:
        """Close the file."""
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if exists is None:
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            conn.execute(
                "CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " device TEXT NOT NULL, tag TEXT NOT NULL, type TEXT NOT NULL,"
                " ts INTEGER NOT NULL, value, quality INTEGER NOT NULL, server_ts INTEGER)"
            )
            conn.execute(
                "CREATE TABLE batches (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL)"
            )
            epoch = time.time_ns() // 1000
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", SCHEMA_VERSION), ("epoch", epoch)],
            )
        conn.execute("COMMIT")
        self._conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.epoch = int(meta["epoch"])
        self._unsent_batches = conn.execute(
            "SELECT first_seq, last_seq FROM batches ORDER BY first_seq"
        ).fetchall()
        if self._unsent_batches:
            self._next_seq_to_batch = self._unsent_batches[-1][1] + 1
        else:
            row = conn.execute("SELECT min(seq) FROM readings").fetchone()
            self._next_seq_to_batch = row[0] if row[0] is not None else 1
        self._count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("buffer is not open")
        return self._conn

    async def add(self, readings: Sequence[Reading]) -> int:
        """Commit readings in one transaction; nothing is dropped yet, so return 0."""
        if readings:
            await self._run(lambda: self._add(readings))
            self._data.set()
        return 0

    def _add(self, readings: Sequence[Reading]) -> None:
        conn = self._db()
        rows = [
            (
                r.device,
                r.tag,
                r.data_type.value,
                r.ts_us,
                _storable(r.value),
                int(r.quality),
                r.server_ts_us,
            )
            for r in readings
        ]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO readings (device, tag, type, ts, value, quality, server_ts)"
            " VALUES (?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute("COMMIT")
        self._count += len(rows)

    async def begin(self, limit: int) -> PendingBatch | None:
        """Hand out the oldest unsent batch, or cut a new one of at most `limit` readings."""
        return await self._run(lambda: self._begin(limit))

    def _begin(self, limit: int) -> PendingBatch | None:
        conn = self._db()
        for first, last in self._unsent_batches:
            if first not in self._in_flight:
                self._in_flight.add(first)
                return self._load(first, last)
        rows = conn.execute(
            "SELECT seq FROM readings WHERE seq >= ? ORDER BY seq LIMIT ?",
            (self._next_seq_to_batch, limit),
        ).fetchall()
        if not rows:
            return None
        first, last = rows[0][0], rows[-1][0]
        conn.execute("INSERT INTO batches (first_seq, last_seq) VALUES (?, ?)", (first, last))
        self._unsent_batches.append((first, last))
        self._next_seq_to_batch = last + 1
        self._in_flight.add(first)
        return self._load(first, last)

    def _load(self, first: int, last: int) -> PendingBatch:
        rows = (
            self._db()
            .execute(
                "SELECT seq, device, tag, type, ts, value, quality, server_ts FROM readings"
                " WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (first, last),
            )
            .fetchall()
        )
        types = self._types
        seqs = [row[0] for row in rows]
        readings = [
            Reading(
                row[1],
                row[2],
                types[row[3]],
                row[4],
                _restore(types[row[3]], row[5]),
                Quality(row[6]),
                row[7],
            )
            for row in rows
        ]
        return PendingBatch(first, last, seqs, readings)

    async def end(self, batch: PendingBatch, *, accepted: bool) -> None:
        """Delete an accepted batch's readings; otherwise let it be sent again."""
        await self._run(lambda: self._end(batch, accepted))

    def _end(self, batch: PendingBatch, accepted: bool) -> None:
        if accepted:
            self._acknowledge(batch.batch_id)
        else:
            self._in_flight.discard(batch.batch_id)

    async def acknowledge(self, batch_id: int) -> int:
        """Delete a committed batch (a no-op for one already deleted); return its size."""
        return await self._run(lambda: self._acknowledge(batch_id))

    def _acknowledge(self, batch_id: int) -> int:
        self._in_flight.discard(batch_id)
        last = next((last for first, last in self._unsent_batches if first == batch_id), None)
        if last is None:
            return 0
        conn = self._db()
        conn.execute("BEGIN")
        deleted: int = conn.execute(
            "DELETE FROM readings WHERE seq BETWEEN ? AND ?", (batch_id, last)
        ).rowcount
        conn.execute("DELETE FROM batches WHERE first_seq = ?", (batch_id,))
        conn.execute("COMMIT")
        self._count -= deleted
        self._unsent_batches.remove((batch_id, last))
        return deleted

    async def stats(self) -> BufferStats:
        """Depth, batches in flight and the oldest reading's timestamp."""
        return await self._run(self._stats)

    def _stats(self) -> BufferStats:
        row = self._db().execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
        return BufferStats(self._count, len(self._in_flight), row[0] if row else None)

    def wait_for_data(self) -> asyncio.Event:
        """Event set whenever readings are added; the forwarder clears it."""
        return self._data


def _storable(value: object) -> object:
    # SQLite turns NaN into NULL and cannot hold integers above 2**63-1: keep those as text
    # and restore them from the tag's type.
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if type(value) is int and value > _SQLITE_MAX_INT:
        return str(value)
    return value


def _restore(data_type: DataType, value: object) -> bool | int | float | str | None:
    if value is None:
        return None
    if data_type is DataType.BOOL:
        return bool(value)
    if data_type in (DataType.FLOAT32, DataType.FLOAT64):
        return float(value)  # type: ignore[arg-type]
    if data_type is not DataType.STRING and isinstance(value, str):
        return int(value)
    return value  # type: ignore[return-value]
