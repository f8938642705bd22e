"""Rollups against a real PostgreSQL: answers from them equal the raw readings' answers."""

import math
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from collector.analytics.buckets import boundaries, parse_interval
from collector.analytics.readings_source import ReadingsSource, SeriesRequest
from collector.analytics.rollup_source import RollupSource
from collector.analytics.rollups import refresh_rollups
from collector.analytics.series import Agg, Bucket, Point, SourceData, Summary, aggregate
from collector.analytics.timespans import MINUTE
from collector.config import CollectorConfig
from collector.replica import ReadPools
from tests.harness import collector_config, get_json, running_collector
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration
UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+05:30: its hours start on half hours of UTC
# Around Berlin's spring change: the local day of 29 March 2026 has 23 hours.
START = datetime(2026, 3, 27, 23, tzinfo=UTC)  # local midnight in Berlin
END = START + timedelta(days=3) - timedelta(hours=1)  # 2026-03-30 00:00 in Berlin
SWITCH = START + timedelta(hours=36, seconds=17)  # the tag's type changes here

Reading = tuple[int, datetime, float | None, str | None, int]
"""tag_id, ts, value, value_text, quality."""


def add_tag(conn: psycopg.Connection[Any], name: str, data_type: str) -> int:
    conn.execute("INSERT INTO agents (agent_id) VALUES ('a1') ON CONFLICT DO NOTHING")
    row = conn.execute(
        "INSERT INTO tags (agent_id, device, name, data_type) VALUES ('a1', 'press', %s, %s)"
        " RETURNING tag_id",
        (name, data_type),
    ).fetchone()
    assert row is not None
    return int(row[0])


def copy_readings(conn: psycopg.Connection[Any], readings: Sequence[Reading]) -> None:
    """COPY readings in, each with its own sequence number (after any stored before)."""
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM readings").fetchone()
    first = int(row[0]) + 1 if row is not None else 1
    with conn.cursor().copy(
        "COPY readings (tag_id, ts, value, value_text, quality, seq) FROM STDIN"
    ) as copy:
        for seq, reading in enumerate(readings, start=first):
            copy.write_row((*reading, seq))


def counter_readings(rng: random.Random, tag: int, start: datetime, end: datetime) -> list[Reading]:
    """A counter that rises and sometimes resets, read at uneven times, with gaps and oddities."""
    out: list[Reading] = []
    at, value = start + timedelta(seconds=rng.uniform(0, 30)), rng.uniform(0, 100)
    while at < end:
        draw = rng.random()
        if draw < 0.03:
            out.append((tag, at, None, None, 2))  # bad: no value
        elif draw < 0.04:
            out.append((tag, at, 1.7e308, None, 0))  # a PLC's no-value sentinel
        elif draw < 0.06:
            value = rng.uniform(0, 5)  # a reset
            out.append((tag, at, None, str(round(value)), 0))  # an integer kept as text
            value = round(value)
        else:
            value += rng.uniform(0, 3)
            out.append((tag, at, value, None, 1 if draw > 0.97 else 0))
        step = rng.choice([0.0, 0.4, 3.0, 20.0, 45.0, 61.0, 170.0])  # 0: same time, next seq
        if rng.random() < 0.0005:
            step = rng.choice([5400.0, 5 * 3600.0])  # gaps of 90 minutes and 5 hours
        at += timedelta(seconds=step)
    return out


@pytest.fixture
def plant(database_url: str) -> tuple[list[int], int]:
    """A counter tag of two numeric versions (float64, then int32) and a text tag, rolled up."""
    rng = random.Random(12)
    with psycopg.connect(database_url) as conn:
        first, second = add_tag(conn, "count", "float64"), add_tag(conn, "count", "int32")
        text = add_tag(conn, "recipe", "string")
        readings = counter_readings(rng, first, START - timedelta(hours=2), SWITCH)
        readings += counter_readings(rng, second, SWITCH, END + timedelta(hours=2))
        readings += [(text, START + timedelta(minutes=m), None, f"R{m}", 0) for m in range(9)]
        copy_readings(conn, readings)
    return [first, second], text


async def refresh(url: str, work: Sequence[tuple[Sequence[int], datetime, datetime]]) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        return await refresh_rollups(conn, work)


@pytest.fixture
async def reads(database_url: str) -> AsyncIterator[ReadPools]:
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        yield ReadPools(pool)


def request(
    ids: Sequence[int],
    text: str,
    zone: ZoneInfo = UTC_ZONE,
    start: datetime = START,
    end: datetime = END,
) -> SeriesRequest:
    return SeriesRequest(ids, False, parse_interval(text), zone, start, end, True, True)


def assert_close(got: object, wanted: object, where: object) -> None:
    if isinstance(wanted, float) and isinstance(got, float):
        assert got == pytest.approx(wanted, rel=1e-9, abs=1e-9), where
    else:
        assert got == wanted, where


def assert_same_summaries(got: SourceData, wanted: SourceData) -> None:
    assert (got.before, got.after) == (wanted.before, wanted.after)
    assert [s.key for s in got.summaries] == [s.key for s in wanted.summaries]
    for mine, theirs in zip(got.summaries, wanted.summaries, strict=True):
        for field in fields(Summary):
            mine_value, their_value = getattr(mine, field.name), getattr(theirs, field.name)
            if isinstance(their_value, Point):
                assert isinstance(mine_value, Point)
                assert mine_value.ts == their_value.ts, (mine.key, field.name)
                assert_close(mine_value.value, their_value.value, (mine.key, field.name))
            else:
                assert_close(mine_value, their_value, (mine.key, field.name))


def assert_same_buckets(got: list[Bucket], wanted: list[Bucket], where: object) -> None:
    assert len(got) == len(wanted), where
    for mine, theirs in zip(got, wanted, strict=True):
        assert (mine.start, mine.end, mine.count, mine.good) == (
            theirs.start,
            theirs.end,
            theirs.count,
            theirs.good,
        ), where
        assert_close(mine.value, theirs.value, (where, mine.start))


async def assert_equal_answers(reads: ReadPools, asked: SeriesRequest, table: str) -> None:
    """The rollups' answer is the raw readings' answer, for every aggregation."""
    raw = await ReadingsSource(reads).summaries(asked)
    rolled = await RollupSource(reads).summaries(asked)
    assert rolled.source == table, asked
    assert raw.summaries, "a comparison of nothing proves nothing"
    assert_same_summaries(rolled, raw)
    aligned = boundaries(asked.interval, asked.zone, asked.start, asked.end, 100_000)
    for agg in Agg:
        assert_same_buckets(
            aggregate(agg, aligned, asked.start, asked.end, rolled),
            aggregate(agg, aligned, asked.start, asked.end, raw),
            (asked.interval.text, asked.zone.key, agg),
        )


REQUESTS: list[tuple[str, ZoneInfo, timedelta, timedelta, str]] = [
    # interval, zone, start and end offsets from START and END, the table that answers
    ("PT1H", UTC_ZONE, timedelta(0), timedelta(0), "rollups_1h"),
    ("PT6H", UTC_ZONE, timedelta(hours=-5), timedelta(hours=1), "rollups_1h"),
    ("P1D", BERLIN, timedelta(0), timedelta(0), "rollups_1h"),  # 24, 23 and 24 hours
    ("P1W", BERLIN, timedelta(0), timedelta(0), "rollups_1h"),
    ("P1M", UTC_ZONE, timedelta(hours=1), timedelta(hours=1), "rollups_1h"),
    ("PT1M", UTC_ZONE, timedelta(hours=10), timedelta(hours=-40), "rollups_1m"),
    ("PT5M", UTC_ZONE, timedelta(minutes=63), timedelta(minutes=-2), "rollups_1m"),
    ("PT1H", KOLKATA, timedelta(0), timedelta(0), "rollups_1m"),
    ("P1D", KOLKATA, timedelta(minutes=30), timedelta(minutes=30), "rollups_1m"),
    ("PT1H", UTC_ZONE, timedelta(minutes=17), timedelta(minutes=-17), "rollups_1m"),
]


async def test_rollup_answers_equal_raw_answers(
    database_url: str, plant: tuple[list[int], int], reads: ReadPools
) -> None:
    ids, _ = plant
    span = (START - timedelta(hours=2), END + timedelta(hours=2))
    written = await refresh(database_url, [(ids, *span)])
    assert written > 2000  # minutes and hours of both versions
    for text, zone, early, late, table in REQUESTS:
        await assert_equal_answers(
            reads, request(ids, text, zone, START + early, END + late), table
        )


async def test_a_late_write_is_in_the_answer_at_once_and_in_the_rollups_once_redone(
    database_url: str, plant: tuple[list[int], int], reads: ReadPools
) -> None:
    ids, _ = plant
    await refresh(database_url, [(ids, START - timedelta(hours=2), END + timedelta(hours=2))])
    late_at = START + timedelta(hours=30, minutes=5, seconds=13)
    late = [
        (ids[0], late_at, 0.5, None, 0),  # a reset in the middle of rolled-up minutes
        (ids[0], late_at + timedelta(seconds=50), 900.0, None, 0),  # a new high
    ]
    daily = request(ids, "P1D", BERLIN)
    with psycopg.connect(database_url) as conn:
        copy_readings(conn, late)
    # Not logged (as if the log were lost): the rollups answer for the head, so they differ.
    rolled = await RollupSource(reads).summaries(daily)
    raw = await ReadingsSource(reads).summaries(daily)
    assert rolled.source == "rollups_1h"
    assert [s.high for s in rolled.summaries] != [s.high for s in raw.summaries]
    # Logged as ingest logs it: the buckets from that one on come from the readings.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO derive_log (tag_ids, lo, hi) VALUES (%s, %s, %s)",
            (ids[:1], late_at, late_at + timedelta(seconds=50)),
        )
    for text, zone, table in [
        ("P1D", BERLIN, "rollups_1h"),
        ("PT1H", UTC_ZONE, "rollups_1h"),
        ("PT1M", UTC_ZONE, "rollups_1m"),
    ]:
        await assert_equal_answers(reads, request(ids, text, zone), table)
    # Redone (the deriver's work) and no longer logged: equal again, all from the rollups.
    hour = late_at - timedelta(minutes=5, seconds=13)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT date_trunc('minute', ts, 'UTC')) FROM readings"
            " WHERE tag_id = %s AND ts >= %s AND ts < %s",
            (ids[0], hour, hour + 60 * MINUTE),
        ).fetchone()
    assert row is not None
    assert await refresh(database_url, [(ids[:1], hour, hour + 60 * MINUTE)]) == row[0] + 1
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM derive_log")
    for text, zone, early, late_offset, table in REQUESTS:
        asked = request(ids, text, zone, START + early, END + late_offset)
        await assert_equal_answers(reads, asked, table)


async def test_a_write_pending_from_before_the_range_leaves_it_all_to_the_readings(
    database_url: str, plant: tuple[list[int], int], reads: ReadPools
) -> None:
    ids, _ = plant
    await refresh(database_url, [(ids, START - timedelta(hours=2), END + timedelta(hours=2))])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO derive_log (tag_ids, lo, hi) VALUES (%s, %s, %s)",
            ([ids[1], 999], START - timedelta(hours=1), END),
        )
    await assert_equal_answers(reads, request(ids, "PT1H"), "readings")
    # A write of another tag holds nothing up.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE derive_log SET tag_ids = '{999}'")
    await assert_equal_answers(reads, request(ids, "PT1H"), "rollups_1h")
    # One logged after the range neither.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE derive_log SET tag_ids = %s, lo = %s", (ids, END))
    await assert_equal_answers(reads, request(ids, "PT1H"), "rollups_1h")


async def test_text_tags_and_unaligned_requests_are_read_raw(
    database_url: str, plant: tuple[list[int], int], reads: ReadPools
) -> None:
    ids, text = plant
    await refresh(database_url, [([*ids, text], START, END)])
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM rollups_1m WHERE tag_id = %s", (text,)).fetchone()
    assert row == (0,), "text tags have no rollups"
    recipe = replace(request([text], "PT1H"), text=True)
    assert (await RollupSource(reads).summaries(recipe)).source == "readings"
    for asked in [
        request(ids, "PT90S"),  # buckets not of whole minutes
        request(ids, "PT1H", start=START + timedelta(seconds=30)),
        request(ids, "PT1M", end=START + timedelta(hours=5, seconds=1)),
    ]:
        rolled = await RollupSource(reads).summaries(asked)
        assert rolled.source == "readings"
        assert_same_summaries(rolled, await ReadingsSource(reads).summaries(asked))


def rollup_rows(url: str, table: str, tag: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT bucket, count, good, numbers, first_ts, first_value, last_ts, last_value,"  # noqa: S608
            f" total, low, low_ts, high, high_ts, step_area, linear_area, increase FROM {table}"
            " WHERE tag_id = %s ORDER BY bucket",
            (tag,),
        ).fetchall()


async def test_minutes_merge_into_hours_with_what_lies_between_them(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tag = add_tag(conn, "count", "uint32")
        at = datetime(2026, 5, 4, 10, tzinfo=UTC)
        copy_readings(
            conn,
            [
                (tag, at + timedelta(seconds=30), 10.0, None, 0),
                (tag, at + timedelta(seconds=75), 20.0, None, 0),
                (tag, at + timedelta(seconds=100), None, None, 2),
                (tag, at + timedelta(minutes=2, seconds=10), None, None, 2),  # a minute of none
                (tag, at + timedelta(minutes=3), 5.0, None, 1),  # a reset
                (tag, at + timedelta(minutes=3, seconds=30), 5.0, None, 0),
            ],
        )
    # 4 minutes and 1 hour
    assert await refresh(database_url, [([tag], at, at + 5 * MINUTE)]) == 5
    s = timedelta(seconds=1)
    assert rollup_rows(database_url, "rollups_1h", tag) == [
        (
            at,
            6,  # readings
            3,  # good ones (quality 0)
            4,  # with a value
            at + 30 * s,
            10.0,
            at + 210 * s,
            5.0,
            40.0,  # 10 + 20 + 5 + 5
            5.0,
            at + 180 * s,  # the low's first time
            20.0,
            at + 75 * s,
            # 10 x 45 s, 20 x 105 s, 5 x 30 s
            450.0 + 2100.0 + 150.0,
            # (10 + 20) / 2 x 45 s, (20 + 5) / 2 x 105 s, 5 x 30 s
            675.0 + 1312.5 + 150.0,
            15.0,  # +10, then a reset to 5, then +0
        )
    ]
    minutes = rollup_rows(database_url, "rollups_1m", tag)
    assert [(row[0], row[1], row[3], row[13], row[15]) for row in minutes] == [
        (at, 1, 1, 0.0, 0.0),
        (at + MINUTE, 2, 1, 0.0, 0.0),  # 10:01:15 = 20, 10:01:40 no value
        (at + 2 * MINUTE, 1, 0, 0.0, 0.0),
        (at + 3 * MINUTE, 2, 2, 150.0, 0.0),  # 5 x 30 s
    ]
    # The readings of a minute deleted: redone, its row goes, and the hour follows.
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM readings WHERE ts >= %s", (at + 3 * MINUTE,))
    assert await refresh(database_url, [([tag], at + 3 * MINUTE, at + 4 * MINUTE)]) == 1
    assert len(rollup_rows(database_url, "rollups_1m", tag)) == 3
    hour = rollup_rows(database_url, "rollups_1h", tag)[0]
    assert (hour[1], hour[7], hour[13], hour[15]) == (4, 20.0, 450.0, 10.0)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM readings")
    assert (
        await refresh(database_url, [([tag], at, at + MINUTE), ([tag], at, at + 5 * MINUTE)]) == 0
    )
    assert rollup_rows(database_url, "rollups_1h", tag) == []


async def test_work_is_of_whole_minutes(database_url: str) -> None:
    at = datetime(2026, 5, 4, 10, tzinfo=UTC)
    for start, end in [(at, at + timedelta(seconds=90)), (at + MINUTE, at), (at, at)]:
        with pytest.raises(ValueError, match="whole minutes"):
            await refresh(database_url, [([1], start, end)])


@pytest.fixture
async def collectors(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str
) -> AsyncIterator[tuple[str, str]]:
    """Two collectors on one database: one reads the rollups, one only raw readings."""

    def config(name: str, derive: bool) -> CollectorConfig:
        return collector_config(
            database_url=database_url,
            mqtt_url=mosquitto.url,
            prefix=topic_prefix,
            client_id=f"{topic_prefix}-{name}",
            sections={
                "analytics": {"derive": derive},
                "database": {"url": database_url, "partition_days_back": 1},
            },
        )

    async with (
        running_collector(config("rolled", True)) as rolled,
        running_collector(config("raw", False)) as raw,
    ):
        yield f"{rolled}/api/v1/series", f"{raw}/api/v1/series"


async def answers(urls: tuple[str, str], **params: str) -> tuple[dict[str, Any], dict[str, Any]]:
    got = []
    for url in urls:
        status, body = await get_json(url, tag="press/count", **params)
        assert status == 200, (params, body)
        got.append(body)
    return got[0], got[1]


def assert_same_pages(rolled: dict[str, Any], raw: dict[str, Any], where: object) -> None:
    assert raw["source"] == "readings"
    assert rolled["count"] == raw["count"] > 0, where
    assert rolled["downsampled"] == raw["downsampled"], where
    for mine, theirs in zip(rolled["buckets"], raw["buckets"], strict=True):
        assert {k: v for k, v in mine.items() if k != "value"} == {
            k: v for k, v in theirs.items() if k != "value"
        }, where
        if isinstance(theirs["value"], float):
            assert mine["value"] == pytest.approx(theirs["value"], rel=1e-9, abs=1e-9), where
        else:
            assert mine["value"] == theirs["value"], where


async def test_the_api_answers_from_rollups_as_from_readings(
    database_url: str,
    plant: tuple[list[int], int],
    collectors: tuple[str, str],
) -> None:
    ids, _ = plant
    await refresh(database_url, [(ids, START - timedelta(hours=2), END + timedelta(hours=2))])
    ranges = {
        "rollups_1h": {"from": START.isoformat(), "to": END.isoformat()},
        "rollups_1m": {
            "from": (START + timedelta(hours=30)).isoformat(),
            "to": (START + timedelta(hours=33, minutes=7)).isoformat(),
        },
    }
    cases: list[tuple[str, dict[str, str]]] = [
        ("rollups_1h", {"interval": "PT1H"}),
        ("rollups_1h", {"interval": "P1D", "tz": "Europe/Berlin"}),
        ("rollups_1h", {"interval": "PT1H", "max_points": "20"}),
        ("rollups_1m", {"interval": "PT1M"}),
        ("rollups_1m", {"interval": "PT1M", "max_points": "50"}),
        ("rollups_1m", {"interval": "PT10M"}),
    ]
    for table, params in cases:
        for agg in Agg:
            for how in ["none", "null", "previous", "linear"]:
                asked = {**ranges[table], **params, "agg": agg.value, "fill": how}
                rolled, raw = await answers(collectors, **asked)
                assert rolled["source"] == table, asked
                assert_same_pages(rolled, raw, asked)


async def test_a_year_by_the_hour_never_reads_raw_rows(
    database_url: str, collectors: tuple[str, str]
) -> None:
    """Every 10 minutes for a year; its readings gone once rolled up, the answer stays."""
    start = datetime(2025, 5, 1, tzinfo=UTC)
    end = start + timedelta(days=365)
    with psycopg.connect(database_url) as conn:
        tag = add_tag(conn, "count", "float64")
        readings: list[Reading] = [
            (tag, start + timedelta(minutes=10 * i), 50 + 40 * math.sin(i / 500) + i % 7, None, 0)
            for i in range(365 * 144)
        ]
        copy_readings(conn, readings)
    assert await refresh(database_url, [([tag], start, end)]) == 365 * (24 * 6 + 24)
    window = {"from": start.isoformat(), "to": end.isoformat(), "interval": "PT1H"}
    charts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for agg in ["max", "min", "twa_step"]:
        charts[agg] = await answers(collectors, **window, agg=agg, max_points="1000")
        assert_same_pages(*charts[agg], agg)
        assert charts[agg][0]["downsampled"] is True
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM readings WHERE ts >= %s AND ts < %s", (start, end))
    for agg, (before, _) in charts.items():
        rolled, raw = await answers(collectors, **window, agg=agg, max_points="1000")
        assert rolled["source"] == "rollups_1h"
        assert rolled == before, agg
        assert raw["count"] == 0
