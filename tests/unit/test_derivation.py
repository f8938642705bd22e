"""Planning a deriver pass, and deriving a machine's spans and counts from readings."""

from datetime import UTC, datetime, timedelta

import pytest

from collector.analytics.derive_plan import LoggedWrite, plan
from collector.analytics.deriver import in_groups
from collector.analytics.equipment import Counter, CounterKind, Machine
from collector.analytics.machine_derivation import (
    Codes,
    MachineReading,
    Span,
    count_rows,
    counter_increase,
    derive,
    product_text,
    usable,
)
from collector.analytics.machine_store import MachineTags, Rederivation
from collector.analytics.timespans import floor_minute

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_floor_minute_keeps_a_boundary_and_drops_seconds() -> None:
    assert floor_minute(at(0)) == T0
    assert floor_minute(at(59.999)) == T0
    assert floor_minute(at(60)) == at(60)
    assert floor_minute(datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC)) == datetime(
        1969, 12, 31, 23, 59, tzinfo=UTC
    )


def test_a_pass_rolls_up_ended_minutes_once_and_keeps_the_running_one_logged() -> None:
    running = at(180)  # 06:03 is still running
    writes = [
        LoggedWrite(1, [1, 2], at(10), at(70)),  # 06:00-06:01
        LoggedWrite(2, [2], at(65), at(200)),  # 06:01-06:03, into the running minute
        LoggedWrite(3, [3], at(-3600), at(-3590)),  # a late write, an hour back
        LoggedWrite(4, [1], at(190), at(195)),  # the running minute only
    ]
    work = plan(writes, running)
    assert work.rollups == [
        ([3], at(-3600), at(-3540)),
        ([1], at(0), at(120)),
        ([2], at(0), at(180)),  # 06:00-06:02 and 06:01-06:03 joined
    ]
    assert work.pending == ([1, 2], at(180), at(200))


def test_a_pass_with_only_ended_minutes_leaves_nothing_logged() -> None:
    work = plan([LoggedWrite(1, [5], at(0), at(30))], at(60))
    assert work.rollups == [([5], at(0), at(60))]
    assert work.pending is None
    assert plan([], at(60)).rollups == []


def test_spans_touching_end_to_start_are_joined_and_apart_are_not() -> None:
    writes = [LoggedWrite(1, [1], at(0), at(10)), LoggedWrite(2, [1], at(60), at(61))]
    writes.append(LoggedWrite(3, [1], at(300), at(301)))
    assert plan(writes, at(600)).rollups == [([1], at(0), at(120)), ([1], at(300), at(360))]


# --- counters ----------------------------------------------------------------------------

CUMULATIVE = Counter(tag="m/good", agent="a1")
WRAP16 = Counter(tag="m/good", agent="a1", rollover=65536)
DELTA = Counter(tag="m/good", agent="a1", kind=CounterKind.DELTA)


@pytest.mark.parametrize(
    ("counter", "previous", "current", "counted"),
    [
        (CUMULATIVE, None, 100.0, 0.0),  # the first reading: nothing known to count from
        (CUMULATIVE, 100.0, 105.0, 5.0),
        (CUMULATIVE, 100.0, 100.0, 0.0),
        (CUMULATIVE, 100.0, 3.0, 3.0),  # a reset: counted from 0
        (WRAP16, 65530.0, 4.0, 10.0),  # 6 to 65536, then 4
        (WRAP16, 40000.0, 4.0, 4.0),  # wrapping would be 25540 > 65536 / 4: a reset
        (WRAP16, 49152.0, 0.0, 16384.0),  # exactly a quarter: still a rollover
        (DELTA, None, 7.0, 7.0),
        (DELTA, 9.0, 2.0, 2.0),
    ],
)
def test_counter_increase(
    counter: Counter, previous: float | None, current: float, counted: float
) -> None:
    assert counter_increase(counter, previous, current) == counted


def test_product_text_names_whole_numbers_without_a_fraction() -> None:
    assert product_text(2.0) == "2"
    assert product_text(2.5) == "2.5"
    assert product_text("P-1") == "P-1"
    assert product_text(7) == "7"


# --- spans and counts --------------------------------------------------------------------

MACHINE = Machine.model_validate(
    {
        "area": "a",
        "line": "l",
        "state": {"tag": "m/state", "agent": "a1"},
        "reason": {"tag": "m/reason", "agent": "a1"},
        "good": {"tag": "m/good", "agent": "a1", "rollover": 65536},
        "scrap": {"tag": "m/scrap", "agent": "a1", "kind": "delta"},
        "product": {"tag": "m/product", "agent": "a1"},
    }
)


def r(seconds: float, role: str, value: bool | int | float | str) -> MachineReading:
    return MachineReading(at(seconds), role, value)


def test_spans_start_at_the_first_state_and_split_on_any_code_change() -> None:
    readings = [
        r(5, "product", "A"),  # before any state: no span yet
        r(10, "state", 1),
        r(10, "good", 100),
        r(30, "good", 110),
        r(40, "state", 3),
        r(40, "reason", 5),
        r(70, "good", 65530),  # a jump up counts: +65420
        r(80, "state", 3),  # the same codes again: no new span
        r(90, "reason", 2),
        r(100, "product", "B"),
        r(100, "good", 4),  # wrapped: 6 + 4 = 10, counted for A (B starts now)
        r(110, "scrap", 2),
        r(130, "state", 1),
        r(130, "good", 9),
    ]
    derived = derive(MACHINE, T0, Codes(), {}, readings)
    assert derived.spans == [
        Span(at(10), at(40), 1, None, "A"),
        Span(at(40), at(90), 3, 5, "A"),
        Span(at(90), at(100), 3, 2, "A"),
        Span(at(100), at(130), 3, 2, "B"),
        Span(at(130), None, 1, 2, "B"),
    ]
    assert list(count_rows(derived)) == [
        (T0, "A", 10.0, 0.0),  # 100 -> 110 at 06:00:30 (the first reading counts nothing)
        (at(60), "A", 65420.0 + 10.0, 0.0),
        (at(60), "B", 0.0, 2.0),
        (at(120), "B", 5.0, 0.0),
    ]


def test_derivation_from_a_minute_continues_the_codes_and_counters_before_it() -> None:
    before = Codes(state=1, reason=None, product="A")
    derived = derive(
        MACHINE, at(60), before, {"good": 50.0}, [r(75, "good", 52), r(80, "state", 2)]
    )
    assert derived.spans == [Span(at(60), at(80), 1, None, "A"), Span(at(80), None, 2, None, "A")]
    assert list(count_rows(derived)) == [(at(60), "A", 2.0, 0.0)]


def test_without_any_state_there_are_no_spans_and_counts_have_no_product() -> None:
    derived = derive(MACHINE, T0, Codes(), {}, [r(1, "reason", 4), r(2, "scrap", 3)])
    assert derived.spans == []
    assert list(count_rows(derived)) == [(T0, "", 0.0, 3.0)]


def test_a_change_at_the_start_itself_opens_no_empty_span() -> None:
    before = Codes(state=1, reason=None, product="A")
    derived = derive(MACHINE, at(60), before, {}, [r(60, "state", 3)])
    assert derived.spans == [Span(at(60), None, 3, None, "A")]


@pytest.mark.parametrize(
    ("role", "value", "taken"),
    [
        ("state", 3, 3),
        ("state", "RUN", "RUN"),
        ("state", 2.0, 2.0),
        ("state", float("nan"), None),  # no code: like a reading of bad quality
        ("reason", float("inf"), None),
        ("reason", -1.8e308, None),  # a PLC's "no value"
        ("good", 12, 12.0),
        ("good", "18446744073709551615", 1.8446744073709552e19),  # a uint64 kept as text
        ("good", "jam", None),
        ("scrap", True, None),
        ("scrap", float("nan"), None),
        ("scrap", 1e300, None),
    ],
)
def test_values_without_a_code_or_a_count_are_left_out(
    role: str, value: bool | int | float | str, taken: bool | int | float | str | None
) -> None:
    assert usable(role, value) == taken


def test_machines_are_derived_together_in_groups_of_a_slice_of_readings() -> None:
    tags = MachineTags(MACHINE, {"state": [1]}, {})
    jobs = [Rederivation((f"s{n}", "m"), tags, T0, T0) for n in range(5)]
    # 3 + 2 fit one slice of 6; the full one (7 = most + 1) goes alone; then 4 + 1.
    groups = list(in_groups(jobs, [3, 2, 7, 4, 1], 6))
    assert [[job.key[0] for job in group] for group in groups] == [
        ["s0", "s1"],
        ["s2"],
        ["s3", "s4"],
    ]
    assert list(in_groups([], [], 6)) == []
