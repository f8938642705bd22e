"""The rollup part writer's loop against a real PostgreSQL: when it writes, and what it keeps."""

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from collector.analytics.deriver import WRITER_KEY, Deriver
from collector.analytics.held_readings import HeldReadings
from collector.analytics.minute_summaries import MINUTE_US, Columns
from collector.analytics.rollup_writer import RollupWriter
from collector.config import AnalyticsSettings
from collector.metrics import CollectorMetrics
from tests.harness import eventually

pytestmark = pytest.mark.integration
T0_US = 1_772_431_200_000_000  # 2026-03-02 06:00 UTC
NOW_US = T0_US + 10 * MINUTE_US


def columns(tag: int, minute: int) -> Columns:
    """Two readings of `tag` in minute `minute` after T0."""
    return Columns(
        np.array([tag, tag], np.int32),
        np.array([T0_US + minute * MINUTE_US, T0_US + minute * MINUTE_US + 1], np.int64),
        np.array([1, 2], np.int64),
        np.array([True, True]),
        np.array([1.0, 2.0]),
    )


async def parts(url: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT tag_id, count FROM rollups_1m ORDER BY tag_id")
        return await cursor.fetchall()


async def test_what_is_due_is_rolled_up_as_batches_pause_and_everything_when_stopped(
    db_pool: Any, database_url: str
) -> None:
    held = HeldReadings()
    paused: list[bool] = []
    writer = RollupWriter(
        db_pool, held, 0.5, now_us=lambda: NOW_US, paused=lambda: paused.append(True)
    )
    held.add(("a1", 1, 1), columns(1, 0))  # ended
    held.add(("a1", 1, 2), columns(2, 10))  # the running minute
    task = asyncio.create_task(writer.run())
    try:

        async def first_written() -> bool:
            return await parts(database_url) == [(1, 2)]

        await eventually(first_written, timeout=10, what="the ended minute's part")
        assert held.readings == 2
        assert paused == [True]  # rolled up as the batches paused: the deriver is told
        # Batches that keep coming: what is due is written every interval all the same.
        for number in range(3, 30):
            held.add(("a1", 1, number), columns(number, 1))
            await asyncio.sleep(0.05)  # a batch every 50 ms, for 1.35 s

        async def more_written() -> bool:
            return len(await parts(database_url)) > 1

        await eventually(more_written, timeout=10, what="parts while batches come")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await writer.flush()  # at the stop: everything held
    found = await parts(database_url)
    assert [tag for tag, _ in found] == list(range(1, 30))  # the running minute's (2) too
    assert held.readings == 0


async def test_a_batch_still_being_written_is_no_pause(db_pool: Any, database_url: str) -> None:
    held = HeldReadings()
    paused: list[bool] = []
    writer = RollupWriter(
        db_pool, held, 0.5, now_us=lambda: NOW_US, paused=lambda: paused.append(True)
    )
    held.add(("a1", 1, 1), columns(1, 0))  # due
    assert held.holds("a2", 1, 1, 2)  # another agent's batch, still being written
    assert held.writing
    task = asyncio.create_task(writer.run())
    try:

        async def written() -> bool:
            return await parts(database_url) == [(1, 2)]

        await eventually(written, timeout=10, what="the due part")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Written when the interval was up, not as at a pause: the deriver was not woken.
    assert paused == []
    held.forget(("a2", 1, 1))
    assert not held.writing


class CountedTakes(HeldReadings):
    def __init__(self) -> None:
        super().__init__()
        self.takes = 0

    def take(self, now_us: int, everything: bool = False) -> Any:
        self.takes += 1
        return super().take(now_us, everything)


@pytest.mark.parametrize("agents", [1, 2], ids=["one transaction", "two side by side"])
async def test_readings_stay_held_while_the_database_does_not_answer(
    caplog: pytest.LogCaptureFixture, agents: int
) -> None:
    pool: Any = AsyncConnectionPool(
        "postgresql://plantwire@127.0.0.1:1/none", min_size=1, max_size=1, timeout=0.2, open=False
    )
    await pool.open(wait=False)
    held = CountedTakes()
    for number in range(1, agents + 1):
        held.add((f"a{number}", 1, 1), columns(number, 0))
    writer = RollupWriter(pool, held, 0.1, now_us=lambda: NOW_US, part_readings=1)
    try:
        with caplog.at_level(logging.ERROR):
            task = asyncio.create_task(writer.run())
            try:

                async def tried_thrice() -> bool:
                    return held.takes >= 3

                await eventually(tried_thrice, timeout=10, what="three tries")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with caplog.at_level(logging.WARNING):
                await writer.flush()  # at a stop: left to the claims
    finally:
        await pool.close()
    assert caplog.text.count("cannot roll up held readings") == 1  # once while it lasts
    assert "held readings left to the deriver at the stop" in caplog.text
    assert held.readings == 2 * agents  # not lost: written once the database answers


async def test_a_batch_without_numbers_leaves_no_rollup_and_no_claim(
    db_pool: Any, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO rollup_claims (agent_id, epoch, batch_id, lo, hi)"
            " VALUES ('a1', 1, 1, now(), now())"
        )
    held = HeldReadings()
    assert await RollupWriter(db_pool, held, 1.0).write() == 0  # nothing held
    held.add(("a1", 1, 1), Columns.empty())  # only text readings
    assert await RollupWriter(db_pool, held, 1.0).write() == 0
    assert await parts(database_url) == []
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM rollup_claims")
        assert await cursor.fetchone() == (0,)


async def test_lanes_stopped_before_they_began_hold_their_readings_again(db_pool: Any) -> None:
    held = HeldReadings()
    for number in (1, 2):
        held.add((f"a{number}", 1, 1), columns(number, 0))
    writer = RollupWriter(db_pool, held, 1.0, now_us=lambda: NOW_US, part_readings=1)
    task = asyncio.create_task(writer.write())
    await asyncio.sleep(0)  # taken out, two lanes started, neither has run yet
    assert held.readings == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held.readings == 4  # held again, for the next write or the stop
    assert await writer.write() == 2


async def test_writers_of_one_agent_take_turns_and_an_earlier_releases_writer_all(
    db_pool: Any, database_url: str
) -> None:
    async def written(agent: int) -> bool:
        held = HeldReadings()
        held.add((f"a{agent}", 1, 1), columns(agent, 0))
        writer = RollupWriter(db_pool, held, 1.0, now_us=lambda: NOW_US)
        try:
            return await asyncio.wait_for(writer.write(), 1.0) == 1
        except TimeoutError:
            return False

    async with await psycopg.AsyncConnection.connect(database_url) as other:
        async with other.transaction():  # another collector writing agent a1's batches
            await other.execute(
                "SELECT pg_advisory_xact_lock(%s::int4, hashtext('a1'))", [WRITER_KEY]
            )
            assert not await written(1)
            assert await written(2)
        assert await written(1)
        async with other.transaction():  # an earlier release's writer: one at a time
            await other.execute("SELECT pg_advisory_xact_lock(%s)", [WRITER_KEY])
            assert not await written(3)
        assert await written(3)


async def test_a_woken_deriver_passes_at_once(db_pool: Any) -> None:
    metrics = CollectorMetrics()
    settings = AnalyticsSettings(derive_interval="3600s")

    async def nothing(conn: Any, work: Any) -> int:
        return 0

    deriver = Deriver(db_pool, settings, metrics, nothing)
    task = asyncio.create_task(deriver.run())

    def passes() -> float:
        return float(sum(bucket.get() for bucket in metrics.derive_seconds._buckets))

    try:

        async def first() -> bool:
            return passes() == 1

        await eventually(first, timeout=10, what="the first pass")
        deriver.wake()

        async def second() -> bool:
            return passes() == 2

        await eventually(second, timeout=10, what="a pass when woken")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
