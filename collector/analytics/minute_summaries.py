"""Per-minute and per-hour rollup summaries of readings in memory, column-wise with numpy.

Each summary has the fields a `rollups_1m` row has, computed as the SQL of
collector/analytics/summary_sql.py computes them from stored readings (readings_summaries):
readings ordered by time and sequence number per tag version; a value counts as a number
unless it is missing, NaN, infinite or at least 1e300 in size; areas and increases run
between consecutive numbers within the minute. So a summary made here and one made by the
database from the same readings are equal, and both merge with their neighbours alike.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
_LARGEST = 1e300  # the "no value" sentinel bound of summary_sql.NUMBER


@dataclass(frozen=True, slots=True)
class Columns:
    """Readings of numeric tag versions, entry i of each column being reading i."""

    tag: NDArray[np.int32]
    ts: NDArray[np.int64]
    """Microseconds since the Unix epoch (UTC)."""
    seq: NDArray[np.int64]
    good: NDArray[np.bool_]
    value: NDArray[np.float64]
    """NaN where the reading has no usable number."""

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> "Columns":
        """Columns of no readings."""
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.bool_),
            np.empty(0, np.float64),
        )

    @classmethod
    def joined(cls, parts: "Sequence[Columns]") -> "Columns":
        """One set of columns holding every reading of `parts` (at least one)."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def usable(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The values with every one that is not a usable number (NaN, infinite, >= 1e300) as NaN."""
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(values) < _LARGEST, values, np.nan)


@dataclass(frozen=True, slots=True)
class Summaries:
    """One summary per (tag version, minute), oldest first per tag; the number fields
    (first_ts ... high_ts) mean nothing where `numbers` is 0 (they are NULL in the table)."""

    tag: NDArray[np.int32]
    bucket: NDArray[np.int64]
    count: NDArray[np.int64]
    good: NDArray[np.int64]
    numbers: NDArray[np.int64]
    first_ts: NDArray[np.int64]
    first_value: NDArray[np.float64]
    last_ts: NDArray[np.int64]
    last_value: NDArray[np.float64]
    total: NDArray[np.float64]
    low: NDArray[np.float64]
    low_ts: NDArray[np.int64]
    high: NDArray[np.float64]
    high_ts: NDArray[np.int64]
    step_area: NDArray[np.float64]
    linear_area: NDArray[np.float64]
    increase: NDArray[np.float64]
    span_lo: NDArray[np.int64]
    span_hi: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.tag)

    def rows(self, which: NDArray[np.bool_]) -> "Summaries":
        """The summaries where `which` is true, in their order."""
        return Summaries(*(getattr(self, f.name)[which] for f in fields(self)))

    def keys(self) -> NDArray[np.int64]:
        """Each summary's (tag version, bucket) as one number (bucket_key of the two)."""
        return bucket_key(self.tag, self.bucket)


def bucket_key(tag: NDArray[np.int32], bucket_us: NDArray[np.int64]) -> NDArray[np.int64]:
    """A tag version and a minute-aligned bucket start as one number, for set operations."""
    return (tag.astype(np.int64) << 32) + bucket_us // MINUTE_US


def _sums(group: NDArray[np.int64], values: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """The sum of `values` per group (0 for a group without any)."""
    return np.asarray(np.bincount(group, values, minlength=size), np.float64)


def summarize(columns: Columns, grain_us: int = MINUTE_US) -> Summaries:
    """The summary of each tag version's readings in each minute (or `grain_us`) they fall in."""
    order = np.lexsort((columns.seq, columns.ts, columns.tag))
    tag, ts = columns.tag[order], columns.ts[order]
    good, value = columns.good[order], columns.value[order]
    n = len(ts)
    minute = ts // grain_us
    new = _starts(tag, minute)
    starts = np.flatnonzero(new)
    size = len(starts)
    ends = np.append(starts[1:], n)[:size]
    group = np.cumsum(new) - 1
    number = ~np.isnan(value)
    if number.all():  # the usual case: no copies
        g, t, v = group, ts, value
    else:
        g, t, v = group[number], ts[number], value[number]
    numbers = np.bincount(g, minlength=size)
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.empty(0, np.int64)
    last = np.append(first[1:], len(g))[: len(first)] - 1
    held = g[first]  # the groups holding numbers, in order

    def per_group(found: NDArray[Any], fill: float, dtype: type) -> NDArray[Any]:
        out: NDArray[Any] = np.full(size, fill, dtype)
        out[held] = found
        return out

    low = np.minimum.reduceat(v, first) if len(g) else np.empty(0)
    high = np.maximum.reduceat(v, first) if len(g) else np.empty(0)
    at = np.repeat(np.arange(len(first)), last - first + 1)  # each number's index in `held`
    never = np.iinfo(np.int64).max
    low_ts = np.minimum.reduceat(np.where(v == low[at], t, never), first) if len(g) else low
    high_ts = np.minimum.reduceat(np.where(v == high[at], t, never), first) if len(g) else high
    # Between consecutive numbers of one group: as the SQL's lead/lag over them. Pairs that
    # cross from one group to the next count nothing.
    pair = g[1:] == g[:-1]
    left, right = v[:-1], v[1:]
    seconds = np.where(pair, np.diff(t) / 1e6, 0.0)
    owner = g[:-1]
    step = _sums(owner, left * seconds, size)
    linear = _sums(owner, (left + right) / 2 * seconds, size)
    rise = _sums(owner, np.where(pair, np.where(right >= left, right - left, right), 0.0), size)
    return Summaries(
        tag=tag[starts],
        bucket=minute[starts] * grain_us,
        count=ends - starts,
        good=np.add.reduceat(good.astype(np.int64), starts) if n else np.empty(0, np.int64),
        numbers=numbers,
        first_ts=per_group(t[first], 0, np.int64),
        first_value=per_group(v[first], np.nan, np.float64),
        last_ts=per_group(t[last], 0, np.int64),
        last_value=per_group(v[last], np.nan, np.float64),
        total=per_group(np.add.reduceat(v, first) if len(g) else v, np.nan, np.float64),
        low=per_group(low, np.nan, np.float64),
        low_ts=per_group(low_ts, 0, np.int64),
        high=per_group(high, np.nan, np.float64),
        high_ts=per_group(high_ts, 0, np.int64),
        step_area=step,
        linear_area=linear,
        increase=rise,
        span_lo=ts[starts],
        span_hi=ts[ends - 1],
    )


def _starts(tag: NDArray[np.int32], key: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Where a new (tag, key) group starts, in rows ordered by tag, then key."""
    new = np.ones(len(tag), np.bool_)
    new[1:] = (tag[1:] != tag[:-1]) | (key[1:] != key[:-1])
    return new


def coarser(parts: Summaries, grain_us: int = HOUR_US) -> Summaries:
    """Summaries of a coarser grain (hours) from those of a finer one (minutes) of the same
    readings, ordered by tag, then bucket, as `summarize` makes them. The same as summarising
    the readings again (up to the order of float sums), for a small part of the work."""
    n = len(parts)
    if not n:
        return parts
    bucket = parts.bucket // grain_us * grain_us
    new = _starts(parts.tag, bucket)
    starts = np.flatnonzero(new)
    size = len(starts)
    group = np.cumsum(new) - 1
    at = np.flatnonzero(parts.numbers > 0)  # the parts holding numbers, in order
    g = group[at]
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.empty(0, np.int64)
    last = np.append(first[1:], len(g))[: len(first)] - 1
    held = g[first]

    def per_group(found: NDArray[Any], fill: float, dtype: type) -> NDArray[Any]:
        out: NDArray[Any] = np.full(size, fill, dtype)
        out[held] = found
        return out

    def over_numbers(ufunc: np.ufunc, column: NDArray[Any]) -> NDArray[Any]:
        return ufunc.reduceat(column[at], first) if len(g) else column[at]

    low, high = over_numbers(np.minimum, parts.low), over_numbers(np.maximum, parts.high)
    spread = np.repeat(np.arange(len(first)), last - first + 1)  # each part's index in `held`
    never = np.iinfo(np.int64).max
    low_ts = np.where(parts.low[at] == low[spread], parts.low_ts[at], never)
    high_ts = np.where(parts.high[at] == high[spread], parts.high_ts[at], never)
    # Between the last number of one part and the first of the next part with numbers.
    before, after = at[:-1], at[1:]
    pair = g[1:] == g[:-1]
    left, right = parts.last_value[before], parts.first_value[after]
    seconds = np.where(pair, (parts.first_ts[after] - parts.last_ts[before]) / 1e6, 0.0)
    owner = g[:-1]
    rise = np.where(pair, np.where(right >= left, right - left, right), 0.0)
    return Summaries(
        tag=parts.tag[starts],
        bucket=bucket[starts],
        count=np.add.reduceat(parts.count, starts),
        good=np.add.reduceat(parts.good, starts),
        numbers=np.add.reduceat(parts.numbers, starts),
        first_ts=per_group(parts.first_ts[at[first]], 0, np.int64),
        first_value=per_group(parts.first_value[at[first]], np.nan, np.float64),
        last_ts=per_group(parts.last_ts[at[last]], 0, np.int64),
        last_value=per_group(parts.last_value[at[last]], np.nan, np.float64),
        total=per_group(over_numbers(np.add, parts.total), np.nan, np.float64),
        low=per_group(low, np.nan, np.float64),
        low_ts=per_group(np.minimum.reduceat(low_ts, first) if len(g) else low_ts, 0, np.int64),
        high=per_group(high, np.nan, np.float64),
        high_ts=per_group(np.minimum.reduceat(high_ts, first) if len(g) else high_ts, 0, np.int64),
        step_area=_sums(group, parts.step_area, size) + _sums(owner, left * seconds, size),
        linear_area=_sums(group, parts.linear_area, size)
        + _sums(owner, (left + right) / 2 * seconds, size),
        increase=_sums(group, parts.increase, size) + _sums(owner, rise, size),
        span_lo=np.minimum.reduceat(parts.span_lo, starts),
        span_hi=np.maximum.reduceat(parts.span_hi, starts),
    )
