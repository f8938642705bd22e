"""Rollup parts against a real PostgreSQL: summarised in the collector, merged by the deriver,
equal to the rollups the stored readings give, also with late readings and lost parts."""

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.analytics.buckets import parse_interval
from collector.analytics.deriver import Deriver
from collector.analytics.held_readings import HeldReadings
from collector.analytics.readings_source import ReadingsSource, SeriesRequest
from collector.analytics.rollup_source import RollupSource
from collector.analytics.rollup_writer import LANES, PART_READINGS, RollupWriter
from collector.analytics.rollups import refresh_rollups
from collector.analytics.timespans import MINUTE
from collector.config import AnalyticsSettings, IngestSettings
from collector.consumer import batch_decoder
from collector.metrics import CollectorMetrics
from collector.replica import ReadPools
from collector.store import ReadingStore
from shared.readings import DataType, Quality, Reading
from shared.wire import Topics, encode_batch
from tests.harness import RecordedRollups

pytestmark = pytest.mark.integration
DECODER = batch_decoder(IngestSettings())
TOPICS = Topics()
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)  # every minute of the readings has ended by then
US = 1_000_000
TYPES = {"speed": DataType.FLOAT64, "count": DataType.INT64, "recipe": DataType.STRING}
GOOD, BAD = Quality.GOOD, Quality.BAD
Entry = tuple[float, str, Any, Quality]
"""(seconds after T0, tag, value, quality)."""
ROLLUP_COLUMNS = (
    "tag_id, bucket, count, good, numbers, first_ts, first_value, last_ts, last_value, total,"
    " low, low_ts, high, high_ts, step_area, linear_area, increase, span_lo, span_hi"
)


_next_seq = [1]


@pytest.fixture(autouse=True)
def _sequence_from_one() -> None:
    _next_seq[0] = 1


def batch(
    batch_id: int, entries: Sequence[Entry], first_seq: int | None = None, agent: str = "a1"
) -> Any:
    """Batch `batch_id` (for the reader) of `agent`; its sequence numbers from `first_seq`,
    else following the previous batch's, as an agent numbers them."""
    readings = [
        Reading("press", tag, TYPES[tag], int((T0.timestamp() + s) * US), value, quality)
        for s, tag, value, quality in entries
    ]
    first = _next_seq[0] if first_seq is None else first_seq
    _next_seq[0] = first + len(readings)
    seqs = list(range(first, first + len(readings)))
    payload = encode_batch(agent, 1, seqs, readings)
    return DECODER.decode(payload, agent, TOPICS.batch(agent))


# Minutes 0 to 2 of speed and count, with what a plant sends besides plain numbers: two
# readings at one time (ordered by sequence number), NaN, a bad reading without a value, a
# PLC's "no value" sentinel, a count too wide for a double (sent as text), and text values.
FIRST: list[Entry] = [
    (0, "speed", 10.0, GOOD),
    (0, "count", 2**53 + 1, GOOD),
    (0, "recipe", "R1", GOOD),
    (15, "speed", 12.5, GOOD),
    (15, "speed", 11.0, GOOD),
    (20, "speed", math.nan, GOOD),
    (30, "speed", None, BAD),
    (40, "speed", 1.7e308, GOOD),
    (45, "count", 2**53 + 9, Quality.UNCERTAIN),
    (59.999999, "speed", 9.0, GOOD),
    (60, "speed", 9.5, GOOD),
    (61, "count", 7, GOOD),  # a reset
    (90, "speed", 14.0, GOOD),
    (125, "speed", 3.0, GOOD),
    (130, "recipe", "R2", GOOD),
]
# In time order after FIRST: minute 2 gets a second part, minutes 3 and 4 new rows.
SECOND: list[Entry] = [
    (140, "speed", 4.0, GOOD),
    (150, "count", 9, GOOD),
    (170, "speed", None, BAD),
    (200, "speed", 6.0, GOOD),
    (260, "count", 12, GOOD),
    (330, "speed", None, BAD),  # minute 5: a reading, but no number
]


class Plant:
    """A collector's store holding its readings, its rollup writer and a deriver."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]],
        url: str,
        clock: Callable[[], float] = time.monotonic,
        part_readings: int = PART_READINGS,
        lanes: int = LANES,
    ) -> None:
        self.url = url
        self.held = HeldReadings(clock=clock)
        self.store = ReadingStore(pool, held=self.held)
        self.redone = RecordedRollups(real=True)
        self.writer = RollupWriter(
            pool,
            self.held,
            1.0,
            now_us=lambda: int(LATER.timestamp() * US),
            refresh=self.redone,
            part_readings=part_readings,
            lanes=lanes,
        )
        self.deriver = Deriver(
            pool, AnalyticsSettings(), CollectorMetrics(), self.redone, lambda: LATER
        )

    async def rollups(self) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            cursor = await conn.execute(
                f"SELECT {ROLLUP_COLUMNS} FROM rollups_1m ORDER BY tag_id, bucket"  # noqa: S608
            )
            minutes = await cursor.fetchall()
            cursor = await conn.execute(
                f"SELECT {ROLLUP_COLUMNS} FROM rollups_1h ORDER BY tag_id, bucket"  # noqa: S608
            )
            return minutes + await cursor.fetchall()

    async def from_readings(self) -> list[tuple[Any, ...]]:
        """The rollups redone from the stored readings, over every minute they cover."""
        async with (
            await psycopg.AsyncConnection.connect(self.url) as conn,
            conn.transaction(),
        ):
            cursor = await conn.execute("SELECT tag_id FROM tags")
            ids = [row[0] for row in await cursor.fetchall()]
            await refresh_rollups(conn, [(ids, T0 - MINUTE, T0 + timedelta(hours=2))])
        return await self.rollups()

    async def claims(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            cursor = await conn.execute("SELECT count(*) FROM rollup_claims")
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])


def same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    """Rows equal, floats to the last bits (sums may add in another order)."""
    names = [name.strip() for name in ROLLUP_COLUMNS.split(",")]
    assert len(got) == len(want)
    for row, expected in zip(got, want, strict=True):
        for name, value, wanted in zip(names, row, expected, strict=True):
            if isinstance(wanted, float):
                assert value == pytest.approx(wanted, rel=1e-12, abs=1e-9), (name, row, expected)
            else:
                assert value == wanted, (name, row, expected)


@pytest.fixture
def plant(db_pool: Any, database_url: str) -> Plant:
    return Plant(db_pool, database_url)


async def tag_id(url: str, name: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT tag_id FROM tags WHERE name = %s", [name])
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def test_parts_in_time_order_merge_into_the_rollups_the_readings_give(plant: Plant) -> None:
    await plant.store.write([batch(1, FIRST)])
    assert plant.held.readings == 13  # the two text values are not rolled up
    assert await plant.claims() == 1
    # speed in minutes 0, 1 and 2, count in minutes 0 and 1: five parts.
    assert await plant.writer.write() == 5
    assert await plant.claims() == 0
    assert await plant.deriver.pass_once() == 1  # the logged write, for the machines
    await plant.store.write([batch(2, SECOND[:3])])
    await plant.store.write([batch(3, SECOND[3:])])
    # Rolled up together: speed 2, 3, 5 and count 2, 4.
    assert await plant.writer.write() == 5
    assert plant.redone.asked == [], "nothing overlapped: every part merged"
    assert await plant.claims() == 0
    merged = await plant.rollups()
    assert len(merged) == 5 + 4 + 2  # speed's minutes 0-3 and 5, count's 0-2 and 4, an hour each
    speed = await tag_id(plant.url, "speed")
    minute_0 = next(row for row in merged if row[:2] == (speed, T0))
    # 10 at 0 s, 12.5 and 11 at 15 s, 9 at 59.999999 s; NaN, the sentinel and the missing
    # value are readings without a number: count 7, numbers 4.
    assert minute_0[2:5] == (7, 6, 4)
    assert minute_0[9] == 10 + 12.5 + 11 + 9
    # Steps: 10 x 15 s + 12.5 x 0 s + 11 x 44.999999 s.
    assert minute_0[14] == pytest.approx(10 * 15 + 11 * 44.999999)
    same(merged, await plant.from_readings())


@pytest.mark.parametrize("lanes", [1, 2], ids=["parts in turn", "lanes side by side"])
async def test_agents_summarised_a_part_at_a_time_give_the_same_rollups(
    db_pool: Any, database_url: str, lanes: int
) -> None:
    plant = Plant(db_pool, database_url, part_readings=4, lanes=lanes)  # an agent a part
    await plant.store.write([batch(1, FIRST), batch(1, FIRST, 1, agent="a2")])
    assert await plant.writer.write() == 2 * 5
    await plant.store.write([batch(2, SECOND), batch(2, SECOND, len(FIRST) + 1, agent="a2")])
    assert await plant.writer.write() == 2 * 5
    assert plant.redone.asked == [], "nothing overlapped: every part merged"
    same(await plant.rollups(), await plant.from_readings())


async def test_a_late_reading_inside_a_summarised_minute_redoes_it_from_the_readings(
    plant: Plant,
) -> None:
    await plant.store.write([batch(1, FIRST), batch(2, SECOND)])
    await plant.writer.write()
    # Late: inside speed's minute 1 (spans 60-90 s), and a minute before all the others.
    await plant.store.write([batch(3, [(75, "speed", 100.0, GOOD), (-30, "speed", 1.0, GOOD)])])
    await plant.writer.write()
    speed = await tag_id(plant.url, "speed")
    assert plant.redone.asked == [([speed], T0 + MINUTE, T0 + 2 * MINUTE)]
    same(await plant.rollups(), await plant.from_readings())


async def test_rollups_stored_before_parts_existed_are_redone_when_a_part_comes(
    plant: Plant,
) -> None:
    await plant.store.write([batch(1, FIRST)])
    await plant.writer.write()
    async with await psycopg.AsyncConnection.connect(plant.url) as conn:
        await conn.execute(
            "UPDATE rollups_1m SET span_lo = NULL, span_hi = NULL WHERE bucket = %s",
            [T0 + 2 * MINUTE],
        )
    await plant.store.write([batch(2, SECOND)])
    await plant.writer.write()
    speed = await tag_id(plant.url, "speed")
    # Speed's minute 2: stored (its span unknown) and a new part. Count had no minute 2.
    assert plant.redone.asked == [([speed], T0 + 2 * MINUTE, T0 + 3 * MINUTE)]
    same(await plant.rollups(), await plant.from_readings())


async def test_a_claim_left_by_a_stopped_collector_is_rolled_up_from_the_readings(
    plant: Plant, database_url: str
) -> None:
    await plant.store.write([batch(1, FIRST)])
    # The collector holding the readings stops before writing their parts.
    deriver = Deriver(
        plant.store.pool,
        AnalyticsSettings(),
        CollectorMetrics(),
        plant.redone,
        lambda: LATER,
        claim_timeout_s=0,
    )
    assert await deriver.pass_once() == 2  # the logged write and the claim left
    tags = sorted([await tag_id(database_url, name) for name in TYPES])
    assert plant.redone.asked == [(tags, T0, T0 + 3 * MINUTE)]  # the batch's, as logged
    assert await plant.claims() == 0
    want = await plant.from_readings()
    # Had it only been slow, it rolls up now: its parts overlap the rows made from the same
    # readings, so those minutes are redone, not counted twice.
    plant.redone.asked.clear()
    assert await plant.writer.write() == 5
    assert len(plant.redone.asked) == 5
    same(await plant.rollups(), want)


async def test_a_claim_younger_than_the_timeout_waits_for_its_parts(plant: Plant) -> None:
    await plant.store.write([batch(1, FIRST)])
    assert await plant.deriver.pass_once() == 1  # the logged write, for the machines only
    assert plant.redone.asked == []
    assert await plant.claims() == 1


async def test_a_series_reads_what_a_collector_still_holds_from_the_readings(
    plant: Plant, db_pool: Any
) -> None:
    await plant.store.write([batch(1, FIRST)])
    await plant.writer.write()
    await plant.store.write([batch(2, SECOND)])  # held: claimed, not rolled up yet
    speed = await tag_id(plant.url, "speed")
    reads = ReadPools(db_pool)
    asked = SeriesRequest(
        [speed], False, parse_interval("PT1M"), ZoneInfo("UTC"), T0, T0 + 10 * MINUTE, True, True
    )
    held = await RollupSource(reads).summaries(asked)
    raw = await ReadingsSource(reads).summaries(asked)
    assert held.source == "rollups_1m"  # minutes 0 and 1 from the rollups, the rest raw
    assert [s.key for s in held.summaries] == [s.key for s in raw.summaries]
    # Speed's readings in minutes 0 (7 with those without a number), 1, 2, 3 and 5.
    assert [s.count for s in held.summaries] == [7, 2, 3, 1, 1]
    await plant.writer.write()
    rolled = await RollupSource(reads).summaries(asked)
    assert [s.count for s in rolled.summaries] == [7, 2, 3, 1, 1]


async def test_an_hour_made_from_a_minute_of_unknown_span_has_no_span_and_is_redone(
    plant: Plant,
) -> None:
    await plant.store.write([batch(1, [(5, "speed", 1.0, GOOD), (125, "speed", 4.0, GOOD)])])
    await plant.writer.write()
    speed = await tag_id(plant.url, "speed")
    async with await psycopg.AsyncConnection.connect(plant.url) as conn:
        # Minute 0 as stored before spans were kept; its hour redone from the minutes.
        await conn.execute(
            "UPDATE rollups_1m SET span_lo = NULL, span_hi = NULL WHERE bucket = %s", [T0]
        )
        await refresh_rollups(conn, [([speed], T0 + 2 * MINUTE, T0 + 3 * MINUTE)])
        cursor = await conn.execute("SELECT span_lo, span_hi FROM rollups_1h")
        assert await cursor.fetchall() == [(None, None)]
    # A late reading in minute 1: between the two, so the hour cannot be merged, only redone.
    await plant.store.write([batch(2, [(65, "speed", 2.0, GOOD)])])
    await plant.writer.write()
    got, want = await plant.rollups(), await plant.from_readings()
    same(got[1:3], want[1:3])  # minutes 1 and 2
    # The hour: right, with the span left unknown while minute 0's is.
    assert got[3][-2:] == (None, None)
    same([(*got[3][:-2], None, None)], [(*want[3][:-2], None, None)])


async def test_summaries_that_cannot_be_merged_are_left_to_their_claims(
    plant: Plant, db_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await plant.store.write([batch(1, FIRST)])
    await plant.writer.write()
    await plant.store.write([batch(2, [(75, "speed", 100.0, GOOD)])])  # late: a redo

    async def broken(conn: Any, work: Any) -> int:
        raise psycopg.errors.DataError("value out of range")

    writer = RollupWriter(
        db_pool, plant.held, 1.0, now_us=lambda: int(LATER.timestamp() * US), refresh=broken
    )
    assert await writer.write() == 0
    assert "cannot roll up 1 held batches; left to the deriver" in caplog.text
    assert plant.held.readings == 0
    assert await plant.claims() == 1  # rolled up from the readings once it counts as left


async def test_two_collectors_sharing_an_agents_batches_leave_them_to_the_deriver(
    db_pool: Any, database_url: str
) -> None:
    now = [0.0]
    collectors = [Plant(db_pool, database_url, lambda: now[0]) for _ in range(2)]
    entries = FIRST + SECOND
    # A shared subscription hands the agent's batches to one collector, then the other.
    for number in range(len(entries)):
        if number == 8:
            now[0] += 31  # the ids each collector skips stay missing: a sign
        # One reading each, numbered on from the last: the agent's batches follow each other.
        await collectors[number % 2].store.write(
            [batch(number + 1, [entries[number]], first_seq=number + 1)]
        )
        for collector in collectors:
            await collector.writer.write()
    after = len(entries) + 1
    assert [c.held.holds("a1", 1, after, after) for c in collectors] == [False, False]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM derive_log WHERE rollups")
        left_to_the_deriver = await cursor.fetchone()
    assert left_to_the_deriver == (len(entries) - 8,)  # from the sign on
    await collectors[0].deriver.pass_once()
    # The first ones interleaved (redone from the readings), the rest rolled up by the
    # deriver: every bucket as the readings give it.
    same(await collectors[0].rollups(), await collectors[0].from_readings())


async def test_one_collector_getting_every_batch_holds_them_all(
    db_pool: Any, database_url: str
) -> None:
    now = [0.0]
    plant = Plant(db_pool, database_url, lambda: now[0])
    for number, entry in enumerate(FIRST):
        now[0] += 31  # longer than a gap may last: there is none
        await plant.store.write([batch(number + 1, [entry], first_seq=number + 1)])
    assert await plant.claims() == len(FIRST)
    assert plant.held.readings == 13  # every numeric reading


async def test_a_batch_sent_again_is_not_waited_for(plant: Plant) -> None:
    first = batch(1, FIRST)
    await plant.store.write([first])
    await plant.store.write([first])  # sent again: stored before, nothing more to hold
    await plant.store.write([batch(2, SECOND)])
    # Both batches at once: speed in minutes 0, 1, 2, 3 and 5, count in 0, 1, 2 and 4.
    assert await plant.writer.write() == 9
    assert await plant.claims() == 0
    same(await plant.rollups(), await plant.from_readings())


async def test_batches_after_one_that_could_not_be_written_do_not_wait_for_it(
    plant: Plant,
) -> None:
    pool: Any = AsyncConnectionPool(
        "postgresql://plantwire@127.0.0.1:1/none", min_size=1, max_size=1, timeout=0.2, open=False
    )
    await pool.open(wait=False)
    try:
        with pytest.raises(psycopg.OperationalError):  # the database is away for this one
            await ReadingStore(pool, held=plant.held).write([batch(1, FIRST)])
    finally:
        await pool.close()
    await plant.store.write([batch(2, SECOND)])
    # Only the second batch: speed in minutes 2, 3 and 5, count in 2 and 4.
    assert await plant.writer.write() == 5
