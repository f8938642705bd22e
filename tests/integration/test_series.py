"""/api/v1/series against a real collector and PostgreSQL, checked against values worked by hand."""

from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from collector.analytics.buckets import boundaries, bucket_key_sql, fixed_origin, parse_interval
from collector.config import CollectorConfig
from tests.harness import get_json, running_collector

pytestmark = pytest.mark.integration
DAY = "2026-05-04T"
HOUR = {"from": f"{DAY}10:00:00Z", "to": f"{DAY}13:00:00Z", "interval": "PT1H"}


@pytest.fixture
async def collector(
    database_url: str, plant_collector_config: Callable[..., CollectorConfig]
) -> AsyncIterator[str]:
    config = plant_collector_config(
        sections={
            "series": {"max_page": 50, "max_downsampled_readings": 500},
            # The readings of these tests stay in readings_default: partition maintenance would
            # move them into daily partitions while the test reads them.
            "database": {"url": database_url, "partition_days_back": 1},
        },
    )
    async with running_collector(config) as base:
        yield f"{base}/api/v1/series"


Row = tuple[str, float | None, int] | tuple[str, float | None, int, str | None]


def add_tag(url: str, name: str, rows: Sequence[Row], data_type: str = "float64") -> None:
    """A tag of device `press` on agent a1 with readings (ts, value, quality[, value_text])."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO agents (agent_id) VALUES ('a1') ON CONFLICT DO NOTHING")
        cursor = conn.execute(
            "INSERT INTO tags (agent_id, device, name, data_type) VALUES ('a1', 'press', %s, %s)"
            " RETURNING tag_id",
            (name, data_type),
        )
        tag_id = (cursor.fetchone() or (0,))[0]
        for seq, row in enumerate(rows, start=1):
            ts, value, quality, *text = row
            conn.execute(
                "INSERT INTO readings (tag_id, ts, value, value_text, quality, seq)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (tag_id, ts, value, text[0] if text else None, quality, seq),
            )
        # Logged as ingest logs a write: not rolled up yet, so series read these raw.
        conn.execute(
            "INSERT INTO derive_log (tag_ids, lo, hi) SELECT ARRAY[%s], min(ts), max(ts)"
            " FROM readings WHERE tag_id = %s",
            (tag_id, tag_id),
        )


TEMPERATURE: list[Row] = [
    (f"{DAY}09:30:00Z", 10.0, 0),  # before the range: carried in
    (f"{DAY}10:15:00Z", 20.0, 0),
    (f"{DAY}10:45:00Z", 40.0, 1),
    (f"{DAY}12:30:00Z", 0.0, 0),
    (f"{DAY}12:40:00Z", None, 2),  # bad: no value, skipped by every aggregate but count
    (f"{DAY}13:30:00Z", 30.0, 0),  # after the range: the line's end
]


async def series(url: str, **params: str) -> list[dict[str, Any]]:
    status, body = await get_json(url, tag="press/temp", **params)
    assert status == 200, body
    return list(body["buckets"])


def values(buckets: list[dict[str, Any]]) -> list[Any]:
    return [bucket["value"] for bucket in buckets]


async def test_plain_aggregates_by_hour(collector: str, database_url: str) -> None:
    add_tag(database_url, "temp", TEMPERATURE)
    buckets = await series(collector, **HOUR, fill="null")
    assert [(b["start"], b["end"]) for b in buckets] == [
        (f"{DAY}10:00:00Z", f"{DAY}11:00:00Z"),
        (f"{DAY}11:00:00Z", f"{DAY}12:00:00Z"),
        (f"{DAY}12:00:00Z", f"{DAY}13:00:00Z"),
    ]
    assert [(b["count"], b["good"]) for b in buckets] == [(2, 0.5), (0, None), (2, 0.5)]
    assert values(buckets) == [30.0, None, 0.0]
    expected = {
        "min": [20.0, None, 0.0],
        "max": [40.0, None, 0.0],
        "sum": [60.0, None, 0.0],
        "count": [2.0, 0.0, 2.0],
        "first": [20.0, None, 0.0],
        "last": [40.0, None, 0.0],
    }
    for agg, wanted in expected.items():
        assert values(await series(collector, **HOUR, agg=agg, fill="null")) == wanted, agg


async def test_time_weighted_averages_carry_the_reading_before_each_bucket(
    collector: str, database_url: str
) -> None:
    add_tag(database_url, "temp", TEMPERATURE)
    # Step: 10:00-10:15 holds 10 (carried in), 10:15-10:45 20, 10:45-11:00 40; 11-12 holds 40;
    # 12:00-12:30 40, 12:30-13:00 0 (the bad reading at 12:40 does not end the hold).
    step = values(await series(collector, **HOUR, agg="twa_step"))
    assert step == pytest.approx([(15 * 10 + 30 * 20 + 15 * 40) / 60, 40.0, (30 * 40) / 60])
    # Linear: 10 at 09:30 to 20 at 10:15 is 16.667 at 10:00; 40 at 10:45 to 0 at 12:30 is
    # 34.286 at 11:00 and 11.429 at 12:00; 0 at 12:30 to 30 at 13:30 is 15 at 13:00.
    at_10, at_11, at_12 = 10 + 10 * 30 / 45, 40 - 40 * 15 / 105, 40 - 40 * 75 / 105
    first = (at_10 + 20) / 2 * 15 + (20 + 40) / 2 * 30 + (40 + at_11) / 2 * 15
    last = at_12 / 2 * 30 + (0 + 15) / 2 * 30
    linear = values(await series(collector, **HOUR, agg="twa_linear"))
    assert linear == pytest.approx([first / 60, (at_11 + at_12) / 2, last / 60])


async def test_a_no_value_sentinel_like_the_largest_double_is_no_value_not_an_overflow(
    collector: str, database_url: str
) -> None:
    add_tag(
        database_url,
        "temp",
        [
            (f"{DAY}10:00:00Z", 1.7e308, 0),
            (f"{DAY}10:30:00Z", 1.7e308, 0),
            (f"{DAY}10:40:00Z", 4.0, 0),
        ],
    )
    for agg in ("count", "max", "avg", "twa_step", "twa_linear", "sum"):
        buckets = await series(collector, **HOUR, agg=agg, fill="null")
        assert buckets[0]["count"] == 3, agg
    assert values(await series(collector, **HOUR, agg="max", fill="null"))[0] == 4.0


async def test_increase_counts_a_drop_as_a_reset(collector: str, database_url: str) -> None:
    add_tag(
        database_url,
        "temp",
        [
            (f"{DAY}09:50:00Z", 100.0, 0),
            (f"{DAY}10:10:00Z", 110.0, 0),  # +10 since the reading before the range
            (f"{DAY}10:40:00Z", 5.0, 0),  # a reset: +5
            (f"{DAY}10:50:00Z", 15.0, 0),  # +10
            (f"{DAY}11:20:00Z", None, 2),
            (f"{DAY}12:10:00Z", 20.0, 0),  # +5 since 10:50
        ],
        data_type="uint32",
    )
    buckets = await series(collector, **HOUR, agg="increase", fill="null")
    assert values(buckets) == [25.0, None, 5.0]
    assert [b["count"] for b in buckets] == [3, 1, 1]


async def test_fill_leaves_out_keeps_null_repeats_or_interpolates(
    collector: str, database_url: str
) -> None:
    add_tag(database_url, "temp", TEMPERATURE)
    assert values(await series(collector, **HOUR)) == [30.0, 0.0]
    previous = await series(collector, **HOUR, fill="previous")
    assert values(previous) == [30.0, 30.0, 0.0]
    assert [b.get("filled", False) for b in previous] == [False, True, False]
    assert values(await series(collector, **HOUR, fill="linear")) == [30.0, 15.0, 0.0]


async def test_a_range_cut_inside_buckets_cuts_its_first_and_last(
    collector: str, database_url: str
) -> None:
    add_tag(database_url, "temp", TEMPERATURE)
    buckets = await series(
        collector,
        **{"from": f"{DAY}10:30:00Z", "to": f"{DAY}12:35:00Z", "interval": "PT1H"},
        agg="twa_step",
    )
    assert [(b["start"], b["end"]) for b in buckets] == [
        (f"{DAY}10:30:00Z", f"{DAY}11:00:00Z"),
        (f"{DAY}11:00:00Z", f"{DAY}12:00:00Z"),
        (f"{DAY}12:00:00Z", f"{DAY}12:35:00Z"),
    ]
    # 10:30-10:45 holds 20 (carried in from 10:15), then 40.
    assert values(buckets) == pytest.approx([(15 * 20 + 15 * 40) / 30, 40.0, 30 * 40 / 35])


def hourly(start: datetime, end: datetime) -> list[Row]:
    hours = int((end - start) / timedelta(hours=1))
    return [((start + timedelta(hours=h)).isoformat(), 1.0, 0) for h in range(hours)]


@pytest.mark.parametrize(
    ("day", "lengths"),
    [("2026-03-29", [24, 23, 24]), ("2026-10-25", [24, 25, 24])],
    ids=["spring-23h", "autumn-25h"],
)
async def test_a_day_in_berlin_has_23_or_25_hours_on_a_dst_change(
    collector: str, database_url: str, day: str, lengths: list[int]
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    middle = datetime.fromisoformat(day).replace(tzinfo=berlin)
    start, end = middle - timedelta(days=1), middle + timedelta(days=2)
    add_tag(database_url, "temp", hourly(start.astimezone(UTC), end.astimezone(UTC)))
    buckets = await series(
        collector,
        **{"from": start.isoformat(), "to": end.isoformat()},
        interval="P1D",
        tz="Europe/Berlin",
        agg="count",
    )
    spans = [
        (datetime.fromisoformat(b["end"]) - datetime.fromisoformat(b["start"])) / timedelta(hours=1)
        for b in buckets
    ]
    assert spans == lengths
    assert [b["count"] for b in buckets] == lengths
    local = [datetime.fromisoformat(b["start"]).astimezone(berlin) for b in buckets]
    assert [(t.day, t.hour) for t in local] == [
        (middle.day - 1, 0),
        (middle.day, 0),
        (middle.day + 1, 0),
    ]


async def test_weeks_months_and_years_start_at_local_midnight(
    collector: str, database_url: str
) -> None:
    add_tag(
        database_url, "temp", [("2026-03-31T22:30:00Z", 1.0, 0), ("2026-04-01T00:30:00Z", 2.0, 0)]
    )
    window = {"from": "2026-03-01T00:00:00+01:00", "to": "2026-05-01T00:00:00+02:00"}
    months = await series(collector, **window, interval="P1M", tz="Europe/Berlin", fill="null")
    # 22:30 UTC on 31 March is already April in Berlin (00:30 CEST).
    assert [(b["start"], b["value"]) for b in months] == [
        ("2026-02-28T23:00:00Z", None),
        ("2026-03-31T22:00:00Z", 1.5),
    ]
    weeks = await series(collector, **window, interval="P1W", tz="Europe/Berlin")
    assert [(b["start"], b["count"]) for b in weeks] == [("2026-03-29T22:00:00Z", 2)]
    years = await series(collector, **window, interval="P1Y", tz="UTC", agg="last")
    assert [(b["start"], b["end"], b["value"]) for b in years] == [
        ("2026-02-28T23:00:00Z", "2026-04-30T22:00:00Z", 2.0)
    ]


ZONES = ["Europe/Berlin", "America/Havana", "Asia/Beirut", "Australia/Lord_Howe", "UTC"]


@pytest.mark.parametrize("text", ["PT1H", "PT6H", "PT45M", "P1D", "P1W", "P1M", "P1Y"])
def test_the_grid_is_where_postgresql_puts_readings(database_url: str, text: str) -> None:
    """Every 7 minutes over two years, in zones with DST at midnight, 30-minute DST and none."""
    interval = parse_interval(text)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    moments = [start + timedelta(minutes=7 * i) for i in range(0, 2 * 365 * 24 * 60 // 7, 13)]
    with psycopg.connect(database_url) as conn:
        for name in ZONES:
            zone = ZoneInfo(name)
            grid = boundaries(interval, zone, moments[0], moments[-1] + timedelta(seconds=1), 10**6)
            key = bucket_key_sql(interval)
            sql = f"SELECT {key} FROM unnest(%(ts)s::timestamptz[]) AS ts"  # noqa: S608
            params = {"ts": moments, "stride": interval.length, "origin": fixed_origin(zone)}
            keys = [row[0] for row in conn.execute(sql, {**params, "zone": name}).fetchall()]
            for moment, key in zip(moments, keys, strict=True):
                # The grid's bucket holding the moment starts where PostgreSQL's does.
                assert grid[bisect_right(grid, moment) - 1] == key, (name, moment, key)


async def test_raw_readings_page_and_downsample(collector: str, database_url: str) -> None:
    start = datetime(2026, 5, 4, tzinfo=UTC)
    wave: list[Row] = [
        ((start + timedelta(seconds=s)).isoformat(), float(s % 17), 0) for s in range(300)
    ]
    wave[123] = (wave[123][0], 1000.0, 0)
    wave[200] = (wave[200][0], -1000.0, 0)
    wave[250] = (wave[250][0], None, 2)
    add_tag(database_url, "temp", wave)
    window = {"from": start.isoformat(), "to": (start + timedelta(minutes=5)).isoformat()}
    status, page = await get_json(collector, tag="press/temp", **window, limit="40")
    assert status == 200, page
    assert (page["count"], page["truncated"], page["buckets"]) == (40, True, None)
    assert page["readings"][0] == {"ts": "2026-05-04T00:00:00Z", "value": 0.0, "quality": "good"}
    status, following = await get_json(f"{collector.removesuffix('/api/v1/series')}{page['next']}")
    assert following["readings"][0]["ts"] == "2026-05-04T00:00:40Z"
    status, chart = await get_json(collector, tag="press/temp", **window, max_points="20")
    assert status == 200, chart
    kept = [(r["ts"], r["value"]) for r in chart["readings"]]
    assert chart["downsampled"] is True
    assert len(kept) <= 20
    assert kept[0] == ("2026-05-04T00:00:00Z", 0.0)
    assert kept[-1] == ("2026-05-04T00:04:59Z", float(299 % 17))
    assert ("2026-05-04T00:02:03Z", 1000.0) in kept
    assert ("2026-05-04T00:03:20Z", -1000.0) in kept
    status, few = await get_json(collector, tag="press/temp", **window, max_points="5000")
    assert (few["count"], few["downsampled"]) == (299, True), "only the bad reading left out"
    status, buckets = await get_json(
        collector, tag="press/temp", **window, interval="PT1S", agg="max", max_points="10"
    )
    assert status == 200, buckets
    assert buckets["downsampled"] is True
    assert len(buckets["buckets"]) <= 10
    assert {1000.0, -1000.0} <= {b["value"] for b in buckets["buckets"]}


async def test_big_integers_and_text_tags(collector: str, database_url: str) -> None:
    big = 2**60
    add_tag(
        database_url,
        "temp",
        [(f"{DAY}10:00:00Z", None, 0, str(big)), (f"{DAY}10:30:00Z", None, 0, str(big + 2**10))],
        data_type="uint64",
    )
    add_tag(
        database_url,
        "recipe",
        [(f"{DAY}10:00:00Z", None, 0, "A"), (f"{DAY}10:20:00Z", None, 0, "B")],
        data_type="string",
    )
    assert values(await series(collector, **HOUR, agg="increase")) == [1024.0]
    raw = {"from": HOUR["from"], "to": HOUR["to"]}
    status, chart = await get_json(collector, tag="press/temp", **raw, max_points="5")
    assert [r["value"] for r in chart["readings"]] == [big, big + 2**10]
    status, body = await get_json(
        collector, tag="press/recipe", **HOUR, agg="last", fill="previous"
    )
    assert status == 200, body
    assert values(body["buckets"]) == ["B", "B", "B"]
    assert [b["count"] for b in body["buckets"]] == [2, 0, 0]


async def test_requests_beyond_a_limit_or_that_make_no_sense_are_422_naming_them(
    collector: str, database_url: str
) -> None:
    add_tag(database_url, "temp", TEMPERATURE)
    add_tag(database_url, "recipe", [(f"{DAY}10:00:00Z", None, 0, "A")], data_type="string")
    day = {"from": f"{DAY}00:00:00Z", "to": "2026-05-05T00:00:00Z"}
    cases: list[tuple[dict[str, str], int, str]] = [
        ({**HOUR, "tz": "Mars/Olympus_Mons"}, 422, "tz"),
        ({**HOUR, "interval": "PT0S"}, 422, "interval"),
        ({**HOUR, "interval": "P2D"}, 400, "interval"),
        ({**day, "interval": "PT1S"}, 422, "interval"),
        ({"from": HOUR["to"], "to": HOUR["from"]}, 422, "from"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, 422, "to"),
        ({**HOUR, "max_points": "10001"}, 422, "max_points"),
        ({**day, "agg": "avg"}, 422, "agg"),
        ({**day, "fill": "null"}, 422, "fill"),
        ({**HOUR, "limit": "5"}, 422, "limit"),
        ({**day, "max_points": "10", "cursor": "abc"}, 422, "cursor"),
        ({**day, "limit": "51"}, 422, "limit"),
        ({**day, "max_points": "4"}, 400, "max_points"),
        (
            {"from": "9999-06-01T00:00:00Z", "to": "9999-12-01T00:00:00Z", "interval": "P1Y"},
            422,
            "interval",
        ),
        ({**HOUR, "tag": "press/recipe", "agg": "avg"}, 422, "agg"),
        ({**HOUR, "tag": "press/recipe", "agg": "first", "fill": "linear"}, 422, "fill"),
        ({**HOUR, "tag": "press/recipe", "agg": "first", "max_points": "10"}, 422, "max_points"),
        ({**HOUR, "tag": "press/ghost"}, 404, "tag"),
    ]
    for params, status, name in cases:
        got, body = await get_json(collector, **{"tag": "press/temp", **params})
        assert got == status, (params, body)
        assert body["invalid_params"][0]["name"] == name, (params, body)
    add_tag(
        database_url,
        "dense",
        [
            ((datetime(2026, 5, 4, tzinfo=UTC) + timedelta(seconds=s)).isoformat(), 1.0, 0)
            for s in range(501)
        ],
    )
    got, body = await get_json(collector, tag="press/dense", **day, max_points="10")
    assert got == 422, body
    assert body["invalid_params"][0] == {
        "name": "max_points",
        "reason": "the range holds more than series.max_downsampled_readings (500) readings:"
        " give an `interval`",
    }
