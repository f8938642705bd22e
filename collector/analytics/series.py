"""Series maths: bucket values from per-bucket summaries, fill, and shape-preserving downsampling.

A source (raw readings, or per-minute and per-hour rollups) gives one `Summary` per bucket that
holds readings, plus the readings just before and after the range. A summary only describes its
own bucket, so summaries of small buckets merge into those of larger ones; what happens between two
buckets (a value held across a gap, a counter that moved between them) is worked out here from
their edge readings, the same whatever the source.
"""

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray
from tsdownsample import MinMaxLTTBDownsampler

Value = float | str
"""A reading's value in a series: a number, or text for a string tag."""


class Agg(StrEnum):
    """How a bucket's readings become its value (docs/api.md#series defines each)."""

    AVG = "avg"
    TWA_STEP = "twa_step"
    TWA_LINEAR = "twa_linear"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"
    INCREASE = "increase"


TEXT_AGGS = frozenset({Agg.COUNT, Agg.FIRST, Agg.LAST})
"""The aggregations a tag whose values are text allows."""


class Fill(StrEnum):
    """What a bucket without a value shows."""

    NONE = "none"
    NULL = "null"
    PREVIOUS = "previous"
    LINEAR = "linear"


@dataclass(frozen=True, slots=True)
class Point:
    """A reading with a value."""

    ts: datetime
    value: Value


@dataclass(frozen=True, slots=True)
class Summary:
    """What a source knows of one bucket's readings (mergeable: nothing about its neighbours).

    The areas are value x seconds between consecutive readings with values inside the bucket;
    `increase` is the counter increase between them (a drop is a reset, counted from 0).
    """

    key: datetime
    count: int
    good: int
    values: int = 0
    first: Point | None = None
    last: Point | None = None
    total: float | None = None
    low: float | None = None
    high: float | None = None
    step_area: float = 0.0
    linear_area: float = 0.0
    increase: float = 0.0


SourceName = Literal["readings", "rollups_1m", "rollups_1h"]
"""Where a series' summaries came from: the raw readings, or a rollup table."""


@dataclass(frozen=True, slots=True)
class SourceData:
    """A source's answer: summaries in bucket order, and the readings around the range."""

    summaries: list[Summary]
    before: Point | None = None
    after: Point | None = None
    source: SourceName = "readings"
    """Where the summaries came from (a rollup table's answers may end with raw readings')."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket of a series: [start, end), its value, how many readings and how good."""

    start: datetime
    end: datetime
    value: Value | None
    count: int
    good: float | None
    filled: bool = False


def counter_step(previous: float, current: float) -> float:
    """How far a counter moved from one reading to the next: a drop is a reset from 0."""
    return current - previous if current >= previous else current


def _number(point: Point) -> float:
    return float(point.value)


class _Weights:
    """Area and seconds of known value per bucket, from segments between readings."""

    def __init__(self, edges: Sequence[datetime]) -> None:
        self.edges = edges
        self.area = [0.0] * (len(edges) - 1)
        self.seconds = [0.0] * (len(edges) - 1)

    def add(self, begin: datetime, end: datetime, value_at: Callable[[datetime], float]) -> None:
        """Spread the segment [begin, end), whose value is `value_at(t)` (linear), over buckets."""
        index = max(bisect_right(self.edges, begin) - 1, 0)
        while index < len(self.area) and self.edges[index] < end:
            # Never empty: edges[index] <= begin < edges[index + 1], or begin before them all.
            low = max(begin, self.edges[index])
            high = min(end, self.edges[index + 1])
            seconds = (high - low).total_seconds()
            self.area[index] += (value_at(low) + value_at(high)) / 2 * seconds
            self.seconds[index] += seconds
            index += 1


def _time_weighted(
    agg: Agg, edges: Sequence[datetime], placed: list[Summary | None], data: SourceData
) -> list[float | None]:
    weights = _Weights(edges)
    linear = agg is Agg.TWA_LINEAR
    for index, summary in enumerate(placed):
        if summary is not None and summary.first is not None and summary.last is not None:
            weights.area[index] += summary.linear_area if linear else summary.step_area
            weights.seconds[index] += (summary.last.ts - summary.first.ts).total_seconds()
    # What lies between one bucket's last reading and the next one's first.
    left = data.before
    for summary in placed:
        if summary is not None and summary.first is not None and summary.last is not None:
            if left is not None:
                weights.add(left.ts, summary.first.ts, _segment(left, summary.first, linear))
            left = summary.last
    # Stepped, the last value holds to the end of the range; a line needs a reading after it.
    right = data.after if linear else Point(edges[-1], 0.0)
    if left is not None and right is not None:
        weights.add(left.ts, right.ts, _segment(left, right, linear))
    return [
        area / seconds if seconds > 0 else None
        for area, seconds in zip(weights.area, weights.seconds, strict=True)
    ]


def _segment(left: Point, right: Point, linear: bool) -> Callable[[datetime], float]:
    start, slope_over = _number(left), right.ts - left.ts
    rise = _number(right) - start if linear else 0.0
    return lambda moment: start + rise * ((moment - left.ts) / slope_over)


def _increases(placed: list[Summary | None], before: Point | None) -> list[float | None]:
    out: list[float | None] = []
    previous = before
    for summary in placed:
        if summary is None or summary.first is None or summary.last is None:
            out.append(None)
            continue
        moved = summary.increase
        if previous is not None:
            moved += counter_step(_number(previous), _number(summary.first))
        out.append(moved)
        previous = summary.last
    return out


def _plain(agg: Agg, summary: Summary | None) -> Value | None:
    if summary is None:
        return 0.0 if agg is Agg.COUNT else None
    if agg is Agg.COUNT:
        return float(summary.count)
    if agg is Agg.AVG:
        return summary.total / summary.values if summary.total is not None else None
    if agg is Agg.FIRST or agg is Agg.LAST:
        point = summary.first if agg is Agg.FIRST else summary.last
        return point.value if point is not None else None
    return {Agg.MIN: summary.low, Agg.MAX: summary.high, Agg.SUM: summary.total}[agg]


def aggregate(
    agg: Agg,
    aligned: Sequence[datetime],
    start: datetime,
    end: datetime,
    data: SourceData,
) -> list[Bucket]:
    """Every bucket of [start, end) with its value; `aligned` are the grid's boundaries.

    The first and last buckets are cut to the range where it does not start or end on a
    boundary.
    """
    edges = [max(aligned[0], start), *aligned[1:-1], min(aligned[-1], end)]
    placed: list[Summary | None] = [None] * (len(edges) - 1)
    index = 0
    for summary in data.summaries:
        # One pass over both (summaries come in bucket order), not a search per summary.
        while aligned[index + 1] <= summary.key:
            index += 1
        placed[index] = summary
    values: Sequence[Value | None]
    if agg is Agg.TWA_STEP or agg is Agg.TWA_LINEAR:
        values = _time_weighted(agg, edges, placed, data)
    elif agg is Agg.INCREASE:
        values = _increases(placed, data.before)
    else:
        values = [_plain(agg, summary) for summary in placed]
    return [
        Bucket(
            start=edges[index],
            end=edges[index + 1],
            value=value,
            count=summary.count if summary is not None else 0,
            good=summary.good / summary.count if summary is not None else None,
        )
        for index, (summary, value) in enumerate(zip(placed, values, strict=True))
    ]


def fill(buckets: list[Bucket], how: Fill) -> list[Bucket]:
    """The buckets with those without a value left out, kept null, or filled in."""
    if how is Fill.NULL:
        return buckets
    if how is Fill.NONE:
        return [bucket for bucket in buckets if bucket.value is not None or bucket.count]
    known = [index for index, bucket in enumerate(buckets) if bucket.value is not None]
    out = list(buckets)
    for left, right in zip([None, *known], [*known, None], strict=True):
        gap = range(0 if left is None else left + 1, len(buckets) if right is None else right)
        for index in gap:
            value = _filled(buckets, index, left, right, how)
            if value is not None:
                out[index] = replace(buckets[index], value=value, filled=True)
    return out


def _filled(
    buckets: list[Bucket], index: int, left: int | None, right: int | None, how: Fill
) -> Value | None:
    if left is None:
        return None
    before = cast(Value, buckets[left].value)  # `known` holds only buckets with a value
    if how is Fill.PREVIOUS:
        return before
    if right is None:
        return None
    after = cast(Value, buckets[right].value)
    start = buckets[left].start
    share = (buckets[index].start - start) / (buckets[right].start - start)
    return float(before) + (float(after) - float(before)) * share


def keep_shape(x: NDArray[np.int64], y: NDArray[np.float64], most: int) -> NDArray[np.intp]:
    """Indices of at most `most` (>= 5) points that draw the same shape as all of them.

    MinMaxLTTB (tsdownsample) picks `most` - 2 points, first and last among them; the global
    minimum and maximum are then added if it left them out, so a chart keeps every extreme.
    """
    if len(y) <= most:
        return np.arange(len(y), dtype=np.intp)
    sampler = MinMaxLTTBDownsampler()  # type: ignore[no-untyped-call]
    picked = sampler.downsample(x, y, n_out=most - 2)
    extremes = np.array([np.argmin(y), np.argmax(y)], dtype=np.intp)
    return np.union1d(picked.astype(np.intp), extremes)
