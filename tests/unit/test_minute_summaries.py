"""Hour summaries made from minute summaries equal those made from the readings."""

from dataclasses import fields

import numpy as np
import pytest

from collector.analytics.minute_summaries import (
    HOUR_US,
    MINUTE_US,
    Columns,
    Summaries,
    coarser,
    summarize,
)

T0 = 1_790_000_000 * 1_000_000 // HOUR_US * HOUR_US
NUMBER_FIELDS = {
    "first_ts",
    "first_value",
    "last_ts",
    "last_value",
    "total",
    "low",
    "low_ts",
    "high",
    "high_ts",
}


def assert_same(got: Summaries, want: Summaries) -> None:
    """Equal field by field (floats up to the order of sums); number fields where numbers are."""
    assert len(got) == len(want)
    numbers = want.numbers > 0
    for field in fields(Summaries):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if field.name in NUMBER_FIELDS:
            a, b = a[numbers], b[numbers]
        assert a.dtype == b.dtype, field.name
        assert np.allclose(a, b, rtol=1e-12, atol=1e-9), field.name


@pytest.mark.parametrize("seed", range(40))
def test_hours_from_minutes_equal_hours_from_the_readings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    value = rng.normal(size=n) * 10
    value[rng.random(n) < 0.3] = np.nan  # readings without a number, whole minutes of them
    value[rng.random(n) < 0.1] = 3.0  # the same low or high reached more than once
    if seed % 5 == 0:
        value[:] = np.nan  # no number at all
    columns = Columns(
        rng.integers(1, 4, n).astype(np.int32),
        T0 + rng.integers(0, 3 * HOUR_US, n),
        rng.permutation(n).astype(np.int64),
        rng.random(n) < 0.8,
        value,
    )
    assert_same(coarser(summarize(columns)), summarize(columns, HOUR_US))


def test_a_counter_that_resets_between_minutes_rises_by_its_new_value() -> None:
    columns = Columns(
        np.array([1, 1, 1, 1], np.int32),
        np.array([T0, T0 + 30_000_000, T0 + MINUTE_US, T0 + MINUTE_US + 1], np.int64),
        np.arange(4, dtype=np.int64),
        np.ones(4, np.bool_),
        np.array([10.0, 12.0, 2.0, 5.0]),
    )
    hour = coarser(summarize(columns))
    assert hour.increase.tolist() == [2.0 + 2.0 + 3.0]  # 10 -> 12, reset to 2, 2 -> 5
    assert hour.step_area.tolist() == [10.0 * 30 + 12.0 * 30 + 2.0 * 0.000001]


def test_no_minutes_make_no_hours() -> None:
    assert len(coarser(summarize(Columns.empty()))) == 0
