"""Readings held for rollup parts: what is taken out when, and their per-minute summaries."""

import asyncio
import logging
import math

import numpy as np
import pytest

from collector.analytics.held_readings import GAP_S, HeldReadings, _settle, numeric_columns
from collector.analytics.minute_summaries import MINUTE_US, Columns, summarize
from collector.config import IngestSettings
from collector.consumer import batch_decoder
from shared.readings import DataType, Quality, Reading, Value
from shared.wire import Topics, encode_batch

DECODER = batch_decoder(IngestSettings())
T0_US = 1_772_431_200_000_000  # 2026-03-02 06:00 UTC, a whole minute


def columns(*rows: tuple[int, int, float]) -> Columns:
    """(tag, microseconds after T0, value) rows, good, numbered in order."""
    return Columns(
        np.array([r[0] for r in rows], np.int32),
        np.array([T0_US + r[1] for r in rows], np.int64),
        np.arange(len(rows), dtype=np.int64),
        np.ones(len(rows), np.bool_),
        np.array([r[2] for r in rows], np.float64),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_is_taken_out_once_every_minute_it_touches_has_ended() -> None:
    held = HeldReadings(clock=Clock())
    held.add(("a1", 1, 1), columns((1, 0, 1.0), (1, 61_000_000, 2.0)))  # minutes 0 and 1
    held.add(("a1", 1, 2), columns((1, 5_000_000, 3.0)))  # minute 0
    assert held.readings == 3
    assert held.take(T0_US + MINUTE_US - 1) is None  # minute 0 still running
    taken = held.take(T0_US + MINUTE_US)
    assert taken is not None
    assert taken.claims == [("a1", 1, 2)]
    assert held.readings == 2
    taken = held.take(T0_US + 2 * MINUTE_US)
    assert taken is not None
    assert taken.claims == [("a1", 1, 1)]
    assert held.readings == 0
    assert held.take(T0_US + 3 * MINUTE_US) is None


def test_readings_held_too_long_or_too_many_or_at_a_stop_are_taken_out_at_once() -> None:
    clock = Clock()
    held = HeldReadings(max_readings=3, max_hold_s=120, clock=clock)
    held.add(("a1", 1, 1), columns((1, 0, 1.0)))
    assert held.take(T0_US) is None
    clock.now += 120  # stamped ahead of this clock, or its minute never ends: held no longer
    taken = held.take(T0_US)
    assert taken is not None
    assert taken.claims == [("a1", 1, 1)]
    held.add(("a1", 1, 2), columns((1, 0, 1.0), (1, 1, 2.0)))
    assert held.take(T0_US) is None
    held.add(("a1", 1, 3), columns((1, 2, 3.0), (1, 3, 4.0)))  # 4 > 3 held
    taken = held.take(T0_US)
    assert taken is not None
    assert taken.claims == [("a1", 1, 2), ("a1", 1, 3)]
    held.add(("a1", 1, 4), columns((1, 4, 5.0)))
    taken = held.take(T0_US, everything=True)
    assert taken is not None
    assert taken.readings == 1


def test_what_could_not_be_written_is_held_again_first() -> None:
    held = HeldReadings(clock=Clock())
    held.add(("a1", 1, 1), columns((1, 0, 1.0)))
    taken = held.take(T0_US + MINUTE_US)
    assert taken is not None
    held.add(("a1", 1, 2), columns((1, 1, 2.0)))
    held.give_back(taken)
    assert held.readings == 2
    again = held.take(T0_US + MINUTE_US)
    assert again is not None
    assert again.claims == [("a1", 1, 1), ("a1", 1, 2)]


def test_a_batch_without_numeric_readings_is_taken_out_at_once_to_drop_its_claim() -> None:
    held = HeldReadings(clock=Clock())
    held.add(("a1", 1, 1), Columns.empty())
    taken = held.take(0)
    assert taken is not None
    assert taken.readings == 0
    assert summarize(Columns.joined(taken.parts(1)[0])).tag.size == 0


def test_numeric_columns_keep_numbers_and_wide_integers_not_text_tags() -> None:
    def reading(tag: str, kind: DataType, value: Value | None, quality: Quality) -> Reading:
        return Reading("press", tag, kind, T0_US, value, quality)

    readings = [
        reading("speed", DataType.FLOAT64, 2.5, Quality.GOOD),
        reading("recipe", DataType.STRING, "R1", Quality.GOOD),
        reading("count", DataType.INT64, 2**60 + 1, Quality.UNCERTAIN),  # travels as text
        reading("speed", DataType.FLOAT64, None, Quality.BAD),
        reading("speed", DataType.FLOAT64, math.inf, Quality.GOOD),
    ]
    batch = DECODER.decode(
        encode_batch("a1", 1, [1, 2, 3, 4, 5], readings), "a1", Topics().batch("a1")
    )
    numbers = {"speed": 10, "recipe": 11, "count": 12}
    ids = np.array([numbers[ref.tag] for ref in batch.tags.refs], np.int32)
    found = numeric_columns(batch, ids)
    assert found.tag.tolist() == [10, 12, 10, 10]
    assert found.seq.tolist() == [1, 3, 4, 5]
    assert found.good.tolist() == [True, False, False, True]
    assert found.value[0] == 2.5
    assert found.value[1] == float(2**60 + 1)
    assert math.isnan(found.value[2])
    assert math.isnan(found.value[3])


def test_a_minute_without_numbers_has_counts_only() -> None:
    parts = summarize(columns((1, 0, math.nan), (1, 1_000_000, math.nan), (2, 0, 4.0)))
    assert parts.tag.tolist() == [1, 2]
    assert parts.count.tolist() == [2, 1]
    assert parts.numbers.tolist() == [0, 1]
    assert parts.span_hi.tolist() == [T0_US + 1_000_000, T0_US]
    assert math.isnan(parts.total[0])
    assert parts.total[1] == 4.0
    assert parts.step_area.tolist() == [0.0, 0.0]


def test_summaries_follow_time_then_sequence_within_each_minute() -> None:
    # Given out of order: tag 1 at 30 s (value 5), 0 s (1) and 0 s again (seq later: 3), and
    # at 70 s (minute 1); the low is reached first at 0 s, the high at 30 s.
    parts = summarize(
        Columns(
            np.array([1, 1, 1, 1], np.int32),
            np.array([T0_US + 30_000_000, T0_US, T0_US, T0_US + 70_000_000], np.int64),
            np.array([9, 1, 2, 10], np.int64),
            np.array([True, True, False, True]),
            np.array([5.0, 1.0, 3.0, 7.0]),
        )
    )
    assert parts.bucket.tolist() == [T0_US, T0_US + MINUTE_US]
    assert parts.first_value.tolist() == [1.0, 7.0]
    assert parts.last_value.tolist() == [5.0, 7.0]
    assert parts.low_ts[0] == T0_US
    assert parts.high_ts[0] == T0_US + 30_000_000
    assert parts.good.tolist() == [2, 1]
    # Steps: 1 x 0 s + 3 x 30 s; lines: (1 + 3) / 2 x 0 + (3 + 5) / 2 x 30; rises 2 + 2.
    assert parts.step_area[0] == pytest.approx(90.0)
    assert parts.linear_area[0] == pytest.approx(120.0)
    assert parts.increase.tolist() == [4.0, 0.0]


def test_memory_stays_bounded_when_nothing_can_be_rolled_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = HeldReadings(max_readings=2, clock=Clock())
    for number in range(1, 7):
        held.add(("a1", 1, number), columns((1, number, 1.0), (1, number + 10, 2.0)))
    # Over 4 x 2 readings: the two oldest batches are let go of (their claims stay in the
    # database), with one warning.
    assert held.readings == 8
    assert held.let_go == 2
    assert caplog.text.count("letting go of the oldest batches") == 1
    taken = held.take(T0_US)
    assert taken is not None
    assert taken.claims == [("a1", 1, number) for number in range(3, 7)]


def test_an_agent_whose_batches_reach_other_collectors_too_is_left_to_the_deriver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    held = HeldReadings(clock=clock)

    def holds(agent: str, epoch: int, number: int) -> bool:
        """Batch `number` of ten readings: sequence numbers 10n+1 to 10n+10."""
        return held.holds(agent, epoch, 10 * number + 1, 10 * number + 10)

    # Batches out of order (writes commit in any order): a gap that fills is no sign.
    assert [holds("a1", 1, n) for n in (1, 3, 2, 4, 4)] == [True] * 5
    clock.now += 60
    assert holds("a1", 1, 5)
    # Every other batch, for longer than GAP_S: the others went to another collector.
    assert [holds("a1", 1, n) for n in (7, 9)] == [True, True]
    clock.now += 31
    assert not holds("a1", 1, 11)
    assert "agent a1: its batches also reach other collectors" in caplog.text
    assert holds("a2", 1, 1)  # other agents are not concerned
    # A new epoch (the agent restarted) keeps the verdict until it runs out.
    assert not holds("a1", 2, 1)
    clock.now += 600
    assert holds("a1", 2, 2)
    # A gap filled in two parts: batches 3 and 4 arrive after 5.
    assert [holds("a1", 2, n) for n in (5, 4, 3)] == [True] * 3
    clock.now += 31
    assert holds("a1", 2, 6)


def taken_claims(held: HeldReadings) -> list[tuple[str, int, int]]:
    """The claims of the batches taken out once minute 0 has ended ([] for none)."""
    taken = held.take(T0_US + MINUTE_US)
    return [] if taken is None else taken.claims


def test_an_agents_batches_after_one_still_missing_wait_for_it() -> None:
    clock = Clock()
    held = HeldReadings(max_hold_s=120, clock=clock)
    for first in (1, 21):  # readings 11-20 have not come yet
        assert held.holds("a1", 1, first, first + 9)
        held.add(("a1", 1, first), columns((1, first, 1.0)))
    assert held.holds("a2", 1, 5, 9)
    held.add(("a2", 1, 5), columns((2, 0, 1.0)))  # another agent's do not wait
    assert taken_claims(held) == [("a1", 1, 1), ("a2", 1, 5)]
    assert taken_claims(held) == []
    assert held.holds("a1", 1, 11, 20)
    held.add(("a1", 1, 11), columns((1, 11, 1.0)))
    assert taken_claims(held) == [("a1", 1, 21), ("a1", 1, 11)]
    # A batch of a new epoch does not wait for the old one's gap; nor does one held too long.
    assert held.holds("a3", 1, 1, 10)
    assert held.holds("a3", 1, 21, 30)
    held.add(("a3", 1, 21), columns((3, 0, 1.0)))
    held.add(("a3", 2, 1), columns((3, 1, 1.0)))
    assert taken_claims(held) == [("a3", 2, 1)]
    clock.now += 121
    assert taken_claims(held) == [("a3", 1, 21)]


def test_batches_after_one_still_being_written_wait_until_it_is_added_or_forgotten() -> None:
    clock = Clock()
    held = HeldReadings(clock=clock)
    for first in (1, 11, 21):
        assert held.holds("a1", 1, first, first + 9)
    held.add(("a1", 1, 21), columns((1, 0, 1.0)))
    assert taken_claims(held) == []  # 1 and 11 are still being written
    held.forget(("a1", 1, 1))  # stored before: it will not come
    held.add(("a1", 1, 11), columns((1, 1, 1.0)))
    assert taken_claims(held) == [("a1", 1, 21), ("a1", 1, 11)]
    # A write that failed and is not tried again holds the agent's next batches up for
    # GAP_S at most.
    assert held.holds("a1", 1, 31, 40)
    assert held.holds("a1", 1, 41, 50)
    held.add(("a1", 1, 41), columns((1, 2, 1.0)))
    assert taken_claims(held) == []
    clock.now += 31
    assert taken_claims(held) == [("a1", 1, 41)]


def test_a_batch_after_a_gap_waits_gap_s_at_most_when_its_agent_sends_no_more() -> None:
    # docs/analytics.md: a batch waits for a missing one before it "30 s at most". The gap is
    # only given up on in `holds`, so when the agent sends nothing more (its missing batch
    # went to another collector, then it stopped) the batch waits for max_hold_s instead.
    clock = Clock()
    held = HeldReadings(max_hold_s=120, clock=clock)
    for first in (1, 21):  # readings 11-20 never come
        assert held.holds("a1", 1, first, first + 9)
        held.add(("a1", 1, first), columns((1, first, 1.0)))
    assert taken_claims(held) == [("a1", 1, 1)]
    clock.now += GAP_S + 1
    assert taken_claims(held) == [("a1", 1, 21)], "still waiting for the gap after GAP_S"


async def test_a_wait_for_batches_answers_whether_one_came_in_time() -> None:
    held = HeldReadings()
    assert not await held.added_within(0.01)
    waiting = asyncio.ensure_future(held.added_within(10))
    await asyncio.sleep(0)  # it waits
    held.add(("a1", 1, 1), columns((1, 0, 1.0)))
    assert await asyncio.wait_for(waiting, 5)


async def test_a_wait_settled_already_is_left_as_it_is() -> None:
    # A batch and the timer can both come before the waiting writer resumes.
    settled = asyncio.get_running_loop().create_future()
    settled.set_result(True)
    _settle(settled, False)
    assert settled.result() is True


def test_large_takes_go_in_lanes_of_whole_agents_about_even_in_readings() -> None:
    held = HeldReadings(clock=Clock())
    one = columns((1, 0, 1.0))
    held.add(("a", 1, 1), columns((1, 0, 1.0), (1, 1, 2.0)))
    held.add(("b", 1, 1), columns((2, 0, 1.0), (2, 1, 2.0)))
    held.add(("a", 1, 3), one)
    held.add(("c", 1, 1), columns((3, 0, 1.0), (3, 1, 2.0)))
    taken = held.take(T0_US, everything=True)
    assert taken is not None
    assert taken.lanes(2, most=7) == [taken]  # small enough for one transaction
    assert taken.lanes(1, most=0) == [taken]
    # a holds 3 readings, b and c 2 each: a alone, then b and c together.
    lanes = taken.lanes(2, most=0)
    assert [lane.claims for lane in lanes] == [
        [("a", 1, 1), ("a", 1, 3)],
        [("b", 1, 1), ("c", 1, 1)],
    ]
    assert [lane.readings for lane in lanes] == [3, 4]


def test_a_pause_is_several_times_the_batches_recent_spacing_within_bounds() -> None:
    clock = Clock()
    held = HeldReadings(clock=clock)
    assert held.quiet(0.1) == 0.1  # nothing to go by yet
    for number in range(1, 40):  # a burst: a batch every 5 ms
        held.add(("a1", 1, number), columns((1, number, 1.0)))
        clock.now += 0.005
    assert held.quiet(0.1) == pytest.approx(0.02)
    for number in range(40, 45):  # batches a second apart: the longest pause it may wait
        clock.now += 1.0
        held.add(("a1", 1, number), columns((1, number, 1.0)))
    assert held.quiet(0.1) == 0.1
    for number in range(45, 100):  # batches closer than can be told apart
        held.add(("a1", 1, number), columns((1, number, 1.0)))
    assert held.quiet(0.1) == 0.01
