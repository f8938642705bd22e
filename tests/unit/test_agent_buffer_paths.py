"""The SQLite buffer's error and race paths: cancels, failing reads and writes, bad files."""

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.buffer import BufferCondition, BufferLayoutError, SqliteBuffer
from shared.readings import DataType, Reading
from tests.harness import eventually

TS = 1_790_000_000_000_000


def readings(count: int, start: int = 0, tag: str = "t") -> list[Reading]:
    return [Reading("dev", tag, DataType.INT32, TS + i, i) for i in range(start, start + count)]


async def opened(path: Path, **options: Any) -> SqliteBuffer:
    buffer = SqliteBuffer(path, retry_initial=0.01, retry_cap=0.05, **options)
    await buffer.open()
    return buffer


def held_in_file(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT coalesce(sum(n), 0) FROM blocks").fetchone()[0])


class Gate:
    """Holds the buffer's worker inside a call until released (at most 5 s)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any) -> Any:
            self.entered.set()
            self.release.wait(5)
            return function(*args)

        return held

    async def reached(self) -> bool:
        return self.entered.is_set()


async def test_an_add_cancelled_while_queued_gives_up_its_readings_and_no_empty_commit_is_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = await opened(tmp_path / "b.sqlite", commit_interval=0.2)
    await buffer.add(readings(10))
    queued = asyncio.create_task(buffer.add(readings(5, start=10)))

    async def commit_due() -> bool:
        return buffer._commit_queued

    await eventually(commit_due, timeout=5, what="the add to queue")
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert "5 readings not buffered" in caplog.text

    async def commit_ran() -> bool:
        return not buffer._commit_queued

    await eventually(commit_ran, timeout=5, what="the due group commit")
    assert buffer.commits == 1, "a group left with nothing to write commits nothing"
    assert (await buffer.stats()).readings == 10
    await buffer.close()
    assert held_in_file(tmp_path / "b.sqlite") == 10


async def test_an_add_cancelled_during_its_commit_waits_for_it_and_the_readings_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    gate = Gate()
    buffer._add_all = gate.wrap(buffer._add_all)  # type: ignore[method-assign]
    adding = asyncio.create_task(buffer.add(readings(10)))
    await eventually(gate.reached, timeout=5, what="the commit to start")
    adding.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not adding.done(), "a cancel does not abandon a commit under way"
    gate.release.set()
    await asyncio.wait({adding}, timeout=5)
    assert adding.cancelled()
    assert "not buffered" not in caplog.text, "they were buffered: no false alarm"
    assert (await buffer.stats()).readings == 10
    await buffer.close()
    assert held_in_file(tmp_path / "b.sqlite") == 10


async def test_an_add_cancelled_during_a_commit_that_fails_says_its_readings_are_not_buffered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    gate = Gate()

    def failing(adds: Sequence[Sequence[Reading]]) -> list[int]:
        raise sqlite3.OperationalError("disk I/O error")

    buffer._add_all = gate.wrap(failing)  # type: ignore[method-assign]
    adding = asyncio.create_task(buffer.add(readings(7)))
    await eventually(gate.reached, timeout=5, what="the commit to start")
    adding.cancel()
    gate.release.set()
    await asyncio.wait({adding}, timeout=5)
    assert adding.cancelled()
    assert "7 readings not buffered" in caplog.text
    assert (await buffer.stats()).readings == 0
    await buffer.close()


class Halt(BaseException):
    """Not an Exception: the kind of error no handler may swallow."""


async def test_an_error_that_is_not_an_exception_reaches_the_adds_and_the_buffer_goes_on(
    tmp_path: Path,
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    real = buffer._add_all

    def halting(adds: Sequence[Sequence[Reading]]) -> list[int]:
        raise Halt("stop now")

    buffer._add_all = halting  # type: ignore[method-assign]
    with pytest.raises(Halt, match="stop now"):
        await buffer.add(readings(3))
    buffer._add_all = real  # type: ignore[method-assign]
    assert await buffer.add(readings(4)) == 0
    batch = await buffer.begin(100)
    assert batch is not None
    assert batch.seqs == [1, 2, 3, 4], "nothing of the halted add was numbered"
    await buffer.close()


async def test_a_blocking_add_rides_out_a_failure_to_measure_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = await opened(tmp_path / "b.sqlite", max_bytes=10_000_000, when_full="block")
    real = buffer._room_for
    failures = 1

    def flaky(incoming: int) -> bool:
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real(incoming)

    buffer._room_for = flaky  # type: ignore[method-assign]
    assert await asyncio.wait_for(buffer.add(readings(10)), 5) == 0
    assert buffer.condition() == BufferCondition("ok", None, 1), "failed once, then recovered"
    assert "cannot be written: disk I/O error" in caplog.text
    assert (await buffer.stats()).readings == 10
    await buffer.close()


async def test_a_cancelled_acknowledge_still_finishes_the_delete_it_started(
    tmp_path: Path,
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    await buffer.add(readings(10))
    batch = await buffer.begin(100)
    assert batch is not None
    gate = Gate()
    buffer._acknowledge = gate.wrap(buffer._acknowledge)  # type: ignore[method-assign]
    acknowledging = asyncio.create_task(buffer.acknowledge(batch.batch_id))
    await eventually(gate.reached, timeout=5, what="the delete to start")
    acknowledging.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not acknowledging.done(), "the caller learns of the cancel once the delete is done"
    gate.release.set()
    await asyncio.wait({acknowledging}, timeout=5)
    assert acknowledging.cancelled()
    assert (await buffer.stats()).readings == 0
    await buffer.close()
    assert held_in_file(tmp_path / "b.sqlite") == 0


async def test_a_programming_error_is_raised_and_not_taken_for_a_failing_disk(
    tmp_path: Path,
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    await buffer._run(lambda: buffer._db().close())  # a bug: the connection closed under it
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        await buffer.begin(10)
    assert buffer.condition() == BufferCondition("ok", None, 0)
    await buffer.close()


async def test_a_write_failing_mid_transaction_forgets_the_new_tags_it_had_numbered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    buffer = await opened(path)
    await buffer.add(readings(2, tag="known"))
    real = buffer._encode
    failures = 1

    def failing(batch: Sequence[Reading]) -> list[tuple[int, int, int, int, bytes]]:
        nonlocal failures
        rows = real(batch)  # numbers the new tags, inside the transaction
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return rows

    buffer._encode = failing  # type: ignore[method-assign]
    mixed = [
        Reading("dev", "known", DataType.INT32, TS + 10, 10),
        Reading("dev", "new1", DataType.FLOAT64, TS + 10, 1.5),
        Reading("dev", "new2", DataType.BOOL, TS + 10, True),
    ]
    assert await asyncio.wait_for(buffer.add(mixed), 5) == 0
    assert buffer.condition() == BufferCondition("ok", None, 1)
    await buffer.close()
    reopened = await opened(path)
    first = await reopened.begin(2)
    rest = await reopened.begin(100)
    assert first is not None
    assert rest is not None
    assert rest.seqs == [3, 4, 5], "the failed attempt used no sequence numbers"
    assert rest.readings == mixed
    assert reopened.dictionary(rest.tag_count).raw == (
        b'{"device":["dev","dev","dev"],"name":["known","new1","new2"],'
        b'"type":["int32","float64","bool"]}'
    ), "each tag numbered once, in order"
    await reopened.close()


async def test_a_file_whose_tag_ids_have_a_gap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buffer = await opened(path)
    await buffer.add(readings(1, tag="a") + readings(1, tag="b"))
    await buffer.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tags SET id = 7 WHERE id = 2")
    again = SqliteBuffer(path)
    with pytest.raises(BufferLayoutError, match="tag ids are not contiguous"):
        await again.open()
    await again.close()


async def test_a_buffer_used_before_it_is_opened_says_so(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite")
    with pytest.raises(RuntimeError, match="buffer is not open"):
        await buffer.begin(10)
    await buffer.close()


async def test_drop_oldest_with_every_block_already_cut_drops_the_incoming_readings(
    tmp_path: Path,
) -> None:
    buffer = await opened(tmp_path / "b.sqlite", max_readings=20, when_full="drop_oldest")
    await buffer.add(readings(20))
    batch = await buffer.begin(100)
    assert batch is not None
    assert await buffer.add(readings(5, start=20)) == 5
    stats = await buffer.stats()
    assert (stats.readings, stats.dropped_oldest, stats.dropped_newest) == (20, 0, 5)
    again = await buffer.begin(100)
    assert again is None, "the batch in flight is untouched and nothing new was kept"
    await buffer.close()


async def test_a_delete_the_file_refuses_keeps_the_batch_for_the_next_send(
    tmp_path: Path,
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    await buffer.add(readings(10))
    batch = await buffer.begin(100)
    assert batch is not None
    refuse = "CREATE TRIGGER keep BEFORE DELETE ON batches BEGIN SELECT RAISE(ABORT, 'kept'); END"
    await buffer._run(lambda: buffer._db().execute(refuse))
    with pytest.raises(sqlite3.IntegrityError, match="kept"):
        await buffer.acknowledge(batch.batch_id)
    assert (await buffer.stats()).readings == 10, "the blocks' delete was rolled back"
    again = await buffer.begin(100)
    assert again == batch, "sent again, unchanged"
    synchronous = await buffer._run(
        lambda: buffer._db().execute("PRAGMA synchronous").fetchone()[0]
    )
    assert synchronous == 2, "back to FULL for the adds"
    await buffer.close()


class _FailingConnection:
    """A connection on a file that has started to fail every statement."""

    def execute(self, *args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")


async def test_stats_of_a_failing_file_report_what_is_known(tmp_path: Path) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    await buffer.add(readings(10))
    used = (await buffer.stats()).used_bytes
    real = buffer._conn
    buffer._conn = _FailingConnection()  # type: ignore[assignment]
    stats = await buffer.stats()
    assert (stats.readings, stats.oldest_ts_us, stats.used_bytes) == (10, None, used)
    assert buffer.condition() == BufferCondition("failing", "OperationalError: disk I/O error", 1)
    buffer._conn = real
    await buffer.close()
