"""The store-and-forward buffer: every reading is committed to SQLite before it is sent.

Readings get a sequence number on entry and are kept as poll blocks (`shared.blocks`): one
row per poll (or per run of readings sharing a timestamp), its columns encoded once. A batch
is a run of whole blocks, recorded durably before it is first sent, so a batch id always
names the same readings, also after a crash; the collector relies on that to store each
batch exactly once.

Adds are committed in groups: whatever the pollers handed over while the last commit was
being written goes into the next transaction, so the writer's cost (and its fsync) is paid
per commit, not per poll, and the forwarder's reads wait behind at most one commit.

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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Literal, Protocol, TypeVar, cast

from agent.buffer_layout import LAYOUT_VERSION, create_layout, upgrade_layout
from shared.backoff import Backoff
from shared.blocks import Block, BlockFlags, decode_block, encode_block, timestamp_runs
from shared.errors import PlantwireError
from shared.invariants import required
from shared.readings import DataType, Reading
from shared.wire_v3 import dictionary_bytes, dictionary_hash

log = logging.getLogger(__name__)
# Noted on a cancel that came while its readings were being committed: they are in.
_COMMITTED = "the readings were committed before the cancel took effect"
BLOCK_MAX_READINGS = 1024
"""Longest block: a bigger poll is cut into several, so batches can stay near their limit."""

BLOCK_ROW_BYTES = 48
"""A block row's cost beyond its body: key, columns and SQLite's cell and page overhead."""
_T = TypeVar("_T")
_TAG_KEY = itemgetter(0, 1, 2)  # (device, tag, data type) of a Reading
TagKey = tuple[str, str, DataType]


class BufferLayoutError(PlantwireError):
    """The buffer file exists but was written with a layout this version cannot read."""


class BufferUnavailable(PlantwireError):
    """The buffer file cannot be written or read now (disk full, I/O error, read-only)."""


class BufferClosed(PlantwireError):
    """The buffer was closed before these readings could be committed."""


@dataclass(frozen=True, slots=True)
class BufferCondition:
    """Whether the buffer can write, independent of any device or the broker."""

    state: Literal["ok", "failing"]
    last_error: str | None
    errors: int


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Blocks handed to the forwarder, not yet acknowledged.

    `tag_count` is how many entries of the buffer's tag dictionary existed when the batch was
    cut: every block's tag indexes lie below it.
    """

    batch_id: int
    last_seq: int
    blocks: tuple[Block, ...]
    count: int
    tag_count: int
    tags: Sequence[TagKey] = field(compare=False, repr=False)

    @property
    def seqs(self) -> list[int]:
        """The readings' sequence numbers."""
        return [seq for b in self.blocks for seq in range(b.first_seq, b.last_seq + 1)]

    @property
    def readings(self) -> list[Reading]:
        """The readings, decoded (tools, tests and the version 2 encoder; not the hot path)."""
        return [reading for b in self.blocks for reading in decode_block(b, self.tags)]


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What the buffer holds right now, and what its full-buffer policy has dropped so far."""

    readings: int
    batches_in_flight: int
    oldest_ts_us: int | None
    dropped_oldest: int = 0
    dropped_newest: int = 0
    used_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Dictionary:
    """The first `count` entries of the tag dictionary, encoded, and their hash."""

    count: int
    raw: bytes
    hash: str


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

    def dictionary(self, count: int) -> Dictionary:
        """The tag dictionary's first `count` entries, as batches name and carry it."""
        ...

    def wait_for_data(self) -> asyncio.Event:
        """An event set whenever readings are added."""
        ...

    def condition(self) -> BufferCondition:
        """Whether writes succeed right now, and the last error if not."""
        ...


@dataclass(slots=True, eq=False)
class _Add:
    """Readings waiting for the next group commit."""

    readings: Sequence[Reading]
    future: "asyncio.Future[int]"
    taken: bool = False


class SqliteBuffer:
    """Buffer in one SQLite file (WAL, synchronous=FULL), used from one worker thread.

    Bounded by `max_readings` and/or `max_bytes` (pages in use). When an add would pass a
    bound: `drop_oldest` deletes the oldest blocks not yet cut into a batch (whole blocks,
    counted per reading), `drop_newest` keeps only the incoming readings that fit, and
    `block` makes the add wait for room. Every drop is counted, in the file too, so the
    counts survive a restart.

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
        block_max_readings: int = BLOCK_MAX_READINGS,
        commit_interval: float = 0.0,
    ) -> None:
        self._path = path
        self._retry = (retry_initial, retry_cap)
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._last_used_bytes = 0
        # What a buffered reading costs in pages, from the blocks written so far. Not pages in
        # use / readings held: that counts the tag table too, and a table of 100,000 tags
        # beside a small backlog made every reading look like a kilobyte.
        self._bytes_per_reading = 20.0
        self.errors = 0
        self._max_readings = max_readings
        self._max_bytes = max_bytes
        self._when_full = when_full
        self._block_max = block_max_readings
        self._room = asyncio.Event()
        self._dropped = {"dropped_oldest": 0, "dropped_newest": 0}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._conn: sqlite3.Connection | None = None
        self._unsent_batches: list[tuple[int, int]] = []
        self._in_flight: set[int] = set()
        self._next_seq_to_batch = 1
        self._next_seq = 1
        self._count = 0
        self._data = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tag_index: dict[TagKey, int] = {}  # a tag's index in batches; its row id - 1
        self._tags: list[TagKey] = []
        self._dictionary: Dictionary | None = None
        self._adds: list[_Add] = []
        self._adds_lock = threading.Lock()
        self._commit_queued = False
        self._commit_interval = commit_interval
        self._last_commit = -math.inf
        self._closed = False
        self.commits = 0
        self.epoch = 0

    async def open(self) -> None:
        """Open or create the file and recover batches left unacknowledged by the last run."""
        await self._run(self._open)

    async def close(self) -> None:
        """Close the file."""
        self._closed = True
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[[], _T]) -> _T:
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._executor, function)

    def _loop_call(self, callback: Callable[[], object]) -> None:
        """Run a callback on the event loop, from the buffer's worker thread."""
        # Whatever runs on the worker was submitted from the loop, which set `_loop` first.
        required(self._loop, "the buffer's event loop").call_soon_threadsafe(callback)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Blocks are appended and read back once: a small page cache does, and keeps RSS down.
        conn.execute("PRAGMA cache_size=-512")
        try:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
                if found is None:
                    create_layout(conn, epoch=time.time_ns() // 1000)
                else:
                    upgrade_layout(conn, self._path, self._block_max)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        layout = meta.get("schema_version")
        if layout != LAYOUT_VERSION:
            conn.close()
            self._conn = None
            found = "no layout version" if layout is None else f"layout {layout}"
            raise BufferLayoutError(
                f"buffer file {self._path} has {found}; this version reads layout"
                f" {LAYOUT_VERSION} (and converts layout 1). Drain it with the Plantwire version"
                " that wrote it, or move it away to start a new buffer (a new epoch)."
            )
        self.epoch = int(meta["epoch"])
        self._next_seq = int(meta["next_seq"])
        self._dropped = {key: int(meta.get(key, 0)) for key in self._dropped}
        self._unsent_batches = conn.execute(
            "SELECT first_seq, last_seq FROM batches ORDER BY first_seq"
        ).fetchall()
        if self._unsent_batches:
            self._next_seq_to_batch = self._unsent_batches[-1][1] + 1
        else:
            row = conn.execute("SELECT min(first_seq) FROM blocks").fetchone()
            self._next_seq_to_batch = row[0] if row[0] is not None else self._next_seq
        self._count = conn.execute("SELECT coalesce(sum(n), 0) FROM blocks").fetchone()[0]
        for tag_id, device, tag, type_name in conn.execute(
            "SELECT id, device, tag, type FROM tags ORDER BY id"
        ):
            key = (device, tag, DataType(type_name))
            if tag_id != len(self._tags) + 1:
                raise BufferLayoutError(f"buffer file {self._path}: tag ids are not contiguous")
            self._tag_index[key] = tag_id - 1
            self._tags.append(key)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("buffer is not open")
        return self._conn

    async def add(self, readings: Sequence[Reading]) -> int:
        """Commit readings with the next group; return how many the full-buffer policy dropped.

        While the file cannot be written this keeps the readings and retries with backoff. A
        cancel while waiting (for room, or for the disk) gives the readings up, with a log
        line; a commit already under way is finished first, so they are then committed.
        """
        if not readings:
            return 0
        backoff = Backoff(*self._retry)
        try:
            while True:
                if self._when_full == "block":
                    await self._wait_for_room(len(readings))
                try:
                    dropped = await self._commit_with_group(readings)
                except BufferUnavailable:
                    await asyncio.sleep(backoff.next_delay())
                    continue
                self._data.set()
                return dropped
        except asyncio.CancelledError as cancelled:
            if _COMMITTED not in getattr(cancelled, "__notes__", ()):
                log.warning(
                    "%d readings not buffered: stopped while the buffer had no room or could"
                    " not write",
                    len(readings),
                )
            raise

    async def _commit_with_group(self, readings: Sequence[Reading]) -> int:
        """Queue readings for the next group commit and wait for it."""
        loop = self._loop = asyncio.get_running_loop()
        entry = _Add(readings, loop.create_future())
        with self._adds_lock:
            self._adds.append(entry)
            queue_commit = not self._commit_queued
            self._commit_queued = True
        if queue_commit:
            # Polls arriving within commit_interval of the last commit wait for company:
            # one fsync for all of them instead of one each.
            wait = self._last_commit + self._commit_interval - time.monotonic()
            if wait > 0:
                loop.call_later(wait, self._start_commit)
            else:
                self._start_commit()
        try:
            return await asyncio.shield(entry.future)
        except asyncio.CancelledError as cancelled:
            with self._adds_lock:
                if not entry.taken:
                    self._adds.remove(entry)
                    raise
            # Being written: wait for it, so whoever stops us knows the readings are in.
            await asyncio.wait({entry.future})
            if entry.future.exception() is None:
                cancelled.add_note(_COMMITTED)
            raise

    def _start_commit(self) -> None:
        if self._closed:  # stopped meanwhile: nobody will write these; say so to each
            with self._adds_lock:
                entries, self._adds = self._adds, []
                self._commit_queued = False
            # Still pending, each: an add given up while queued took its entry out.
            for entry in entries:
                entry.future.set_exception(BufferClosed(f"buffer {self._path} is closed"))
            return
        required(self._loop, "the buffer's event loop").run_in_executor(
            self._executor, self._commit_group
        )

    def _commit_group(self) -> None:
        """On the worker: commit every queued add in one transaction, then answer each."""
        with self._adds_lock:
            entries, self._adds = self._adds, []
            self._commit_queued = False
            for entry in entries:
                entry.taken = True
        if not entries:
            return
        futures = [entry.future for entry in entries]
        try:
            results = self._guarded(lambda: self._add_all([e.readings for e in entries]))()
        except BaseException as exc:
            error = exc  # the name `exc` is gone once the handler ends; the callback runs later
            self._loop_call(lambda: _settle(futures, error=error))
            if not isinstance(exc, Exception):
                raise
            return
        # One wake-up of the event loop for the whole group, not one per poll.
        self._loop_call(lambda: _settle(futures, results))

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

    def _excess(self, incoming: int, held: int, used: int | None) -> int:
        """How many readings must go for `incoming` more to fit beside `held` (0 if they fit)."""
        excess = 0
        if self._max_readings is not None:
            excess = held + incoming - self._max_readings
        if self._max_bytes is not None and used is not None:
            per_reading = self._bytes_per_reading
            projected = used + incoming * per_reading
            if projected > self._max_bytes:
                excess = max(excess, int((projected - self._max_bytes) / per_reading) + 1)
        return max(0, excess)

    def _room_for(self, incoming: int) -> bool:
        used = self._used_bytes() if self._max_bytes is not None else None
        return self._excess(incoming, self._count, used) == 0 or self._count == 0

    def _add_all(self, adds: Sequence[Sequence[Reading]]) -> list[int]:
        """Commit several adds in one transaction; return each one's dropped readings."""
        conn = self._db()
        tags_before, next_seq_before = len(self._tags), self._next_seq
        used = self._used_bytes() if self._max_bytes is not None else None
        held = self._count
        dropped_per_add: list[int] = []
        dropped_oldest = dropped_newest = 0
        rows: list[tuple[int, int, int, int, bytes]] = []
        try:
            with _transaction(conn):
                for readings in adds:
                    excess = self._excess(len(readings), held, used)
                    old = new = 0
                    if excess and self._when_full == "drop_oldest":
                        old = self._drop_oldest_blocks(excess)
                        excess = max(0, excess - old)
                    if excess and self._when_full != "block":
                        # drop_newest, or nothing old enough left to drop
                        new = min(excess, len(readings))
                        readings = readings[: len(readings) - new]
                    if used is not None:
                        # Measured once per commit; within it, project what each add takes.
                        used += int((len(readings) - old) * self._bytes_per_reading)
                    held += len(readings) - old
                    dropped_oldest += old
                    dropped_newest += new
                    dropped_per_add.append(old + new)
                    rows.extend(self._encode(readings))
                new_tags = self._tags[tags_before:]
                if new_tags:
                    conn.executemany(
                        "INSERT INTO tags (id, device, tag, type) VALUES (?,?,?,?)",
                        [
                            (tags_before + i + 1, d, t, k.value)
                            for i, (d, t, k) in enumerate(new_tags)
                        ],
                    )
                conn.executemany(
                    "INSERT INTO blocks (first_seq, n, ts, flags, body) VALUES (?,?,?,?,?)", rows
                )
                conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (self._next_seq,))
                if dropped_oldest or dropped_newest:
                    conn.executemany(
                        "UPDATE meta SET value = value + ? WHERE key = ?",
                        [(dropped_oldest, "dropped_oldest"), (dropped_newest, "dropped_newest")],
                    )
        except BaseException:
            for key in self._tags[tags_before:]:  # the rollback took these away
                del self._tag_index[key]
            del self._tags[tags_before:]
            self._next_seq = next_seq_before
            raise
        self.commits += 1
        self._last_commit = time.monotonic()
        self._recovered()
        self._count = held
        self._dropped["dropped_oldest"] += dropped_oldest
        self._dropped["dropped_newest"] += dropped_newest
        if dropped_oldest or dropped_newest:
            log.warning(
                "buffer full: dropped %d oldest and %d newest readings (%s)",
                dropped_oldest,
                dropped_newest,
                self._when_full,
            )
        return dropped_per_add

    def _encode(self, readings: Sequence[Reading]) -> list[tuple[int, int, int, int, bytes]]:
        """Blocks of one add as rows, numbering its readings from the next sequence number."""
        indexes = list(map(self._tag_index.get, map(_TAG_KEY, readings)))
        if None in indexes:  # tags seen for the first time: give them the next indexes
            for i, reading in enumerate(readings):
                if indexes[i] is None:
                    key = _TAG_KEY(reading)
                    index = self._tag_index.get(key)
                    if index is None:
                        index = self._tag_index[key] = len(self._tags)
                        self._tags.append(key)
                    indexes[i] = index
        known = cast(list[int], indexes)
        rows = []
        at = 0
        for run in timestamp_runs(readings):
            for start in range(0, len(run), self._block_max):
                part = run[start : start + self._block_max]
                block = encode_block(self._next_seq, part, known[at : at + len(part)])
                at += len(part)
                cost = (len(block.body) + BLOCK_ROW_BYTES) / block.n
                self._bytes_per_reading += (cost - self._bytes_per_reading) / 16
                self._next_seq += block.n
                rows.append((block.first_seq, block.n, block.ts, int(block.flags), block.body))
        return rows

    def _drop_oldest_blocks(self, excess: int) -> int:
        """Delete the oldest whole blocks not yet in a batch until `excess` readings are gone."""
        conn = self._db()
        dropped, last = 0, None
        for first_seq, n in conn.execute(
            "SELECT first_seq, n FROM blocks WHERE first_seq >= ? ORDER BY first_seq",
            (self._next_seq_to_batch,),
        ):
            dropped += n
            last = first_seq
            if dropped >= excess:
                break
        if last is not None:
            conn.execute(
                "DELETE FROM blocks WHERE first_seq BETWEEN ? AND ?",
                (self._next_seq_to_batch, last),
            )
        return dropped

    async def begin(self, limit: int) -> PendingBatch | None:
        """Hand out the oldest unsent batch, or cut a new one of whole blocks.

        A new batch holds at most `limit` readings, unless its first block alone is longer.
        """
        return await self._submit(lambda: self._begin(limit))

    def _begin(self, limit: int) -> PendingBatch | None:
        conn = self._db()
        for first, last in self._unsent_batches:
            if first not in self._in_flight:
                batch = self._load(first, last)
                self._in_flight.add(first)
                return batch
        blocks: list[Block] = []
        count = 0
        cursor = conn.execute(
            "SELECT first_seq, n, ts, flags, body FROM blocks WHERE first_seq >= ?"
            " ORDER BY first_seq",
            (self._next_seq_to_batch,),
        )
        for first_seq, n, ts, flags, body in cursor:
            if blocks and count + n > limit:
                break
            blocks.append(Block(first_seq, n, ts, BlockFlags(flags), body))
            count += n
        cursor.close()
        if not blocks:
            return None
        first, last = blocks[0].first_seq, blocks[-1].last_seq
        conn.execute("INSERT INTO batches (first_seq, last_seq) VALUES (?, ?)", (first, last))
        self._unsent_batches.append((first, last))
        self._next_seq_to_batch = last + 1
        self._in_flight.add(first)
        return self._batch(blocks)

    def _batch(self, blocks: list[Block]) -> PendingBatch:
        count = sum(b.n for b in blocks)
        return PendingBatch(
            blocks[0].first_seq,
            blocks[-1].last_seq,
            tuple(blocks),
            count,
            len(self._tags),
            self._tags,
        )

    def _load(self, first: int, last: int) -> PendingBatch:
        rows = (
            self._db()
            .execute(
                "SELECT first_seq, n, ts, flags, body FROM blocks"
                " WHERE first_seq BETWEEN ? AND ? ORDER BY first_seq",
                (first, last),
            )
            .fetchall()
        )
        return self._batch(
            [Block(f, n, ts, BlockFlags(flags), body) for f, n, ts, flags, body in rows]
        )

    def dictionary(self, count: int) -> Dictionary:
        """The tag dictionary's first `count` entries and their hash (the last one is kept)."""
        cached = self._dictionary
        if cached is None or cached.count != count:
            raw = dictionary_bytes([(d, t, k.value) for d, t, k in self._tags[:count]])
            cached = self._dictionary = Dictionary(count, raw, dictionary_hash(raw))
        return cached

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
        # A delete lost to a power cut only makes the batch go again, and the collector stores
        # it once: it need not wait for its own fsync (the next commit's covers it).
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with _transaction(conn):
                deleted = conn.execute(
                    "SELECT coalesce(sum(n), 0) FROM blocks WHERE first_seq BETWEEN ? AND ?",
                    (batch_id, last),
                ).fetchone()[0]
                conn.execute("DELETE FROM blocks WHERE first_seq BETWEEN ? AND ?", (batch_id, last))
                conn.execute("DELETE FROM batches WHERE first_seq = ?", (batch_id,))
        finally:
            conn.execute("PRAGMA synchronous=FULL")
        self._count -= deleted
        self._unsent_batches.remove((batch_id, last))
        self._loop_call(self._room.set)
        return int(deleted)

    async def stats(self) -> BufferStats:
        """Depth, batches in flight and the oldest reading's timestamp."""
        return await self._run(self._stats)

    def _stats(self) -> BufferStats:
        oldest = None
        try:
            row = self._db().execute("SELECT ts FROM blocks ORDER BY first_seq LIMIT 1").fetchone()
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


def _settle(
    futures: Sequence["asyncio.Future[int]"],
    results: Sequence[int] = (),
    *,
    error: BaseException | None = None,
) -> None:
    """Answer the adds of one group commit (on the event loop).

    Each is still pending: an add cancelled once its entry was taken waits for this answer.
    """
    for i, future in enumerate(futures):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(results[i])


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """One transaction: committed if the block ends normally, else rolled back and re-raised."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # A full disk or an I/O error can make SQLite roll the transaction back itself.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
