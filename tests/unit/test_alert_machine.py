"""The alert state machine, pure: holds, hysteresis, quality, true times, and the gaps late
readings are evaluated in."""

from datetime import UTC, datetime, timedelta

import pytest

from collector.alerts.machine import (
    CLEAR,
    Gap,
    Threshold,
    Track,
    close,
    elapse,
    gaps,
    observe,
    run_threshold,
    usable,
)
from shared.readings import Quality

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
GOOD, UNCERTAIN, BAD = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def above(hold: float = 0.0, clear: float = 80.0) -> Threshold:
    return Threshold(True, 90.0, clear, timedelta(seconds=hold))


def changes(
    rule: Threshold, *series: tuple[float, float | None], quality: int = GOOD
) -> list[tuple[str, datetime, datetime]]:
    _, found = run_threshold(rule, CLEAR, [(t(s), v, quality) for s, v in series])
    return [(c.change, c.at, c.started) for c in found]


def test_without_a_hold_it_fires_at_the_reading_and_resolves_at_the_clearing_one() -> None:
    assert changes(above(), (0, 50), (1, 95), (2, 99), (3, 70)) == [
        ("firing", t(1), t(1)),
        ("resolved", t(3), t(1)),
    ]


def test_hysteresis_between_the_thresholds_neither_starts_nor_clears() -> None:
    # 85 lies between clear (80) and threshold (90): no start from clear, no end when firing.
    assert changes(above(), (0, 85), (1, 95), (2, 85), (3, 81), (4, 80)) == [
        ("firing", t(1), t(1)),
        ("resolved", t(4), t(1)),
    ]


def test_exactly_at_the_threshold_is_not_beyond_it() -> None:
    assert changes(above(clear=90.0), (0, 90), (1, 90.5), (2, 90)) == [
        ("firing", t(1), t(1)),
        ("resolved", t(2), t(1)),
    ]


def test_a_hold_fires_at_start_plus_hold_with_the_reading_that_shows_it() -> None:
    rule = above(hold=10)
    _, found = run_threshold(rule, CLEAR, [(t(0), 95, GOOD), (t(5), 96, GOOD), (t(12), 97, GOOD)])
    assert [(c.change, c.at, c.seen) for c in found] == [
        ("pending", t(0), t(0)),
        ("firing", t(10), t(12)),
    ]


def test_a_condition_that_clears_during_the_hold_ends_without_firing() -> None:
    assert changes(above(hold=10), (0, 95), (4, 70), (6, 95)) == [
        ("pending", t(0), t(0)),
        ("resolved", t(4), t(0)),
        ("pending", t(6), t(6)),
    ]


def test_between_the_thresholds_during_the_hold_keeps_it_pending() -> None:
    assert changes(above(hold=10), (0, 95), (4, 85), (10, 85)) == [
        ("pending", t(0), t(0)),
        ("firing", t(10), t(0)),
    ]


def test_a_value_held_past_the_hold_fires_even_if_the_next_reading_clears() -> None:
    # Report by exception: 95 held from 0 until 15, longer than the hold.
    assert changes(above(hold=10), (0, 95), (15, 50)) == [
        ("pending", t(0), t(0)),
        ("firing", t(10), t(0)),
        ("resolved", t(15), t(0)),
    ]


def test_below_mirrors_above() -> None:
    rule = Threshold(False, 10.0, 20.0, timedelta(0))
    assert changes(rule, (0, 15), (1, 5), (2, 15), (3, 20)) == [
        ("firing", t(1), t(1)),
        ("resolved", t(3), t(1)),
    ]


@pytest.mark.parametrize("value", [None, float("nan")])
def test_readings_without_a_number_are_skipped(value: float | None) -> None:
    assert changes(above(), (0, 95), (1, value), (2, 50)) == [
        ("firing", t(0), t(0)),
        ("resolved", t(2), t(0)),
    ]


def test_bad_quality_is_skipped_and_uncertain_counts() -> None:
    assert changes(above(), (0, 95), quality=BAD) == []
    assert changes(above(), (0, 95), quality=UNCERTAIN) == [("firing", t(0), t(0))]
    assert not usable(95.0, BAD)
    assert usable(95.0, UNCERTAIN)


def test_the_track_carries_the_episode_across_passes() -> None:
    rule = above(hold=10)
    track, first = run_threshold(rule, CLEAR, [(t(0), 95, GOOD)])
    assert track == Track("pending", t(0), 95)
    track, second = run_threshold(rule, track, [(t(11), 96, GOOD)])
    assert track == Track("firing", t(0), 95)
    assert [(c.change, c.at, c.value) for c in [*first, *second]] == [
        ("pending", t(0), 95),
        ("firing", t(10), 95),
    ]


def test_elapse_fires_a_pending_episode_by_the_clock_only_after_its_hold() -> None:
    pending = Track("pending", t(0))
    assert elapse(pending, t(9), timedelta(seconds=10)) == (pending, [])
    track, found = elapse(pending, t(30), timedelta(seconds=10))
    assert track.phase == "firing"
    assert [(c.change, c.at, c.seen) for c in found] == [("firing", t(10), t(30))]
    assert elapse(CLEAR, t(30), timedelta(0)) == (CLEAR, [])


def test_observe_with_a_boolean_condition() -> None:
    track, found = observe(CLEAR, t(0), entered=True, cleared=False, hold=timedelta(seconds=5))
    assert (track.phase, [c.change for c in found]) == ("pending", ["pending"])
    track, found = observe(track, t(2), entered=False, cleared=True, hold=timedelta(seconds=5))
    assert (track, [c.change for c in found]) == (CLEAR, ["resolved"])


def test_close_ends_any_open_episode() -> None:
    assert close(CLEAR, t(1)) == (CLEAR, [])
    track, found = close(Track("firing", t(0), 95), t(5))
    assert track == CLEAR
    assert [(c.change, c.at, c.started) for c in found] == [("resolved", t(5), t(0))]


def test_a_track_without_its_start_is_refused() -> None:
    with pytest.raises(ValueError, match="no start"):
        elapse(Track("pending"), t(0), timedelta(0))


def test_gaps_leave_out_recorded_episodes() -> None:
    assert gaps(t(0), t(100), []) == [Gap(t(0), t(100), True)]
    assert gaps(t(0), t(100), [(t(10), t(20)), (t(50), t(60))]) == [
        Gap(t(0), t(10), False),
        Gap(t(20), t(50), False),
        Gap(t(60), t(100), True),
    ]


def test_gaps_stop_at_an_open_episode_and_start_after_one_holding_lo() -> None:
    assert gaps(t(15), t(100), [(t(10), t(20)), (t(50), None)]) == [Gap(t(20), t(50), False)]
    assert gaps(t(15), t(100), [(t(10), None)]) == []


def test_gaps_keep_a_single_moment_at_the_watermark_and_drop_empty_ones() -> None:
    assert gaps(t(100), t(100), []) == [Gap(t(100), t(100), True)]
    assert gaps(t(10), t(100), [(t(10), t(100))]) == [Gap(t(100), t(100), True)]
    assert gaps(t(0), t(100), [(t(0), t(20)), (t(20), t(30))]) == [Gap(t(30), t(100), True)]
    # An episode that ended after the watermark leaves nothing after it.
    assert gaps(t(0), t(100), [(t(10), t(200))]) == [Gap(t(0), t(10), False)]
