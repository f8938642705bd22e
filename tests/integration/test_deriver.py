"""The deriver against real PostgreSQL: machine intervals and counts, late data, model changes."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.analytics import deriver as deriver_module
from collector.analytics.deriver import END_OF_TIME, LOCK_KEY, PASS_KEY, Deriver, utc_now
from collector.analytics.equipment import Machine, Plant
from collector.analytics.equipment_store import CONFIG_FILE, EquipmentStore
from collector.analytics.held_readings import HeldReadings
from collector.analytics.machine_store import Rederivation, machines_of, rederive
from collector.config import AnalyticsSettings, IngestSettings
from collector.consumer import batch_decoder
from collector.metrics import CollectorMetrics
from collector.pools import new_pool
from collector.store import ReadingStore
from shared.readings import DataType, Quality, Reading
from shared.wire import Topics, encode_batch
from tests.harness import RecordedRollups, eventually

pytestmark = pytest.mark.integration
DECODER = batch_decoder(IngestSettings())
TOPICS = Topics()
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
US = 1_000_000


def machine(agent: str) -> dict[str, Any]:
    def tag(name: str, **more: Any) -> dict[str, Any]:
        return {"tag": f"press/{name}", "agent": agent, **more}

    return {
        "id": f"press-{agent}",
        "area": "pressing",
        "line": "line-1",
        "state": tag("state"),
        "reason": tag("reason"),
        "good": tag("good", rollover=65536),
        "scrap": tag("scrap"),
        "product": tag("product"),
    }


PLANT = Plant.model_validate(
    {
        "sites": [
            {
                "id": "plant-1",
                "time_zone": "Europe/Berlin",
                "areas": [{"id": "pressing", "lines": [{"id": "line-1"}]}],
                "calendar": {"shifts": []},
                "loss_mapping": {
                    "states": [
                        {"name": "running", "values": [1], "element": "production"},
                        {"name": "down", "values": [3], "element": "delay"},
                    ]
                },
                "machines": [machine("a1"), machine("a2")],
            }
        ]
    }
)
TYPES = {
    "state": DataType.UINT16,
    "reason": DataType.UINT16,
    "good": DataType.UINT16,
    "scrap": DataType.UINT32,
    "product": DataType.STRING,
}
# (seconds after T0, tag, value): a shift's first minutes, with a 16-bit wrap and a reset.
SCRIPT: list[tuple[float, str, Any]] = [
    (0, "product", "A"),
    (0, "state", 1),
    (0, "good", 65000),
    (0, "scrap", 0),
    (50, "good", 65500),
    (70, "state", 3),
    (70, "reason", 5),
    (70, "good", 100),  # wrapped: 36 + 100 = 136
    (130, "state", 1),
    (150, "product", "B"),
    (200, "good", 130),
    (200, "scrap", 2),
    (260, "good", 5),  # a reset: 5
    (300, "state", 3),
]


def batch(agent: str, batch_id: int, entries: Sequence[tuple[float, str, Any]]) -> Any:
    readings = [
        Reading("press", tag, TYPES[tag], int((T0.timestamp() + s) * US), value, Quality.GOOD)
        for s, tag, value in entries
    ]
    seqs = list(range(batch_id * 100, batch_id * 100 + len(readings)))
    payload = encode_batch(agent, 1, seqs, readings)
    return DECODER.decode(payload, agent, TOPICS.batch(agent))


Rollups = RecordedRollups


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[AsyncConnection[TupleRow]]]:
    pool = new_pool(database_url, 3)
    await pool.open(wait=True, timeout=10)
    try:
        await EquipmentStore(pool).seed(PLANT)
        yield pool
    finally:
        await pool.close()


def deriver(pool: Any, rollups: Rollups, now: datetime, **settings: Any) -> Deriver:
    return Deriver(pool, AnalyticsSettings(**settings), CollectorMetrics(), rollups, lambda: now)


def stored(url: str, agent: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        spans = conn.execute(
            "SELECT start_ts, end_ts, state, reason, product FROM machine_intervals"
            " WHERE machine = %s ORDER BY start_ts",
            [f"press-{agent}"],
        ).fetchall()
        counts = conn.execute(
            "SELECT minute, product, good, scrap FROM machine_counts WHERE machine = %s"
            " ORDER BY minute, product",
            [f"press-{agent}"],
        ).fetchall()
    return spans, counts


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


EXPECTED_SPANS = [
    (s(0), s(70), 1, None, "A"),
    (s(70), s(130), 3, 5, "A"),
    (s(130), s(150), 1, 5, "A"),
    (s(150), s(300), 1, 5, "B"),
    (s(300), None, 3, 5, "B"),
]
EXPECTED_COUNTS = [
    (s(0), "A", 500.0, 0.0),  # 65000 -> 65500
    (s(60), "A", 136.0, 0.0),  # wrapped at 70 s
    (s(180), "B", 30.0, 2.0),  # 100 -> 130, scrap 0 -> 2
    (s(240), "B", 5.0, 0.0),  # reset to 5
]


async def test_intervals_and_counts_are_the_same_whether_data_came_on_time_or_late(
    pool: Any, database_url: str
) -> None:
    store = ReadingStore(pool)
    rollups = Rollups()
    # a1: on time, a pass after each part. a2: the second half first, the first half late.
    first, second = SCRIPT[:8], SCRIPT[8:]
    await store.write([batch("a1", 1, first)])
    await deriver(pool, rollups, s(100)).pass_once()
    partial = stored(database_url, "a1")
    assert partial[0][-1] == (s(70), None, 3, 5, "A"), "the stop goes on so far"
    await store.write([batch("a1", 2, second)])
    await deriver(pool, rollups, s(400)).pass_once()
    await store.write([batch("a2", 1, second)])
    await deriver(pool, rollups, s(400)).pass_once()
    await store.write([batch("a2", 2, first)])  # a late backlog
    assert await deriver(pool, rollups, s(400)).pass_once() == 1
    assert stored(database_url, "a1") == (EXPECTED_SPANS, EXPECTED_COUNTS)
    assert stored(database_url, "a2") == (EXPECTED_SPANS, EXPECTED_COUNTS)
    assert rollups.asked[0][1:] == (s(0), s(60)), "only ended minutes are rolled up"


async def test_writes_in_the_running_minute_stay_logged_until_it_ends(
    pool: Any, database_url: str
) -> None:
    await ReadingStore(pool).write([batch("a1", 1, SCRIPT[:6])])  # 0 s to 70 s
    rollups = Rollups()
    assert await deriver(pool, rollups, s(65)).pass_once() == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT lo, hi FROM derive_log").fetchall() == [(s(60), s(70))]
    assert await deriver(pool, rollups, s(125)).pass_once() == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM derive_log").fetchone() == (0,)
    assert [(start, end) for _, start, end in rollups.asked] == [(s(0), s(60)), (s(60), s(120))]


async def test_a_changed_machine_is_derived_again_from_its_first_reading(
    pool: Any, database_url: str
) -> None:
    await ReadingStore(pool).write([batch("a1", 1, SCRIPT)])
    await deriver(pool, Rollups(), s(400)).pass_once()
    assert stored(database_url, "a1") == (EXPECTED_SPANS, EXPECTED_COUNTS)
    spec = PLANT.sites[0].machines[0].model_dump(exclude={"id"})
    spec["good"]["rollover"] = None  # the wrap is now a reset: 100 counted, not 136
    equipment = EquipmentStore(pool)
    async with pool.connection() as conn, conn.transaction():
        await equipment._write_machine(
            conn, "plant-1", "press-a1", Machine.model_validate(spec), CONFIG_FILE
        )
    assert stored(database_url, "a1") == ([], []), "forgotten until derived again"
    await deriver(pool, Rollups(), s(400)).pass_once()
    counts = stored(database_url, "a1")[1]
    assert counts[1] == (s(60), "A", 100.0, 0.0)


async def test_one_pass_at_a_time_across_collectors(pool: Any, database_url: str) -> None:
    await ReadingStore(pool).write([batch("a1", 1, SCRIPT)])
    other = await psycopg.AsyncConnection.connect(database_url)
    async with other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock(%s)", [PASS_KEY])
        assert await deriver(pool, Rollups(), s(400)).pass_once() == 0
    assert await deriver(pool, Rollups(), s(400)).pass_once() == 1


async def test_a_pass_that_rolls_up_waits_for_a_rollup_writer_and_machines_alone_do_not(
    pool: Any, database_url: str
) -> None:
    await ReadingStore(pool).write([batch("a1", 1, SCRIPT)])
    other = await psycopg.AsyncConnection.connect(database_url)
    async with other:
        async with other.transaction():  # a rollup writer merging its parts holds it shared
            await other.execute("SELECT pg_advisory_xact_lock_shared(%s)", [LOCK_KEY])
            rolling_up = asyncio.create_task(deriver(pool, Rollups(), s(400)).pass_once())
            await asyncio.sleep(0.5)
            assert not rolling_up.done()
        assert await asyncio.wait_for(rolling_up, 10) == 1
        held = ReadingStore(pool, held=HeldReadings())
        await held.write([batch("a1", 2, SCRIPT[:2])])  # held: its rollups are claimed
        async with other.transaction():  # as a rollup writer holds it
            await other.execute("SELECT pg_advisory_xact_lock_shared(%s)", [LOCK_KEY])
            assert await asyncio.wait_for(deriver(pool, Rollups(), s(400)).pass_once(), 10) == 1


async def test_the_loop_goes_on_at_once_while_passes_are_full(pool: Any, database_url: str) -> None:
    store = ReadingStore(pool)
    for number in range(3):
        await store.write([batch("a1", number + 1, SCRIPT[number * 4 : number * 4 + 4])])
    metrics = CollectorMetrics()
    settings = AnalyticsSettings(derive_max_log_rows=1, derive_interval="3600s")
    loop = Deriver(pool, settings, metrics, Rollups(), lambda: s(400))
    task = asyncio.create_task(loop.run())
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while metrics.derive_pending._value.get() or not metrics.derive_seconds._sum.get():
            assert asyncio.get_running_loop().time() < deadline, "the passes did not go on"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM derive_log").fetchone() == (0,)
    assert utc_now().tzinfo is UTC


async def test_a_late_change_on_a_minute_boundary_and_a_quiet_minute_keep_spans_whole(
    pool: Any, database_url: str
) -> None:
    store = ReadingStore(pool)
    rollups = Rollups()
    await store.write([batch("a1", 1, SCRIPT)])
    await deriver(pool, rollups, s(400)).pass_once()
    await store.write([batch("a1", 2, [(60, "reason", 7)])])  # late, exactly at 06:01
    await deriver(pool, rollups, s(400)).pass_once()
    spans = stored(database_url, "a1")[0]
    assert spans[:3] == [
        (s(0), s(60), 1, None, "A"),
        (s(60), s(70), 1, 7, "A"),
        (s(70), s(130), 3, 5, "A"),
    ]
    await store.write([batch("a1", 3, [(370, "scrap", 2)])])  # no code changes
    rollups.asked.clear()
    assert await deriver(pool, rollups, s(375)).pass_once() == 1
    assert rollups.asked == [], "the running minute waits"
    assert stored(database_url, "a1")[0][-1] == (s(300), None, 3, 5, "B")


async def test_readings_stored_before_the_release_are_derived_a_day_at_a_time(
    postgres_fresh_url: str,
) -> None:
    from collector.analytics.rollups import refresh_rollups
    from collector.migrate import available_migrations, migrate

    async with await psycopg.AsyncConnection.connect(postgres_fresh_url) as conn:
        for migration in available_migrations():
            if migration.version < 7:  # the schema of the release before
                await conn.execute(migration.sql.encode())
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(
            "INSERT INTO schema_migrations (version, name)"
            " SELECT g, 'before' FROM generate_series(1, 6) AS g"
        )
        await conn.execute("INSERT INTO agents (agent_id) VALUES ('a1')")
        await conn.execute(
            "INSERT INTO tags (agent_id, device, name, data_type)"
            " VALUES ('a1', 'press', 'speed', 'float64')"
        )
        # 1 Hz from 2026-03-01 22:00 to 2026-03-03 01:00: three UTC days.
        await conn.execute(
            "INSERT INTO readings (tag_id, ts, value, quality, seq)"
            " SELECT 1, t, 1.0, 0, row_number() OVER () FROM generate_series("
            "'2026-03-01 22:00+00'::timestamptz, '2026-03-03 00:59:59+00', '1 second') AS t"
        )
        await conn.commit()
        assert await migrate(conn) == [m.version for m in available_migrations() if m.version >= 7]
        rows = await (await conn.execute("SELECT lo, hi FROM derive_log ORDER BY lo")).fetchall()
    day = timedelta(days=1)
    first = datetime(2026, 3, 1, 22, tzinfo=UTC)
    assert rows == [
        (first, datetime(2026, 3, 2, tzinfo=UTC) - timedelta(microseconds=1)),
        (
            datetime(2026, 3, 2, tzinfo=UTC),
            datetime(2026, 3, 3, tzinfo=UTC) - timedelta(microseconds=1),
        ),
        (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 3, 0, 59, 59, tzinfo=UTC)),
    ]
    pool = new_pool(postgres_fresh_url, 2)
    await pool.open(wait=True, timeout=10)
    try:
        await deriver(pool, refresh_rollups, first + 2 * day).pass_once()  # type: ignore[arg-type]
    finally:
        await pool.close()
    with psycopg.connect(postgres_fresh_url) as conn:
        minutes = conn.execute("SELECT count(*), sum(count) FROM rollups_1m").fetchone()
        hours = conn.execute("SELECT count(*) FROM rollups_1h").fetchone()
        assert conn.execute("SELECT count(*) FROM derive_log").fetchone() == (0,)
    assert minutes == (27 * 60, 27 * 3600)  # 27 hours, every reading once
    assert hours == (27,)


async def test_a_long_backlog_is_derived_a_slice_at_a_time(
    pool: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deriver_module, "SLICE_READINGS", 6)
    await ReadingStore(pool).write([batch("a1", 1, SCRIPT)])
    passes = 0
    while passes < 10:
        passes += 1
        await deriver(pool, Rollups(), s(400)).pass_once()
        with psycopg.connect(database_url) as conn:
            waiting = conn.execute("SELECT lo FROM derive_machines").fetchall()
        if not waiting:
            break
        assert waiting[0][0] == [s(60), s(180)][passes - 1], "the 7th reading's minute"
    # Readings at 0 s (4), 50 s, 70 s (3): the 7th, at 70 s, starts the next slice on its
    # minute (60 s). From 60 s: 70 s (3), 130, 150, 200 s (2): the 7th at 200 s, minute 180 s.
    # From 180 s only 4 are left.
    assert passes == 3
    assert stored(database_url, "a1") == (EXPECTED_SPANS, EXPECTED_COUNTS)


async def test_a_state_whose_readings_were_dropped_is_kept_from_the_stored_span(
    pool: Any, database_url: str
) -> None:
    store = ReadingStore(pool)
    await store.write([batch("a1", 1, SCRIPT)])
    await deriver(pool, Rollups(), s(400)).pass_once()
    with psycopg.connect(database_url) as conn:  # retention took the first minute's readings
        conn.execute("DELETE FROM readings WHERE ts < %s", [s(60)])
    await store.write([batch("a1", 2, [(65, "scrap", 0)])])
    await deriver(pool, Rollups(), s(400)).pass_once()
    assert stored(database_url, "a1")[0] == EXPECTED_SPANS


async def test_readings_without_a_count_and_machines_without_a_state(
    pool: Any, database_url: str
) -> None:
    store = ReadingStore(pool)
    await store.write([batch("a1", 1, SCRIPT)])
    # A scrap reading of another type that holds no number: left out, not a reset.
    nan = Reading("press", "scrap", DataType.FLOAT64, int(s(310).timestamp() * US), float("nan"))
    payload = encode_batch("a1", 1, [900], [nan])
    await store.write([DECODER.decode(payload, "a1", TOPICS.batch("a1"))])
    await store.write([batch("a2", 2, [(10, "good", 5), (20, "good", 9)])])  # counts only
    await deriver(pool, Rollups(), s(400)).pass_once()
    assert stored(database_url, "a1") == (EXPECTED_SPANS, EXPECTED_COUNTS)
    assert stored(database_url, "a2") == ([], [(s(0), "", 4.0, 0.0)])


async def test_a_machines_only_pass_keeps_clear_of_a_previous_releases_pass(
    pool: Any, database_url: str
) -> None:
    # During a rolling upgrade the previous release's pass takes LOCK_KEY as its only lock and
    # derives machines. A pass of this release that only derives machines takes it shared, so
    # it waits rather than replace the same machine's spans at the same time.
    await ReadingStore(pool, held=HeldReadings()).write([batch("a1", 1, SCRIPT)])
    key = ("plant-1", "press-a1")
    old = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await old.execute("SET TIME ZONE 'UTC'")
    probe = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with old, probe:
        async with old.transaction():
            locked = await (
                await old.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
            ).fetchone()
            assert locked == (True,)
            tags = await machines_of(old, [key])
            await rederive(old, [Rederivation(key, tags[key], T0, END_OF_TIME)])
            passing = asyncio.create_task(deriver(pool, Rollups(), s(400)).pass_once())

            async def skipped_or_waiting() -> bool:
                row = await (
                    await probe.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                ).fetchone()
                return passing.done() or (row is not None and row[0] > 0)

            await eventually(skipped_or_waiting, timeout=10, what="the new pass to run or wait")
        await asyncio.wait_for(passing, 10)  # no UniqueViolation on machine_intervals
    await deriver(pool, Rollups(), s(400)).pass_once()
    assert stored(database_url, "a1") == (EXPECTED_SPANS, EXPECTED_COUNTS)


async def test_a_tag_that_plays_two_parts_is_read_once_for_each(
    pool: Any, database_url: str
) -> None:
    spec = PLANT.sites[0].machines[1].model_dump(exclude={"id"})  # press-a2
    spec["reason"] = spec["state"]  # one status word as state and reason
    spec["good"] = {"tag": "press/good", "agent": "a2", "kind": "delta"}
    spec["product"] = {"tag": "press/good", "agent": "a2"}  # and as the product, oddly
    async with pool.connection() as conn, conn.transaction():
        await EquipmentStore(pool)._write_machine(
            conn, "plant-1", "press-a2", Machine.model_validate(spec), CONFIG_FILE
        )
    entries = [(0, "state", 1), (10, "good", 5), (20, "good", 9), (70, "state", 3)]
    await ReadingStore(pool).write([batch("a2", 1, entries)])
    await deriver(pool, Rollups(), s(400)).pass_once()
    spans, counts = stored(database_url, "a2")
    assert spans == [
        (s(0), s(10), 1, 1, None),
        (s(10), s(20), 1, 1, "5"),
        (s(20), s(70), 1, 1, "9"),
        (s(70), None, 3, 3, "9"),
    ]
    # Each count once (never 28), for the product in force before it.
    assert counts == [(s(0), "", 5.0, 0.0), (s(0), "5", 9.0, 0.0)]


async def test_codes_and_counts_read_again_unchanged_derive_as_their_changes(
    pool: Any, database_url: str
) -> None:
    polled: list[tuple[float, str, Any]] = []
    polled += [(t, "state", 3 if 40 <= t < 70 else 1) for t in range(0, 100, 10)]
    polled += [(t, "product", "A") for t in range(0, 100, 10)]
    polled += [(t, "good", (65534 + t // 20) % 65536) for t in range(0, 100, 5)]  # wraps at 40 s
    changes: list[tuple[float, str, Any]] = []
    changes += [(0, "state", 1), (0, "product", "A"), (40, "state", 3), (70, "state", 1)]
    changes += [(t, "good", (65534 + t // 20) % 65536) for t in range(0, 100, 20)]
    await ReadingStore(pool).write([batch("a1", 1, polled), batch("a2", 1, changes)])
    await deriver(pool, Rollups(), s(400)).pass_once()
    expected = [
        (s(0), s(40), 1, None, "A"),
        (s(40), s(70), 3, None, "A"),
        (s(70), None, 1, None, "A"),
    ]
    assert stored(database_url, "a1") == stored(database_url, "a2")
    spans, counts = stored(database_url, "a1")
    assert spans == expected
    assert counts == [(s(0), "A", 2.0, 0.0), (s(60), "A", 2.0, 0.0)]


async def test_versions_of_a_state_tag_taking_turns_keep_every_change(
    pool: Any, database_url: str
) -> None:
    """A state tag whose type changes back and forth: each version's readings repeat its own
    last value, yet each is a change of the machine's state."""

    def state(seconds: float, data_type: DataType, value: int) -> Reading:
        return Reading(
            "press", "state", data_type, int((T0.timestamp() + seconds) * US), value, Quality.GOOD
        )

    readings = [
        state(0, DataType.UINT16, 1),
        state(10, DataType.UINT16, 1),
        state(20, DataType.INT32, 3),
        state(30, DataType.UINT16, 1),
        state(40, DataType.INT32, 3),
    ]
    payload = encode_batch("a1", 1, list(range(1, 6)), readings)
    await ReadingStore(pool).write([DECODER.decode(payload, "a1", TOPICS.batch("a1"))])
    await deriver(pool, Rollups(), s(400)).pass_once()
    spans = [span[:3] for span in stored(database_url, "a1")[0]]
    assert spans == [(s(0), s(20), 1), (s(20), s(30), 3), (s(30), s(40), 1), (s(40), None, 3)]


def state_events_stored(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT subject, body->'state', body->>'since' FROM events"
            " WHERE kind = 'machine.state' ORDER BY id"
        ).fetchall()


async def test_a_pass_that_changes_a_machines_current_state_appends_one_event(
    pool: Any, database_url: str
) -> None:
    store = ReadingStore(pool)
    await store.write([batch("a1", 1, SCRIPT)])
    await deriver(pool, Rollups(), s(400)).pass_once()
    latest = EXPECTED_SPANS[-1]
    assert state_events_stored(database_url) == [
        ("plant-1/press-a1", latest[2], latest[0].isoformat())
    ]
    # Derived again with nothing new for its state: no second event.
    await store.write([batch("a1", 2, [(290, "good", 7)])])
    await deriver(pool, Rollups(), s(400)).pass_once()
    assert len(state_events_stored(database_url)) == 1
    await store.write([batch("a1", 3, [(350, "state", 1)])])
    await deriver(pool, Rollups(), s(400)).pass_once()
    assert state_events_stored(database_url)[1:] == [("plant-1/press-a1", 1, s(350).isoformat())]
