"""The store-and-forward buffer: every reading is committed to SQLite before it is sent.

Readings get a sequence number on entry. A batch is a contiguous range of sequence numbers,
recorded durably before it is first sent, so a batch id always names the same readings,
also after a crash; the collector relies on that to store each batch exactly once.

A full disk, an I/O error or a read-only file is a state of the buffer, not a crash: the
buffer reports itself failing (logged once each way), an add holds on to its readings and
retries the write with backoff (so a device's polling pauses until its readings can be
written), and the forwarder retries; nothing committed before is touched.
"""

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from shared.backoff import Backoff
from shared.errors import PlantwireError
from shared.readings import DataType, Quality, Reading

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
_TABLES = {"meta", "readings", "tags", "batches"}


class BufferLayoutError(PlantwireError):
    """The buffer file exists but was written with a layout this version cannot read."""


class BufferUnavailable(PlantwireError):
    """The buffer file cannot be written or read now (disk full, I/O error, read-only)."""


@dataclass(frozen=True, slots=True)
class BufferCondition:
    """Whether the buffer can write, independent of any device or the broker."""

    state: Literal["ok", "failing"]
    last_error: str | None
    errors: int


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
    """What the buffer holds right now, and what its full-buffer policy has dropped so far."""

    readings: int
    batches_in_flight: int
    oldest_ts_us: int | None
    dropped_oldest: int = 0
    dropped_newest: int = 0
    used_bytes: int = 0


WhenFull = Literal["drop_oldest", "drop_newest", "block"]


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

    def condition(self) -> BufferCondition:
        """Whether writes succeed right now, and the last error if not."""
        ...


class SqliteBuffer:
    """Buffer in one SQLite file (WAL, synchronous=FULL), used from one worker thread.

    Bounded by `max_readings` and/or `max_bytes` (pages in use). When an add would pass a
    bound: `drop_oldest` deletes the oldest readings not yet cut into a batch, `drop_newest`
    keeps only the incoming readings that fit, and `block` makes the add wait for room. Every
    drop is counted, in the file too, so the counts survive a restart.

    When SQLite cannot write (disk full, I/O error, read-only file), an add keeps its readings
    and tries again after `retry_initial` seconds, doubling up to `retry_cap`.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_readings: int | None = None,
        max_bytes: int | None = None,
        when_full: WhenFull = "drop_oldest",
        retry_initial: float = 0.5,
        retry_cap: float = 5.0,
    ) -> None:
        self._path = path
        self._retry = (retry_initial, retry_cap)
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._last_used_bytes = 0
        self.errors = 0
        self._max_readings = max_readings
        self._max_bytes = max_bytes
        self._when_full = when_full
        self._room = asyncio.Event()
        self._dropped = {"dropped_oldest": 0, "dropped_newest": 0}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._conn: sqlite3.Connection | None = None
        self._types = {t.value: t for t in DataType}
        self._unsent_batches: list[tuple[int, int]] = []
        self._in_flight: set[int] = set()
        self._next_seq_to_batch = 1
        self._count = 0
        self._data = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tag_ids: dict[tuple[str, str, str], int] = {}
        self._tags: dict[int, tuple[str, str, DataType]] = {}
        self.epoch = 0

    async def open(self) -> None:
        """Open or create the file and recover batches left unacknowledged by the last run."""
        await self._run(self._open)

    async def close(self) -> None:
        """Close the file."""
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[[], _T]) -> _T:
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._executor, function)

    def _loop_call(self, callback: Callable[[], object]) -> None:
        """Run a callback on the event loop, from the buffer's worker thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(callback)

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
                " tag_id INTEGER NOT NULL, ts INTEGER NOT NULL, value,"
                " quality INTEGER NOT NULL, server_ts INTEGER)"
            )
            # A tag dictionary keeps each reading row to numbers (and the value).
            conn.execute(
                "CREATE TABLE tags (id INTEGER PRIMARY KEY, device TEXT NOT NULL,"
                " tag TEXT NOT NULL, type TEXT NOT NULL, UNIQUE (device, tag, type))"
            )
            conn.execute(
                "CREATE TABLE batches (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL)"
            )
            epoch = time.time_ns() // 1000
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", SCHEMA_VERSION),
                    ("epoch", epoch),
                    ("dropped_oldest", 0),
                    ("dropped_newest", 0),
                ],
            )
        conn.execute("COMMIT")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        missing = sorted(_TABLES - tables)
        if missing:
            conn.close()
            raise BufferLayoutError(
                f"buffer file {self._path} lacks table(s) {', '.join(missing)}: another"
                " Plantwire version wrote it. Drain it with that version, or move it away to"
                " start a new buffer (a new epoch)."
            )
        self._conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.epoch = int(meta["epoch"])
        self._dropped = {key: int(meta.get(key, 0)) for key in self._dropped}
        self._unsent_batches = conn.execute(
            "SELECT first_seq, last_seq FROM batches ORDER BY first_seq"
        ).fetchall()
        if self._unsent_batches:
            self._next_seq_to_batch = self._unsent_batches[-1][1] + 1
        else:
            row = conn.execute("SELECT min(seq) FROM readings").fetchone()
            self._next_seq_to_batch = row[0] if row[0] is not None else 1
        self._count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        for tag_id, device, tag, type_name in conn.execute(
            "SELECT id, device, tag, type FROM tags"
        ):
            self._tag_ids[(device, tag, type_name)] = tag_id
            self._tags[tag_id] = (device, tag, self._types[type_name])

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("buffer is not open")
        return self._conn

    async def add(self, readings: Sequence[Reading]) -> int:
        """Commit readings in one transaction; return how many the full-buffer policy dropped.

        While the file cannot be written this keeps the readings and retries with backoff. A
        cancel while waiting (for room, or for the disk) gives the readings up, with a log
        line; a write already begun is finished first, so they are then committed.
        """
        if not readings:
            return 0
        committed = False

        def write() -> int:
            nonlocal committed
            dropped = self._add(readings)
            committed = True
            return dropped

        backoff = Backoff(*self._retry)
        try:
            while True:
                if self._when_full == "block":
                    await self._wait_for_room(len(readings))
                try:
                    dropped = await self._submit(write)
                except BufferUnavailable:
                    await asyncio.sleep(backoff.next_delay())
                    continue
                self._data.set()
                return dropped
        except asyncio.CancelledError:
            if not committed:
                log.warning(
                    "%d readings not buffered: stopped while the buffer had no room or could"
                    " not write",
                    len(readings),
                )
            raise

    async def _wait_for_room(self, incoming: int) -> None:
        backoff = Backoff(*self._retry)
        while True:
            try:
                if await self._submit(lambda: self._room_for(incoming)):
                    return
            except BufferUnavailable:
                await asyncio.sleep(backoff.next_delay())
                continue
            self._room.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can drop a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._room.wait()

    async def _submit(self, function: Callable[[], _T]) -> _T:
        """Run `function` on the worker; if cancelled meanwhile, let it finish, then raise."""
        self._loop = asyncio.get_running_loop()
        future = self._loop.run_in_executor(self._executor, self._guarded(function))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # A statement under way cannot be withdrawn: wait for it so that whoever stops
            # us knows where the data is (committed, or not) before closing the file.
            await asyncio.wait({future})
            raise

    def _guarded(self, function: Callable[[], _T]) -> Callable[[], _T]:
        """`function` with SQLite's I/O failures turned into the buffer's failing state."""

        def run() -> _T:
            try:
                result = function()
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
                raise  # a bug, not the disk
            except sqlite3.DatabaseError as exc:
                self._failed(exc)
                raise BufferUnavailable(f"buffer {self._path}: {exc}") from exc
            return result

        return run

    def _failed(self, exc: Exception) -> None:
        """Called on the worker thread when SQLite refuses a read or write."""
        self.errors += 1
        self._last_error = f"{exc.__class__.__name__}: {exc}"
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error(
                "buffer %s cannot be written: %s; holding readings and retrying",
                self._path,
                exc,
            )

    def _recovered(self) -> None:
        """Called on the worker thread after readings were committed.

        Only adds count: a read, or a small write that fits in a free page, proves nothing,
        and recovering on those would log a flapping state.
        """
        if self._failing_since is not None:
            outage = time.monotonic() - self._failing_since
            self._failing_since = None
            log.info("buffer %s writable again after %.1fs", self._path, outage)

    def condition(self) -> BufferCondition:
        """Whether the last access to the file succeeded; the last error if it did not."""
        failing = self._failing_since is not None
        return BufferCondition(
            "failing" if failing else "ok",
            self._last_error if failing else None,
            self.errors,
        )

    def _used_bytes(self) -> int:
        conn = self._db()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _excess(self, incoming: int) -> int:
        """How many readings must go for `incoming` more to fit (0 if they fit)."""
        excess = 0
        if self._max_readings is not None:
            excess = self._count + incoming - self._max_readings
        if self._max_bytes is not None:
            used = self._used_bytes()
            per_reading = used / self._count if self._count else 100.0
            projected = used + incoming * per_reading
            if projected > self._max_bytes:
                excess = max(excess, int((projected - self._max_bytes) / per_reading) + 1)
        return max(0, excess)

    def _room_for(self, incoming: int) -> bool:
        return self._excess(incoming) == 0 or self._count == 0

    def _add(self, readings: Sequence[Reading]) -> int:
        conn = self._db()
        excess = self._excess(len(readings)) if self._when_full != "block" else 0
        dropped_oldest = dropped_newest = 0
        if excess and self._when_full == "drop_oldest":
            dropped_oldest = min(excess, self._count - self._batched_count())
            excess -= dropped_oldest
        if excess:  # drop_newest, or nothing old enough left to drop
            dropped_newest = min(excess, len(readings))
            readings = readings[: len(readings) - dropped_newest]
        tag_ids = self._tag_ids
        new_tags = []
        for r in readings:
            key = (r.device, r.tag, r.data_type.value)
            if key not in tag_ids:
                tag_ids[key] = len(tag_ids) + 1
                self._tags[tag_ids[key]] = (r.device, r.tag, r.data_type)
                new_tags.append((tag_ids[key], *key))
        rows = [
            (
                tag_ids[(r.device, r.tag, r.data_type.value)],
                r.ts_us,
                _storable(r.value),
                int(r.quality),
                r.server_ts_us,
            )
            for r in readings
        ]
        conn.execute("BEGIN")
        try:
            if dropped_oldest:
                conn.execute(
                    "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings WHERE seq >= ?"
                    " ORDER BY seq LIMIT ?)",
                    (self._next_seq_to_batch, dropped_oldest),
                )
            if new_tags:
                conn.executemany(
                    "INSERT INTO tags (id, device, tag, type) VALUES (?,?,?,?)", new_tags
                )
            conn.executemany(
                "INSERT INTO readings (tag_id, ts, value, quality, server_ts) VALUES (?,?,?,?,?)",
                rows,
            )
            if dropped_oldest or dropped_newest:
                conn.executemany(
                    "UPDATE meta SET value = value + ? WHERE key = ?",
                    [(dropped_oldest, "dropped_oldest"), (dropped_newest, "dropped_newest")],
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for tag_id, device, tag, type_name in new_tags:  # the rollback took these away
                del tag_ids[(device, tag, type_name)]
                del self._tags[tag_id]
            raise
        self._recovered()
        self._count += len(rows) - dropped_oldest
        self._dropped["dropped_oldest"] += dropped_oldest
        self._dropped["dropped_newest"] += dropped_newest
        if dropped_oldest or dropped_newest:
            log.warning(
                "buffer full: dropped %d oldest and %d newest readings (%s)",
                dropped_oldest,
                dropped_newest,
                self._when_full,
            )
        return dropped_oldest + dropped_newest

    def _batched_count(self) -> int:
        """Readings already cut into batches (these are never dropped)."""
        if not self._unsent_batches:
            return 0
        row = (
            self._db()
            .execute("SELECT count(*) FROM readings WHERE seq < ?", (self._next_seq_to_batch,))
            .fetchone()
        )
        return int(row[0])

    async def begin(self, limit: int) -> PendingBatch | None:
        """Hand out the oldest unsent batch, or cut a new one of at most `limit` readings."""
        return await self._submit(lambda: self._begin(limit))

    def _begin(self, limit: int) -> PendingBatch | None:
        conn = self._db()
        for first, last in self._unsent_batches:
            if first not in self._in_flight:
                batch = self._load(first, last)
                self._in_flight.add(first)
                return batch
        rows = conn.execute(
            "SELECT seq FROM readings WHERE seq >= ? ORDER BY seq LIMIT ?",
            (self._next_seq_to_batch, limit),
        ).fetchall()
        if not rows:
            return None
        first, last = rows[0][0], rows[-1][0]
        batch = self._load(first, last)
        conn.execute("INSERT INTO batches (first_seq, last_seq) VALUES (?, ?)", (first, last))
        self._unsent_batches.append((first, last))
        self._next_seq_to_batch = last + 1
        self._in_flight.add(first)
        return batch

    def _load(self, first: int, last: int) -> PendingBatch:
        rows = (
            self._db()
            .execute(
                "SELECT seq, tag_id, ts, value, quality, server_ts FROM readings"
                " WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (first, last),
            )
            .fetchall()
        )
        tags = self._tags
        seqs = [row[0] for row in rows]
        readings = []
        for _, tag_id, ts, value, quality, server_ts in rows:
            device, tag, data_type = tags[tag_id]
            readings.append(
                Reading(
                    device,
                    tag,
                    data_type,
                    ts,
                    _restore(data_type, value),
                    Quality(quality),
                    server_ts,
                )
            )
        return PendingBatch(first, last, seqs, readings)

    async def end(self, batch: PendingBatch, *, accepted: bool) -> None:
        """Delete an accepted batch's readings; otherwise let it be sent again."""
        await self._submit(lambda: self._end(batch, accepted))

    def _end(self, batch: PendingBatch, accepted: bool) -> None:
        if accepted:
            self._acknowledge(batch.batch_id)
        else:
            self._in_flight.discard(batch.batch_id)

    async def acknowledge(self, batch_id: int) -> int:
        """Delete a committed batch (a no-op for one already deleted); return its size."""
        return await self._submit(lambda: self._acknowledge(batch_id))

    def _acknowledge(self, batch_id: int) -> int:
        self._in_flight.discard(batch_id)
        last = next((last for first, last in self._unsent_batches if first == batch_id), None)
        if last is None:
            return 0
        conn = self._db()
        conn.execute("BEGIN")
        try:
            deleted: int = conn.execute(
                "DELETE FROM readings WHERE seq BETWEEN ? AND ?", (batch_id, last)
            ).rowcount
            conn.execute("DELETE FROM batches WHERE first_seq = ?", (batch_id,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._count -= deleted
        self._unsent_batches.remove((batch_id, last))
        self._loop_call(self._room.set)
        return deleted

    async def stats(self) -> BufferStats:
        """Depth, batches in flight and the oldest reading's timestamp."""
        return await self._run(self._stats)

    def _stats(self) -> BufferStats:
        oldest = None
        try:
            row = self._db().execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
            oldest = row[0] if row else None
            self._last_used_bytes = self._used_bytes()
        except sqlite3.DatabaseError as exc:
            # Health reports must not fail with the file: report what is known in memory.
            self._failed(exc)
        return BufferStats(
            self._count,
            len(self._in_flight),
            oldest,
            used_bytes=self._last_used_bytes,
            **self._dropped,
        )

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
