"""Stops classified with a site's loss mapping, gathered into events; their Pareto and the
time in each state (docs/analytics.md), against values worked out by hand."""

from datetime import UTC, datetime

import pytest

from collector.analytics.equipment import LossMapping, TimeElement, TpmLoss
from collector.analytics.losses import (
    Code,
    Reclassification,
    StateSpan,
    StopEvent,
    pareto,
    stop_events,
    time_in_state,
)
from tests.harness import PLANT_STATES

# The sample site's mapping (config/equipment.yaml): 0 stopped, 1 running, 2 idle, 3 down,
# 4 setup; reason 2 applies to `down` only, reason 3 is a minor stoppage whatever its length.
MAPPING = LossMapping.model_validate(
    {
        "microstop_threshold_s": 120,
        "states": PLANT_STATES,
        "reasons": [
            {"value": 1, "name": "Material shortage", "element": "delay"},
            {"value": 2, "name": "Tool change", "element": "setup", "states": ["down"]},
            {"value": 3, "name": "Jam", "element": "delay", "tpm": "minor_stop"},
            {"value": 4, "name": "Maintenance", "element": "planned_downtime", "states": ["down"]},
        ],
    }
)
STOPPED, RUNNING, IDLE, DOWN, SETUP = 0, 1, 2, 3, 4


def at(clock: str) -> datetime:
    """A time of Monday 2 March 2026 (UTC), HH:MM."""
    hours, minutes = clock.split(":")
    return datetime(2026, 3, 2, int(hours), int(minutes), tzinfo=UTC)


def span(
    start: str,
    end: str,
    state: Code,
    reason: Code | None = None,
    product: str | None = None,
    *,
    open: bool = False,
) -> StateSpan:
    """A state span between two times of the test day."""
    return StateSpan(at(start), at(end), state, reason, product, open=open)


# One of every kind of stop, from 06:00 to 08:00.
SPANS = [
    span("06:00", "06:10", RUNNING),
    # a stop of one state code whose reason and product change inside it: one event, with
    # the first reason seen (2, Tool change: a setup while `down`)
    span("06:10", "06:15", DOWN, None, "A"),
    span("06:15", "06:40", DOWN, 2, "B"),
    span("06:40", "06:50", RUNNING),
    span("06:50", "06:51", DOWN),  # 60 s < 120 s: a minor stoppage
    span("06:51", "07:00", RUNNING),
    span("07:00", "07:10", DOWN, 3),  # Jam: minor_stop whatever its length (600 s)
    span("07:10", "07:20", IDLE, 2),  # Tool change does not apply to idle: no_orders
    # 07:20-07:25: no span (unknown), so the next idle span is another event
    span("07:25", "07:30", IDLE, 99),  # a reason code the mapping lacks
    span("07:30", "07:40", True),  # True is not the code 1: unmapped, no event
    span("07:40", "07:45", 0.0),  # 0.0 is the code 0 ...
    span("07:45", "07:50", STOPPED),  # ... so this continues the same stop
    span("07:50", "08:00", DOWN, 1.0, open=True),  # still going on at 08:00
]


def test_stops_are_gathered_into_events_and_classified() -> None:
    events = stop_events(MAPPING, SPANS, {})
    assert [(e.start, e.end, e.duration_s) for e in events] == [
        (at("06:10"), at("06:40"), 1800.0),  # 30 min
        (at("06:50"), at("06:51"), 60.0),
        (at("07:00"), at("07:10"), 600.0),
        (at("07:10"), at("07:20"), 600.0),
        (at("07:25"), at("07:30"), 300.0),
        (at("07:40"), at("07:50"), 600.0),
        (at("07:50"), None, 600.0),  # open: 10 min so far
    ]
    assert [(e.state_name, e.reason, e.reason_name) for e in events] == [
        ("down", 2, "Tool change"),
        ("down", None, None),
        ("down", 3, "Jam"),
        ("idle", 2, "Tool change"),
        ("idle", 99, None),
        ("stopped", None, None),
        ("down", 1.0, "Material shortage"),
    ]
    assert [(e.element, e.tpm, e.minor) for e in events] == [
        (TimeElement.SETUP, TpmLoss.SETUP_ADJUSTMENT, False),  # the reason's element, TPM default
        (TimeElement.DELAY, TpmLoss.MINOR_STOP, True),
        (TimeElement.DELAY, TpmLoss.MINOR_STOP, True),
        (TimeElement.NO_ORDERS, None, False),
        (TimeElement.NO_ORDERS, None, False),
        (TimeElement.PLANNED_DOWNTIME, None, False),
        (TimeElement.DELAY, TpmLoss.BREAKDOWN, False),  # 600 s >= 120 s
    ]
    assert events[-1].until == at("08:00")
    assert events[0].until == at("06:40")
    assert all(event.reclassified is None for event in events)


def test_a_threshold_of_zero_makes_no_stop_minor() -> None:
    mapping = MAPPING.model_copy(update={"microstop_threshold_s": 0.0})
    (event,) = stop_events(mapping, [span("06:50", "06:51", DOWN)], {})
    assert (event.tpm, event.minor) == (TpmLoss.BREAKDOWN, False)


def test_a_reclassification_replaces_the_reason_of_the_event_it_starts() -> None:
    maintenance = Reclassification(4, "key pw_ab12", "shift lead", at("09:00"), "was planned")
    ignored = Reclassification(1, "key pw_ab12", None, at("09:00"), None)
    events = stop_events(MAPPING, SPANS, {at("06:10"): maintenance, at("06:15"): ignored})
    first = events[0]
    assert (first.reason, first.reason_name) == (4, "Maintenance")
    assert (first.element, first.tpm, first.minor) == (TimeElement.PLANNED_DOWNTIME, None, False)
    assert first.reclassified == maintenance
    # 06:15 starts no event: nothing else changes
    assert events[1:] == stop_events(MAPPING, SPANS, {})[1:]


def test_spans_must_not_overlap() -> None:
    with pytest.raises(ValueError, match="overlap or are unsorted at 2026-03-02T06:05"):
        stop_events(MAPPING, [span("06:00", "06:10", DOWN), span("06:05", "06:20", DOWN)], {})


def test_pareto_by_reason_sums_the_event_time_in_the_window() -> None:
    events = stop_events(MAPPING, SPANS, {})
    bars = pareto(events, (at("06:00"), at("08:00")), by="reason")
    # Tool change 1800 + 600; no reason 60 + 600; Jam 600; Material shortage 600 (tied with
    # Jam: same events, so by name); 99 300. Total 2400 + 660 + 600 + 600 + 300 = 4560.
    assert [(b.label, b.reason, b.seconds, b.events) for b in bars] == [
        ("Tool change", 2, 2400.0, 2),
        ("no reason", None, 660.0, 2),
        ("Jam", 3, 600.0, 1),
        ("Material shortage", 1.0, 600.0, 1),
        ("99", 99, 300.0, 1),
    ]
    assert [b.share for b in bars] == pytest.approx(
        [2400 / 4560, 660 / 4560, 600 / 4560, 600 / 4560, 300 / 4560]
    )
    assert all(b.element is None and b.tpm is None for b in bars)


def test_pareto_clips_events_to_the_window() -> None:
    events = stop_events(MAPPING, SPANS, {})
    bars = pareto(events, (at("06:30"), at("07:05")))
    # Tool change 06:30-06:40 = 600; no reason 06:50-06:51 = 60; Jam 07:00-07:05 = 300
    assert [(b.label, b.seconds) for b in bars] == [
        ("Tool change", 600.0),
        ("Jam", 300.0),
        ("no reason", 60.0),
    ]
    assert sum(b.share for b in bars) == pytest.approx(1.0)


def test_pareto_by_category() -> None:
    events = stop_events(MAPPING, SPANS, {})
    bars = pareto(events, (at("06:00"), at("09:00")), by="category")
    # ASUT 1800; ADOT 600 + 300; minor stops 60 + 600; PDOT 600 and breakdown 600 (the open
    # event, 07:50 to now = 08:00) tie on time and events, so by label
    assert [(b.label, b.element, b.tpm, b.seconds, b.events) for b in bars] == [
        ("ASUT / setup_adjustment", TimeElement.SETUP, TpmLoss.SETUP_ADJUSTMENT, 1800.0, 1),
        ("ADOT", TimeElement.NO_ORDERS, None, 900.0, 2),
        ("ADET / minor_stop", TimeElement.DELAY, TpmLoss.MINOR_STOP, 660.0, 2),
        ("ADET / breakdown", TimeElement.DELAY, TpmLoss.BREAKDOWN, 600.0, 1),
        ("PDOT", TimeElement.PLANNED_DOWNTIME, None, 600.0, 1),
    ]
    assert bars[0].share == pytest.approx(1800 / 4560)
    assert all(b.reason is None for b in bars)


def test_time_in_state_in_seconds_and_percent_of_the_window() -> None:
    rows = time_in_state(MAPPING, SPANS, at("06:00"), at("08:00"))
    # 7200 s. running 600 + 600 + 540; down 1800 + 60 + 600 + 600; idle 600 + 300;
    # stopped 300 + 300; setup 0; unknown: the gap 300 + the unmapped code True 600.
    # 1740 + 3060 + 900 + 600 + 0 + 900 = 7200
    assert [(row.state, row.element, row.seconds) for row in rows] == [
        ("stopped", TimeElement.PLANNED_DOWNTIME, 600.0),
        ("running", TimeElement.PRODUCTION, 1740.0),
        ("idle", TimeElement.NO_ORDERS, 900.0),
        ("down", TimeElement.DELAY, 3060.0),
        ("setup", TimeElement.SETUP, 0.0),
        (None, None, 900.0),
    ]
    assert [row.percent for row in rows] == pytest.approx(
        [600 / 72, 1740 / 72, 900 / 72, 3060 / 72, 0.0, 900 / 72]
    )


def test_a_window_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="must end after it starts"):
        time_in_state(MAPPING, SPANS, at("08:00"), at("08:00"))
    with pytest.raises(ValueError, match="must end after it starts"):
        pareto([], (at("09:00"), at("08:00")))


def test_an_event_knows_it_is_open() -> None:
    event: StopEvent = stop_events(MAPPING, [span("07:50", "07:51", DOWN, open=True)], {})[0]
    # 60 s so far, under the threshold: a minor stoppage for now
    assert (event.end, event.duration_s, event.minor, event.until) == (
        None,
        60.0,
        True,
        at("07:51"),
    )
