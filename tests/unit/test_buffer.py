"""The SQLite buffer: durable batches with stable identity across restarts."""

import asyncio
import logging
import math
import sqlite3
from pathlib import Path

import pytest

from agent.buffer import BufferClosed, BufferCondition, BufferLayoutError, SqliteBuffer
from shared.readings import DataType, Quality, Reading
from tests.harness import eventually

TS = 1_790_000_000_000_000


def readings(count: int, start: int = 0) -> list[Reading]:
    return [
        Reading("dev", f"t{i % 3}", DataType.INT32, TS + i, i) for i in range(start, start + count)
    ]


async def add_polls(buffer: SqliteBuffer, polls: int, size: int, start: int = 0) -> int:
    """Add `polls` polls of `size` readings each (one block each); return the drops."""
    dropped = 0
    for poll in range(polls):
        dropped += await buffer.add(readings(size, start=start + poll * size))
    return dropped


async def opened(path: Path) -> SqliteBuffer:
    buffer = SqliteBuffer(path)
    await buffer.open()
    return buffer


async def test_batches_come_out_in_order_and_leave_only_when_accepted(tmp_path: Path) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    assert await buffer.begin(10) is None
    assert await add_polls(buffer, 5, 5) == 0
    assert buffer.wait_for_data().is_set()
    first = await buffer.begin(10)
    second = await buffer.begin(10)
    assert first is not None
    assert second is not None
    assert list(first.seqs) == list(range(1, 11))
    assert list(second.seqs) == list(range(11, 21))
    assert [r.value for r in first.readings] == list(range(10))
    stats = await buffer.stats()
    assert (stats.readings, stats.batches_in_flight, stats.oldest_ts_us) == (25, 2, TS)
    await buffer.end(first, accepted=True)
    await buffer.end(second, accepted=False)
    again = await buffer.begin(10)
    assert again == second, "a refused batch is sent again unchanged"
    await buffer.end(again, accepted=True)
    last = await buffer.begin(10)
    assert last is not None
    assert list(last.seqs) == list(range(21, 26))
    await buffer.end(last, accepted=True)
    stats = await buffer.stats()
    assert (stats.readings, stats.batches_in_flight, stats.oldest_ts_us) == (0, 0, None)
    await buffer.close()


async def test_restart_resends_unacknowledged_batches_with_the_same_identity(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    buffer = await opened(path)
    await add_polls(buffer, 10, 3)
    sent = await buffer.begin(12)
    assert sent is not None
    epoch = buffer.epoch
    await buffer.close()

    buffer = await opened(path)
    assert buffer.epoch == epoch
    await buffer.add(readings(5, start=30))
    resent = await buffer.begin(100)
    assert resent == sent
    rest = await buffer.begin(100)
    assert rest is not None
    assert list(rest.seqs) == list(range(13, 36))
    await buffer.end(resent, accepted=True)
    await buffer.end(rest, accepted=True)
    await buffer.add(readings(1))
    fresh = await buffer.begin(100)
    assert fresh is not None
    assert list(fresh.seqs) == [36], "sequence numbers are never reused"
    await buffer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_restart_with_everything_acknowledged_continues_after_the_last(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    buffer = await opened(path)
    await buffer.add(readings(3))
    batch = await buffer.begin(10)
    assert batch is not None
    await buffer.end(batch, accepted=True)
    await buffer.add(readings(2))
    await buffer.close()
    buffer = await opened(path)
    batch = await buffer.begin(10)
    assert batch is not None
    assert list(batch.seqs) == [4, 5]
    await buffer.close()


async def test_new_file_gets_a_new_epoch(tmp_path: Path) -> None:
    one = await opened(tmp_path / "one.sqlite")
    two = await opened(tmp_path / "two.sqlite")
    assert one.epoch != two.epoch
    await one.close()
    await two.close()


async def test_awkward_values_survive(tmp_path: Path) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    values = [
        Reading("d", "nan", DataType.FLOAT64, TS, math.nan),
        Reading("d", "big", DataType.UINT64, TS, 2**64 - 1),
        Reading("d", "flag", DataType.BOOL, TS, False),
        Reading("d", "whole", DataType.FLOAT32, TS, 3.0),
        Reading("d", "text", DataType.STRING, TS, "12"),
        Reading("d", "gone", DataType.INT16, TS, None, Quality.BAD),
        Reading("d", "served", DataType.INT16, TS, 1, Quality.GOOD, TS + 5),
    ]
    await buffer.add(values)
    await buffer.add([])
    batch = await buffer.begin(10)
    assert batch is not None
    nan, big, flag, whole, text, gone, served = batch.readings
    assert served.server_ts_us == TS + 5
    assert nan.server_ts_us is None
    assert isinstance(nan.value, float)
    assert math.isnan(nan.value)
    assert big.value == 2**64 - 1
    assert flag.value is False
    assert whole.value == 3.0
    assert type(whole.value) is float
    assert text.value == "12"
    assert gone.value is None
    assert gone.quality is Quality.BAD
    await buffer.close()


async def test_drop_oldest_keeps_the_newest_and_counts(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_readings=100)
    await buffer.open()
    assert await add_polls(buffer, 4, 20) == 0
    assert await buffer.add(readings(50, start=80)) == 40, "whole polls go, counted per reading"
    stats = await buffer.stats()
    assert (stats.readings, stats.dropped_oldest, stats.dropped_newest) == (90, 40, 0)
    batch = await buffer.begin(1000)
    assert batch is not None
    assert [r.value for r in batch.readings] == list(range(40, 130)), "order kept, oldest gone"
    await buffer.close()
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_readings=100)
    await buffer.open()
    assert (await buffer.stats()).dropped_oldest == 40, "drop counts survive a restart"
    await buffer.close()


async def test_drop_oldest_never_touches_batches_already_cut(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_readings=100)
    await buffer.open()
    await add_polls(buffer, 10, 10)
    sent = await buffer.begin(70)
    assert sent is not None
    assert await buffer.add(readings(50, start=100)) == 50
    stats = await buffer.stats()
    assert (stats.dropped_oldest, stats.dropped_newest) == (30, 20)
    await buffer.end(sent, accepted=False)
    assert await buffer.begin(1000) == sent, "the batch in flight is intact"
    await buffer.close()


async def test_drop_newest_refuses_what_does_not_fit(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_readings=100, when_full="drop_newest")
    await buffer.open()
    await buffer.add(readings(80))
    assert await buffer.add(readings(50, start=80)) == 30
    batch = await buffer.begin(1000)
    assert batch is not None
    assert [r.value for r in batch.readings] == list(range(100))
    assert (await buffer.stats()).dropped_newest == 30
    await buffer.close()


async def test_block_waits_for_room(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_readings=100, when_full="block")
    await buffer.open()
    await add_polls(buffer, 10, 10)
    batch = await buffer.begin(60)
    assert batch is not None
    waiting = asyncio.create_task(buffer.add(readings(10, start=100)))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "a full buffer makes the add wait"
    await buffer.acknowledge(batch.batch_id)
    assert await asyncio.wait_for(waiting, 5) == 0
    stats = await buffer.stats()
    assert (stats.readings, stats.dropped_oldest, stats.dropped_newest) == (50, 0, 0)
    await buffer.close()


async def test_byte_bound(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_bytes=2_000_000)
    await buffer.open()
    dropped = 0
    for start in range(0, 200_000, 10_000):
        dropped += await buffer.add(readings(10_000, start=start))
    stats = await buffer.stats()
    assert dropped > 0
    assert stats.used_bytes <= 2_000_000 * 1.1
    assert stats.readings + dropped == 200_000
    await buffer.close()


async def test_commits_are_durable_wal_with_synchronous_full(tmp_path: Path) -> None:
    """In WAL mode only synchronous=FULL keeps the last commits through a power loss."""
    buffer = await opened(tmp_path / "b.sqlite")
    try:
        # PRAGMA synchronous is per connection: ask the buffer's own, on its own thread.
        journal, synchronous = await buffer._run(
            lambda: (
                buffer._db().execute("PRAGMA journal_mode").fetchone()[0],
                buffer._db().execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert journal == "wal"
        assert synchronous == 2, "2 is FULL (0 OFF, 1 NORMAL, 3 EXTRA)"
    finally:
        await buffer.close()


async def test_a_full_disk_is_a_state_the_add_rides_out_without_losing_anything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.buffer")
    buffer = SqliteBuffer(tmp_path / "b.sqlite", retry_initial=0.01, retry_cap=0.05)
    await buffer.open()
    await buffer.add(readings(100))
    # SQLite's own page limit fails writes with the error a full disk gives: SQLITE_FULL.
    pages = await buffer._run(lambda: buffer._db().execute("PRAGMA page_count").fetchone()[0])
    await buffer._run(lambda: buffer._db().execute(f"PRAGMA max_page_count = {pages}"))
    adding = asyncio.create_task(buffer.add(readings(5000, start=100)))

    async def failing() -> bool:
        return buffer.condition().errors >= 3

    await eventually(failing, timeout=5, what="the add to retry")
    condition = buffer.condition()
    assert condition.state == "failing"
    assert condition.last_error is not None
    assert "full" in condition.last_error
    assert not adding.done(), "the add holds its readings and retries"
    assert (await buffer.stats()).readings == 100
    first = await buffer.begin(1000)  # the forwarder goes on with what is committed
    assert first is not None
    assert len(first.seqs) == 100
    assert buffer.condition().state == "failing", "only committed readings end the state"
    await buffer._run(lambda: buffer._db().execute("PRAGMA max_page_count = 1073741823"))
    assert await asyncio.wait_for(adding, 5) == 0
    assert buffer.condition() == BufferCondition("ok", None, buffer.condition().errors)
    batch = await buffer.begin(10_000)
    assert batch is not None
    assert list(batch.seqs) == list(range(101, 5101))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    recoveries = [r for r in caplog.records if "writable again" in r.message]
    assert len(errors) == 1
    assert "cannot be written" in errors[0].message
    assert len(recoveries) == 1
    assert recoveries[0].levelno == logging.INFO
    await buffer.close()


async def test_cancelling_an_add_that_waits_for_the_disk_gives_up_only_its_readings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", retry_initial=0.01, retry_cap=0.05)
    await buffer.open()
    await buffer.add(readings(10))
    pages = await buffer._run(lambda: buffer._db().execute("PRAGMA page_count").fetchone()[0])
    await buffer._run(lambda: buffer._db().execute(f"PRAGMA max_page_count = {pages}"))
    adding = asyncio.create_task(buffer.add(readings(5000, start=10)))

    async def failing() -> bool:
        return buffer.condition().state == "failing"

    await eventually(failing, timeout=5, what="the buffer to fail")
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding
    assert "5000 readings not buffered" in caplog.text
    await buffer.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:
        assert conn.execute("SELECT sum(n) FROM blocks").fetchone()[0] == 10


def write_layout_1(path: Path) -> None:
    """A buffer file as agents before poll blocks wrote it: a row per reading."""
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, tag_id INTEGER NOT NULL,
                ts INTEGER NOT NULL, value, quality INTEGER NOT NULL, server_ts INTEGER);
            CREATE TABLE tags (id INTEGER PRIMARY KEY, device TEXT NOT NULL, tag TEXT NOT NULL,
                type TEXT NOT NULL, UNIQUE (device, tag, type));
            CREATE TABLE batches (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL);
            INSERT INTO meta VALUES ('schema_version', 1), ('epoch', 42),
                ('dropped_oldest', 3), ('dropped_newest', 0);
            INSERT INTO tags VALUES (1, 'd', 'x', 'int32'), (2, 'd', 'big', 'uint64'),
                (3, 'd', 'f', 'float64'), (4, 'd', 's', 'string');
            """
        )
        rows = [(1, TS + i, i, 0, None) for i in range(1, 8)]
        rows += [(2, TS, str(2**64 - 1), 0, None), (3, TS, "NaN", 0, TS + 1), (4, TS, "a", 0, None)]
        rows += [(1, TS, None, 2, None)]
        conn.executemany(
            "INSERT INTO readings (tag_id, ts, value, quality, server_ts) VALUES (?,?,?,?,?)",
            rows,
        )
        # Seqs 1-3 acknowledged (deleted) already, 4-6 cut into a batch in flight; 12 was
        # written and deleted, so 13 is the next sequence number.
        conn.execute("DELETE FROM readings WHERE seq <= 3")
        conn.execute("INSERT INTO batches VALUES (4, 6)")
        conn.execute("INSERT INTO readings (tag_id, ts, value, quality) VALUES (1, ?, 0, 0)", (TS,))
        conn.execute("DELETE FROM readings WHERE seq = 12")


async def test_a_layout_1_file_is_converted_keeping_epoch_batches_and_sequence_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.buffer_layout")
    path = tmp_path / "old.sqlite"
    write_layout_1(path)
    buffer = await opened(path)
    assert "converted from layout 1 to 2: 8 readings kept" in caplog.text
    assert buffer.epoch == 42
    stats = await buffer.stats()
    assert (stats.readings, stats.dropped_oldest) == (8, 3)
    in_flight = await buffer.begin(1000)
    assert in_flight is not None
    assert (in_flight.batch_id, in_flight.seqs) == (4, [4, 5, 6]), "the batch keeps its range"
    assert [r.value for r in in_flight.readings] == [4, 5, 6]
    rest = await buffer.begin(1000)
    assert rest is not None
    assert rest.seqs == [7, 8, 9, 10, 11]
    seven, big, nan, text, gone = rest.readings
    assert (seven.value, seven.ts_us) == (7, TS + 7)
    assert big.value == 2**64 - 1
    assert isinstance(nan.value, float)
    assert math.isnan(nan.value)
    assert nan.server_ts_us == TS + 1
    assert text.value == "a"
    assert (gone.value, gone.quality) == (None, Quality.BAD)
    await buffer.add(readings(1))
    fresh = await buffer.begin(1000)
    assert fresh is not None
    assert fresh.seqs == [13], "sequence numbers are never reused"
    await buffer.close()


async def test_a_file_of_an_unknown_layout_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', 9), ('epoch', 1)")
    buffer = SqliteBuffer(path)
    with pytest.raises(BufferLayoutError, match="has layout 9; this version reads layout 2"):
        await buffer.open()
    await buffer.close()


async def test_concurrent_adds_share_one_commit_and_each_gets_its_own_answer(
    tmp_path: Path,
) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_readings=1000, when_full="drop_newest")
    await buffer.open()
    results = await asyncio.gather(*(buffer.add(readings(100, start=i * 100)) for i in range(12)))
    assert buffer.commits < 12, "adds waiting together are committed together"
    assert sorted(results) == [0] * 10 + [100, 100], "the last two polls find no room"
    batch = await buffer.begin(10_000)
    assert batch is not None
    assert batch.count == 1000
    assert batch.seqs == list(range(1, 1001)), "sequence numbers stay dense across a group"
    await buffer.close()


async def test_a_big_poll_is_cut_into_blocks_so_batches_keep_near_their_limit(
    tmp_path: Path,
) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", block_max_readings=100)
    await buffer.open()
    same_time = [Reading("d", f"t{i}", DataType.FLOAT64, TS, float(i)) for i in range(250)]
    await buffer.add(same_time)
    batch = await buffer.begin(120)
    assert batch is not None
    assert [b.n for b in batch.blocks] == [100], "whole blocks only, at most the limit"
    assert batch.blocks[0].flags == 0, "one timestamp for the block, no column"
    rest = await buffer.begin(120)
    assert rest is not None
    assert [b.n for b in rest.blocks] == [100]
    last = await buffer.begin(10)
    assert last is not None
    assert [b.n for b in last.blocks] == [50], "a block longer than the limit still goes"
    await buffer.close()


async def test_the_dictionary_names_tags_by_index_and_changes_only_with_them(
    tmp_path: Path,
) -> None:
    buffer = await opened(tmp_path / "b.sqlite")
    await buffer.add(readings(3))
    batch = await buffer.begin(10)
    assert batch is not None
    first = buffer.dictionary(batch.tag_count)
    assert first.raw == (
        b'{"device":["dev","dev","dev"],"name":["t0","t1","t2"],"type":["int32","int32","int32"]}'
    )
    assert buffer.dictionary(batch.tag_count) is first
    await buffer.add([Reading("dev", "new", DataType.BOOL, TS, True)])
    later = await buffer.begin(10)
    assert later is not None
    assert later.tag_count == 4
    assert buffer.dictionary(later.tag_count).hash != first.hash
    await buffer.close()
    reopened = await opened(tmp_path / "b.sqlite")
    assert reopened.dictionary(4).hash == buffer.dictionary(4).hash, "ids survive a restart"
    await reopened.close()


async def test_polls_arriving_soon_after_a_commit_share_the_next_one(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", commit_interval=0.2)
    await buffer.open()
    await buffer.add(readings(10))
    assert buffer.commits == 1
    started = asyncio.get_running_loop().time()
    adds = []
    for poll in range(5):  # one poll every 20 ms, as devices spread over a second do
        adds.append(asyncio.ensure_future(buffer.add(readings(10, start=10 * (poll + 1)))))
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(asyncio.gather(*adds), 5) == [0] * 5

    async def all_in() -> bool:
        return (await buffer.stats()).readings == 60

    await eventually(all_in, timeout=5, what="the polls committed")
    assert buffer.commits == 2, "five polls, one commit"
    assert asyncio.get_running_loop().time() - started >= 0.15, "held until the interval ends"
    await buffer.close()


async def test_readings_waiting_for_a_commit_when_the_buffer_closes_fail_clearly(
    tmp_path: Path,
) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", commit_interval=0.3)
    await buffer.open()
    await buffer.add(readings(10))
    waiting = asyncio.create_task(buffer.add(readings(10, start=10)))
    await asyncio.sleep(0.05)
    await buffer.close()
    with pytest.raises(BufferClosed):
        await asyncio.wait_for(waiting, 5)


async def test_a_large_tag_table_beside_a_small_backlog_drops_nothing(tmp_path: Path) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite", max_bytes=3_000_000)
    await buffer.open()
    many_tags = [Reading("plc", f"hr{i:05d}", DataType.UINT16, TS, i) for i in range(20_000)]
    assert await buffer.add(many_tags) == 0
    while (batch := await buffer.begin(100_000)) is not None:
        await buffer.acknowledge(batch.batch_id)
    assert (await buffer.stats()).used_bytes > 1_000_000, "the tag table fills pages"
    for size in (1, 10, 100, 1000):
        assert await buffer.add(many_tags[:size]) == 0, "a few KB of readings fit"
    await buffer.close()
