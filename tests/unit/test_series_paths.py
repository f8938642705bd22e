"""Series maths without a database: intervals, DST-aware buckets, aggregates, fill, downsampling."""

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from collector.analytics.buckets import (
    CalendarUnit,
    Interval,
    TooManyBuckets,
    boundaries,
    bucket_key_sql,
    find_zone,
    fixed_origin,
    parse_interval,
    to_utc,
)
from collector.analytics.series import (
    Agg,
    Bucket,
    Fill,
    Point,
    SourceData,
    Summary,
    aggregate,
    counter_step,
    fill,
    keep_shape,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "length", "unit"),
    [
        ("PT1S", timedelta(seconds=1), None),
        ("PT15M", timedelta(minutes=15), None),
        ("PT1H30M", timedelta(hours=1, minutes=30), None),
        ("PT2H5S", timedelta(hours=2, seconds=5), None),
        ("P1D", None, CalendarUnit.DAY),
        ("P1W", None, CalendarUnit.WEEK),
        ("P1M", None, CalendarUnit.MONTH),
        ("P1Y", None, CalendarUnit.YEAR),
    ],
)
def test_intervals_parse(text: str, length: timedelta | None, unit: CalendarUnit | None) -> None:
    assert parse_interval(text) == Interval(text, length, unit)


@pytest.mark.parametrize(("text", "reason"), [("PT0S", "at least one second"), ("P", "ISO 8601")])
def test_intervals_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_interval(text)


def test_zones_are_iana_names() -> None:
    assert find_zone("Europe/Berlin") is BERLIN
    with pytest.raises(ValueError, match="no IANA time zone 'Mars/Base'"):
        find_zone("Mars/Base")


def test_skipped_and_repeated_local_times_map_as_postgresql_maps_them() -> None:
    # 02:30 does not exist on 29 March in Berlin: the offset before the change (+01) applies.
    assert to_utc(datetime(2026, 3, 29, 2, 30), BERLIN) == utc("2026-03-29T01:30:00Z")
    # 02:30 happens twice on 25 October: the offset after the change (+01) applies.
    assert to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == utc("2026-10-25T01:30:00Z")
    assert to_utc(datetime(2026, 7, 1), BERLIN) == utc("2026-06-30T22:00:00Z")


@pytest.mark.parametrize(
    ("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-01", 24)]
)
def test_a_berlin_day_lasts_as_long_as_its_clock_says(day: str, hours: int) -> None:
    start = datetime.fromisoformat(f"{day}T12:00:00+00:00")
    edges = boundaries(parse_interval("P1D"), BERLIN, start, start + timedelta(hours=1), 10)
    assert len(edges) == 2
    assert (edges[1] - edges[0]) == timedelta(hours=hours)
    assert edges[0].astimezone(BERLIN).hour == 0


def test_calendar_buckets_step_by_week_month_and_year() -> None:
    start, end = utc("2026-11-18T10:00:00Z"), utc("2027-02-02T00:00:00Z")
    weeks = boundaries(parse_interval("P1W"), BERLIN, start, end, 100)
    assert weeks[0] == utc("2026-11-16T00:00:00+01:00")  # the Monday before
    assert all(b - a == timedelta(days=7) for a, b in itertools.pairwise(weeks))
    months = boundaries(parse_interval("P1M"), BERLIN, start, end, 100)
    assert [m.astimezone(BERLIN).strftime("%Y-%m-%d %H") for m in months] == [
        "2026-11-01 00",
        "2026-12-01 00",
        "2027-01-01 00",
        "2027-02-01 00",
        "2027-03-01 00",
    ]
    years = boundaries(parse_interval("P1Y"), UTC_ZONE, start, end, 100)
    assert years == [
        utc("2026-01-01T00:00:00Z"),
        utc("2027-01-01T00:00:00Z"),
        utc("2028-01-01T00:00:00Z"),
    ]


UTC_ZONE = ZoneInfo("UTC")


def test_fixed_buckets_count_from_local_midnight() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    assert fixed_origin(kolkata) == utc("2000-01-02T18:30:00Z")
    start = utc("2026-05-04T10:10:00Z")
    edges = boundaries(parse_interval("PT1H"), kolkata, start, start + timedelta(hours=2), 10)
    assert edges == [utc("2026-05-04T09:30:00Z") + timedelta(hours=h) for h in range(4)]
    assert bucket_key_sql(parse_interval("PT1H")) == "date_bin(%(stride)s, ts, %(origin)s)"
    assert bucket_key_sql(parse_interval("P1M")) == "date_trunc('month', ts, %(zone)s)"


def test_more_buckets_than_allowed_are_refused_not_cut() -> None:
    start = utc("2026-05-04T00:00:00Z")
    with pytest.raises(TooManyBuckets, match="25 buckets; at most 24"):
        boundaries(parse_interval("PT1H"), UTC_ZONE, start, start + timedelta(hours=25), 24)
    with pytest.raises(TooManyBuckets, match="more than 3 buckets"):
        boundaries(parse_interval("P1D"), UTC_ZONE, start, start + timedelta(days=5), 3)
    assert (
        len(boundaries(parse_interval("PT1H"), UTC_ZONE, start, start + timedelta(hours=24), 24))
        == 25
    )


def test_a_counter_that_drops_was_reset() -> None:
    assert counter_step(10.0, 15.0) == 5.0
    assert counter_step(10.0, 3.0) == 3.0
    assert counter_step(10.0, 10.0) == 0.0


T0 = utc("2026-05-04T10:00:00Z")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


HOURS = [at(0), at(60), at(120)]


def summary(minutes: float, *points: tuple[float, float], count: int | None = None) -> Summary:
    """A summary of readings (minute, value) as a source would compute it."""
    first, last = points[0], points[-1]
    pairs = list(itertools.pairwise(points))
    return Summary(
        key=at(minutes),
        count=count if count is not None else len(points),
        good=len(points),
        values=len(points),
        first=Point(at(first[0]), first[1]),
        last=Point(at(last[0]), last[1]),
        total=sum(v for _, v in points),
        low=min(v for _, v in points),
        high=max(v for _, v in points),
        step_area=sum(a[1] * (b[0] - a[0]) * 60 for a, b in pairs),
        linear_area=sum((a[1] + b[1]) / 2 * (b[0] - a[0]) * 60 for a, b in pairs),
        increase=sum(counter_step(a[1], b[1]) for a, b in pairs),
    )


def test_time_weighted_average_without_a_reading_before_starts_at_the_first() -> None:
    data = SourceData([summary(0, (30, 10.0), (45, 20.0))])
    [step, second] = aggregate(Agg.TWA_STEP, HOURS, at(0), at(120), data)
    # 10 for 15 minutes, 20 for 15 minutes; then 20 held through the second hour.
    assert step.value == pytest.approx(15.0)
    assert second.value == 20.0
    assert (second.count, second.good) == (0, None)
    linear = aggregate(Agg.TWA_LINEAR, HOURS, at(0), at(120), data)
    # Only between the two readings: nothing after the last without a reading after the range.
    assert [b.value for b in linear] == [pytest.approx(15.0), None]


def test_a_reading_on_the_range_start_needs_no_carry() -> None:
    data = SourceData([summary(0, (0, 4.0), (30, 8.0))], before=Point(at(-10), 100.0))
    [bucket] = aggregate(Agg.TWA_STEP, HOURS[:2], at(0), at(60), data)
    assert bucket.value == pytest.approx(6.0)


def test_linear_reaches_over_empty_buckets_to_the_reading_after() -> None:
    data = SourceData([], before=Point(at(-60), 0.0), after=Point(at(180), 240.0))
    buckets = aggregate(Agg.TWA_LINEAR, HOURS, at(0), at(120), data)
    # The line gains 1 per minute: its mean over 0-60 is 90, over 60-120 is 150.
    assert [b.value for b in buckets] == pytest.approx([90.0, 150.0])


def test_increase_over_buckets_and_a_bucket_of_bad_readings() -> None:
    bad = Summary(key=at(60), count=2, good=0)
    data = SourceData([summary(0, (10, 5.0), (20, 2.0), (30, 4.0)), bad], before=Point(at(-5), 3.0))
    buckets = aggregate(Agg.INCREASE, HOURS, at(0), at(120), data)
    assert [b.value for b in buckets] == [2.0 + 2.0 + 2.0, None]
    assert [(b.count, b.good) for b in buckets] == [(3, 1.0), (2, 0.0)]


def test_plain_aggregates_of_one_bucket() -> None:
    data = SourceData([summary(60, (70, 3.0), (80, 9.0), (90, 6.0), count=4)])
    got = {agg: [b.value for b in aggregate(agg, HOURS, at(0), at(120), data)] for agg in Agg}
    assert got[Agg.AVG] == [None, 6.0]
    assert got[Agg.MIN] == [None, 3.0]
    assert got[Agg.MAX] == [None, 9.0]
    assert got[Agg.SUM] == [None, 18.0]
    assert got[Agg.COUNT] == [0.0, 4.0]
    assert got[Agg.FIRST] == [None, 3.0]
    assert got[Agg.LAST] == [None, 6.0]
    empty = SourceData([Summary(key=at(0), count=1, good=0)])
    assert [b.value for b in aggregate(Agg.FIRST, HOURS, at(0), at(120), empty)] == [None, None]
    assert [b.value for b in aggregate(Agg.AVG, HOURS, at(0), at(120), empty)] == [None, None]


def bucket(minutes: int, value: float | str | None, count: int = 1) -> Bucket:
    return Bucket(at(minutes), at(minutes + 10), value, count, 1.0 if count else None)


ROW = [
    bucket(0, None, 0),
    bucket(10, 2.0),
    bucket(20, None, 0),
    bucket(30, None, 3),
    bucket(40, 8.0),
    bucket(50, None, 0),
]


def test_fill() -> None:
    assert fill(ROW, Fill.NULL) is ROW
    assert [b.value for b in fill(ROW, Fill.NONE)] == [2.0, None, 8.0]
    previous = fill(ROW, Fill.PREVIOUS)
    assert [b.value for b in previous] == [None, 2.0, 2.0, 2.0, 8.0, 8.0]
    assert [b.filled for b in previous] == [False, False, True, True, False, True]
    linear = fill(ROW, Fill.LINEAR)
    assert [b.value for b in linear] == [None, 2.0, 4.0, 6.0, 8.0, None]
    assert [b.filled for b in linear] == [False, False, True, True, False, False]


def test_downsampling_keeps_the_ends_and_every_extreme() -> None:
    rng = np.random.default_rng(7)
    y = np.cumsum(rng.normal(size=5000))
    y[1234] = y.max() + 50  # a one-sample spike
    y[4321] = y.min() - 50
    x = np.arange(5000, dtype=np.int64) * 1_000_000
    kept = keep_shape(x, y, 50)
    assert len(kept) <= 50
    assert list(kept) == sorted(set(kept))
    assert {0, 4999, 1234, 4321, int(np.argmin(y)), int(np.argmax(y))} <= set(kept.tolist())
    assert keep_shape(x[:5], y[:5], 5).tolist() == [0, 1, 2, 3, 4]
