"""The shift calendar in UTC, checked by hand on days of 23 and 25 hours, and by a property.

Europe/Berlin changes on Sunday 2026-03-29 (02:00 CET, 01:00Z, becomes 03:00 CEST) and on
Sunday 2026-10-25 (03:00 CEST, 01:00Z, becomes 02:00 CET). CET is UTC+1, CEST UTC+2.
America/New_York changes on 2026-03-08 and 2026-11-01 (EST UTC-5, EDT UTC-4).
"""

import datetime as dt
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.analytics.buckets import to_utc
from collector.analytics.calendar import (
    Group,
    GroupBy,
    PlannedSpan,
    ShiftOccurrence,
    group_windows,
    planned_busy,
    planned_downtime_spans,
    production_day,
    relative_window,
    shift_occurrences,
)
from collector.analytics.equipment import WEEKDAYS, Site, load_plant, minute_of_day

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "equipment.yaml"
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def make_site(
    shifts: list[dict[str, Any]],
    *,
    zone: str = "Europe/Berlin",
    day_start: str = "00:00",
    downtime: list[dict[str, Any]] | None = None,
    days_off: list[str] | None = None,
    name: str | None = "Plant 7",
) -> Site:
    return Site.model_validate(
        {
            "name": name,
            "time_zone": zone,
            "production_day_start": day_start,
            "areas": [{"id": "a", "lines": [{"id": "l"}]}],
            "calendar": {
                "shifts": shifts,
                "planned_downtime": downtime or [],
                "days_off": days_off or [],
            },
            "loss_mapping": {
                "states": [{"name": "running", "values": [1], "element": "production"}]
            },
        }
    )


def sample_site() -> Site:
    """config/equipment.yaml: early 06-14 (lunch 10:00-10:30) and late 14-22 (dinner 18:00-18:30)
    mon-fri, night 22-06 mon-thu, planned downtime fri 12-13, days off 12-24, 12-25, 12-31;
    production day from 06:00, Europe/Berlin."""
    return load_plant(SAMPLE).sites[0].site()


def total(spans: list[PlannedSpan]) -> dt.timedelta:
    return sum((span.end - span.start for span in spans), dt.timedelta())


def night(days: list[str], breaks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"name": "night", "start": "22:00", "end": "06:00", "days": days, "breaks": breaks or []}


# --- shifts across the changes -------------------------------------------------------------


def test_a_night_shift_lasts_7_hours_across_the_spring_change_and_9_across_the_autumn_one() -> None:
    site = make_site([night(["sat"])])
    spring = shift_occurrences(site, utc(2026, 3, 28), utc(2026, 3, 30))
    # Sat 22:00 CET = 21:00Z; Sun 06:00 CEST = 04:00Z: 7 h
    assert spring == [
        ShiftOccurrence("night", dt.date(2026, 3, 28), utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))
    ]
    autumn = shift_occurrences(site, utc(2026, 10, 24), utc(2026, 10, 26))
    # Sat 22:00 CEST = 20:00Z; Sun 06:00 CET = 05:00Z: 9 h
    assert autumn == [
        ShiftOccurrence("night", dt.date(2026, 10, 24), utc(2026, 10, 24, 20), utc(2026, 10, 25, 5))
    ]
    assert total(planned_busy(site, utc(2026, 3, 28), utc(2026, 3, 30))) == 7 * HOUR
    assert total(planned_busy(site, utc(2026, 10, 24), utc(2026, 10, 26))) == 9 * HOUR


def test_occurrences_overlapping_the_range_are_whole_and_planned_time_is_clipped() -> None:
    site = make_site([night(["sat"])])
    # the range starts and ends inside the 21:00Z-04:00Z occurrence
    inside = (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))
    assert [(o.start, o.end) for o in shift_occurrences(site, *inside)] == [
        (utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))
    ]
    assert planned_busy(site, *inside) == [PlannedSpan(*inside, "night", dt.date(2026, 3, 28))]
    # a range ending exactly at the start, or starting exactly at the end, has none of it
    assert shift_occurrences(site, utc(2026, 3, 28, 20), utc(2026, 3, 28, 21)) == []
    assert shift_occurrences(site, utc(2026, 3, 29, 4), utc(2026, 3, 29, 5)) == []


def test_the_range_may_be_given_in_any_zone_and_the_answer_is_utc() -> None:
    site = make_site([night(["wed"])])
    berlin = ZoneInfo("Europe/Berlin")
    # local Wed 2026-03-04 00:00 to Fri 00:00 CET
    found = shift_occurrences(
        site, dt.datetime(2026, 3, 4, tzinfo=berlin), dt.datetime(2026, 3, 6, tzinfo=berlin)
    )
    assert [(o.start, o.end) for o in found] == [(utc(2026, 3, 4, 21), utc(2026, 3, 5, 5))]
    assert found[0].start.tzinfo is dt.UTC
    group = group_windows(site, dt.datetime(2026, 3, 4, tzinfo=berlin), utc(2026, 3, 5), "none")
    assert group == [Group("all", utc(2026, 3, 3, 23), utc(2026, 3, 5))]
    assert group[0].start.tzinfo is dt.UTC


# --- breaks ----------------------------------------------------------------------------------


def test_breaks_across_midnight_in_a_night_shift() -> None:
    breaks = [{"start": "23:45", "end": "00:15"}, {"start": "03:00", "end": "03:20"}]
    site = make_site([night(["wed"], breaks)])
    date = dt.date(2026, 3, 4)
    spans = planned_busy(site, utc(2026, 3, 4), utc(2026, 3, 6))
    # occurrence Wed 22:00 CET = 21:00Z to Thu 06:00 = 05:00Z; 23:45-00:15 CET = 22:45Z-23:15Z;
    # 03:00 is before the shift's 22:00 start, so on Thu: 03:00-03:20 CET = 02:00Z-02:20Z
    assert spans == [
        PlannedSpan(utc(2026, 3, 4, 21), utc(2026, 3, 4, 22, 45), "night", date),
        PlannedSpan(utc(2026, 3, 4, 23, 15), utc(2026, 3, 5, 2), "night", date),
        PlannedSpan(utc(2026, 3, 5, 2, 20), utc(2026, 3, 5, 5), "night", date),
    ]
    # 8 h - 30 min - 20 min = 7 h 10 min
    assert total(spans) == 7 * HOUR + 10 * MINUTE


def test_breaks_at_skipped_and_repeated_times_map_as_postgresql_maps_them() -> None:
    spring = make_site([night(["sat"], [{"start": "02:15", "end": "02:45"}])])
    # 02:15 and 02:45 do not exist on 03-29: with CET (+1) they are 01:15Z-01:45Z (03:15-03:45
    # CEST): 7 h - 30 min
    spans = planned_busy(spring, utc(2026, 3, 28), utc(2026, 3, 30))
    assert [(s.start, s.end) for s in spans] == [
        (utc(2026, 3, 28, 21), utc(2026, 3, 29, 1, 15)),
        (utc(2026, 3, 29, 1, 45), utc(2026, 3, 29, 4)),
    ]
    autumn = make_site([night(["sat"], [{"start": "02:30", "end": "02:45"}])])
    # 02:30 happens twice on 10-25; with CET (+1), the second time: 01:30Z-01:45Z; 9 h - 15 min
    spans = planned_busy(autumn, utc(2026, 10, 24), utc(2026, 10, 26))
    assert [(s.start, s.end) for s in spans] == [
        (utc(2026, 10, 24, 20), utc(2026, 10, 25, 1, 30)),
        (utc(2026, 10, 25, 1, 45), utc(2026, 10, 25, 5)),
    ]
    assert total(spans) == 9 * HOUR - 15 * MINUTE
    gone = make_site([night(["sat"], [{"start": "02:30", "end": "03:00"}])])
    # 02:30 -> 01:30Z but 03:00 CEST = 01:00Z: the break has no time, the shift keeps its 7 h
    assert total(planned_busy(gone, utc(2026, 3, 28), utc(2026, 3, 30))) == 7 * HOUR


# --- planned downtime ------------------------------------------------------------------------


def test_planned_downtime_cuts_a_shift_and_is_reported_where_it_takes_shift_time() -> None:
    site = sample_site()
    # Fri 2026-03-27 (CET): early 05:00Z-13:00Z, lunch 09:00Z-09:30Z, downtime 11:00Z-12:00Z
    spans = planned_busy(site, utc(2026, 3, 27, 5), utc(2026, 3, 27, 13))
    day = dt.date(2026, 3, 27)
    assert spans == [
        PlannedSpan(utc(2026, 3, 27, 5), utc(2026, 3, 27, 9), "early", day),
        PlannedSpan(utc(2026, 3, 27, 9, 30), utc(2026, 3, 27, 11), "early", day),
        PlannedSpan(utc(2026, 3, 27, 12), utc(2026, 3, 27, 13), "early", day),
    ]
    assert total(spans) == 6 * HOUR + 30 * MINUTE  # 8 h - 30 min lunch - 1 h downtime
    assert planned_downtime_spans(site, utc(2026, 3, 27), utc(2026, 3, 28)) == [
        (utc(2026, 3, 27, 11), utc(2026, 3, 27, 12))
    ]


def test_overlapping_downtime_windows_count_once_and_never_inside_breaks_or_off_shift() -> None:
    early = {
        "name": "early",
        "start": "06:00",
        "end": "14:00",
        "days": ["fri"],
        "breaks": [{"start": "10:00", "end": "10:30"}],
    }
    downtime = [
        {"start": "10:15", "end": "10:45", "days": ["fri"]},  # half in the break
        {"start": "13:30", "end": "15:00", "days": ["fri"]},  # past the shift's end
        {"start": "12:00", "end": "12:30", "days": ["fri"]},
        {"start": "12:15", "end": "12:45", "days": ["fri"]},  # overlaps the one before
        {"start": "09:00", "end": "11:00", "days": ["sat"]},  # no shift on saturday
    ]
    site = make_site([early], downtime=downtime)
    day, week = dt.date(2026, 3, 6), (utc(2026, 3, 2), utc(2026, 3, 9))
    # Fri 2026-03-06 (CET): shift 05:00Z-13:00Z, lunch 09:00Z-09:30Z; downtime 09:15Z-09:45Z,
    # 12:30Z-14:00Z, 11:00Z-11:30Z, 11:15Z-11:45Z
    assert planned_busy(site, *week) == [
        PlannedSpan(utc(2026, 3, 6, 5), utc(2026, 3, 6, 9), "early", day),
        PlannedSpan(utc(2026, 3, 6, 9, 45), utc(2026, 3, 6, 11), "early", day),
        PlannedSpan(utc(2026, 3, 6, 11, 45), utc(2026, 3, 6, 12, 30), "early", day),
    ]
    pdot = planned_downtime_spans(site, *week)
    assert pdot == [
        (utc(2026, 3, 6, 9, 30), utc(2026, 3, 6, 9, 45)),
        (utc(2026, 3, 6, 11), utc(2026, 3, 6, 11, 45)),
        (utc(2026, 3, 6, 12, 30), utc(2026, 3, 6, 13)),
    ]
    # busy 4 h + 1 h 15 + 45 min = 6 h; downtime 15 + 45 + 30 min = 1 h 30;
    # 6 h + 1 h 30 = 8 h - 30 min lunch
    assert total(planned_busy(site, *week)) == 6 * HOUR
    assert sum((b - a for a, b in pdot), dt.timedelta()) == 90 * MINUTE


def test_downtime_across_midnight_cuts_a_night_shift() -> None:
    site = make_site(
        [night(["wed"])], downtime=[{"start": "23:00", "end": "01:00", "days": ["wed"]}]
    )
    # Wed 2026-03-04: shift 21:00Z-05:00Z; downtime 23:00-01:00 CET = 22:00Z-00:00Z: 8 h - 2 h
    spans = planned_busy(site, utc(2026, 3, 4), utc(2026, 3, 6))
    assert [(s.start, s.end) for s in spans] == [
        (utc(2026, 3, 4, 21), utc(2026, 3, 4, 22)),
        (utc(2026, 3, 5, 0), utc(2026, 3, 5, 5)),
    ]
    assert total(spans) == 6 * HOUR


# --- weekdays, days off, an empty calendar ---------------------------------------------------


def test_a_week_of_the_sample_calendar() -> None:
    site = sample_site()
    week = (utc(2026, 3, 1, 23), utc(2026, 3, 8, 23))  # Mon 2026-03-02 00:00 CET to next Mon
    found = shift_occurrences(site, *week)
    assert [o.name for o in found].count("early") == 5
    assert [o.name for o in found].count("late") == 5
    # night runs mon-thu: its last occurrence starts on Thursday
    assert [o.date for o in found if o.name == "night"] == [
        dt.date(2026, 3, day) for day in (2, 3, 4, 5)
    ]
    assert found == sorted(found, key=lambda o: o.start)
    # early and late 5 x (8 h - 30 min) each, night 4 x 8 h, less Friday's 1 h downtime:
    # 37.5 + 37.5 + 32 - 1 = 106 h
    assert total(planned_busy(site, *week)) == 106 * HOUR
    assert planned_downtime_spans(site, *week) == [(utc(2026, 3, 6, 11), utc(2026, 3, 6, 12))]


def test_days_off_have_no_shift_but_a_night_shift_of_the_day_before_runs_into_them() -> None:
    site = sample_site()
    # Thu 2026-12-24 00:00 CET to Sat 00:00: 24 and 25 are days off (Friday's downtime too)
    days = (utc(2026, 12, 23, 23), utc(2026, 12, 25, 23))
    assert [(o.name, o.date) for o in shift_occurrences(site, *days)] == [
        ("night", dt.date(2026, 12, 23))
    ]
    # Wednesday's night runs to Thu 06:00 CET = 05:00Z, clipped at the range's 23:00Z
    assert planned_busy(site, *days) == [
        PlannedSpan(utc(2026, 12, 23, 23), utc(2026, 12, 24, 5), "night", dt.date(2026, 12, 23))
    ]
    assert planned_downtime_spans(site, *days) == []


def test_an_empty_calendar_has_no_planned_time() -> None:
    site = make_site([], downtime=[{"start": "00:00", "end": "23:59", "days": list(WEEKDAYS)}])
    week = (utc(2026, 3, 2), utc(2026, 3, 9))
    assert shift_occurrences(site, *week) == []
    assert planned_busy(site, *week) == []
    assert planned_downtime_spans(site, *week) == []
    assert group_windows(site, *week, GroupBy.SHIFT) == []
    with pytest.raises(LookupError, match="no shift of site 'Plant 7' is running"):
        relative_window(site, "current_shift", utc(2026, 3, 4, 12))
    with pytest.raises(LookupError, match="ended in the 31 days before 2026-03-04T12:00:00"):
        relative_window(site, "previous_shift", utc(2026, 3, 4, 12))


# --- local times that do not exist ------------------------------------------------------------


def test_a_shift_in_the_skipped_hour_has_no_time() -> None:
    site = make_site([{"name": "ghost", "start": "02:30", "end": "03:00", "days": ["sun"]}])
    # 02:30 -> 01:30Z (CET), 03:00 CEST = 01:00Z: it ends before it starts, so it is not worked
    assert shift_occurrences(site, utc(2026, 3, 28), utc(2026, 3, 30)) == []
    # on an ordinary Sunday it runs: 02:30-03:00 CET = 01:30Z-02:00Z
    assert [
        (o.start, o.end) for o in shift_occurrences(site, utc(2026, 3, 22), utc(2026, 3, 23))
    ] == [(utc(2026, 3, 22, 1, 30), utc(2026, 3, 22, 2))]


def test_a_shift_ending_at_a_skipped_time_ends_where_the_next_begins() -> None:
    shifts = [
        {"name": "a", "start": "01:00", "end": "02:30", "days": ["sun"]},
        {"name": "b", "start": "03:00", "end": "04:00", "days": ["sun"]},
    ]
    found = shift_occurrences(make_site(shifts), utc(2026, 3, 28), utc(2026, 3, 30))
    # a: 01:00 CET = 00:00Z to 02:30 -> 01:30Z (CET); b: 03:00 CEST = 01:00Z to 02:00Z;
    # a is cut at 01:00Z: 1 h of real time from 01:00 CET to 03:00 CEST
    assert [(o.name, o.start, o.end) for o in found] == [
        ("a", utc(2026, 3, 29), utc(2026, 3, 29, 1)),
        ("b", utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
    ]
    shifts[0] = {"name": "c", "start": "02:00", "end": "02:30", "days": ["sun"]}
    found = shift_occurrences(make_site(shifts), utc(2026, 3, 28), utc(2026, 3, 30))
    # c: 01:00Z-01:30Z starts when b does (01:00Z) and ends first, so it has no time of its own
    assert [(o.name, o.start, o.end) for o in found] == [
        ("b", utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))
    ]


def test_the_next_occurrence_cuts_one_even_when_it_starts_after_the_range() -> None:
    shifts = [
        {"name": "late", "start": "22:00", "end": "00:30", "days": ["sat"]},
        {"name": "early", "start": "01:00", "end": "03:00", "days": ["sun"]},
    ]
    # Cuba's clocks go from 00:00 CST (UTC-5) to 01:00 CDT (UTC-4) on 2026-03-08. late: Sat 22:00
    # CST = 03:00Z to 00:30 -> 05:30Z (CST); early: Sun 01:00 CDT = 05:00Z, so late ends 05:00Z.
    # The range is Sat 21:00-23:59 CST (02:00Z-04:59Z): early starts on a date after it.
    site = make_site(shifts, zone="America/Havana")
    assert shift_occurrences(site, utc(2026, 3, 8, 2), utc(2026, 3, 8, 4, 59)) == [
        ShiftOccurrence("late", dt.date(2026, 3, 7), utc(2026, 3, 8, 3), utc(2026, 3, 8, 5))
    ]


# --- production days -------------------------------------------------------------------------


def test_production_days_from_06_00_last_23_and_25_hours_on_the_change_days() -> None:
    site = make_site([], day_start="06:00")
    # 03-27 06:00 CET = 05:00Z; 03-28 06:00 CET = 05:00Z; 03-29 06:00 CEST = 04:00Z; 03-30 04:00Z
    assert group_windows(site, utc(2026, 3, 27, 5), utc(2026, 3, 30, 4), "day") == [
        Group("2026-03-27", utc(2026, 3, 27, 5), utc(2026, 3, 28, 5)),  # 24 h
        Group("2026-03-28", utc(2026, 3, 28, 5), utc(2026, 3, 29, 4)),  # 23 h
        Group("2026-03-29", utc(2026, 3, 29, 4), utc(2026, 3, 30, 4)),  # 24 h
    ]
    # 10-23 06:00 CEST = 04:00Z; 10-24 04:00Z; 10-25 06:00 CET = 05:00Z; 10-26 05:00Z
    assert group_windows(site, utc(2026, 10, 23, 4), utc(2026, 10, 26, 5), "day") == [
        Group("2026-10-23", utc(2026, 10, 23, 4), utc(2026, 10, 24, 4)),  # 24 h
        Group("2026-10-24", utc(2026, 10, 24, 4), utc(2026, 10, 25, 5)),  # 25 h
        Group("2026-10-25", utc(2026, 10, 25, 5), utc(2026, 10, 26, 5)),  # 24 h
    ]
    assert production_day(site, utc(2026, 3, 29, 3, 59)) == dt.date(2026, 3, 28)  # 05:59 CEST
    assert production_day(site, utc(2026, 3, 29, 4)) == dt.date(2026, 3, 29)  # 06:00 CEST
    assert production_day(site, utc(2026, 10, 25, 4, 59)) == dt.date(2026, 10, 24)  # 05:59 CET
    assert production_day(site, utc(2026, 10, 25, 5)) == dt.date(2026, 10, 25)  # 06:00 CET
    # now 12:00Z on 03-29 is in production day 03-29; yesterday is the 23-hour day
    assert relative_window(site, "today", utc(2026, 3, 29, 12)) == (
        utc(2026, 3, 29, 4),
        utc(2026, 3, 30, 4),
    )
    assert relative_window(site, "yesterday", utc(2026, 3, 29, 12)) == (
        utc(2026, 3, 28, 5),
        utc(2026, 3, 29, 4),
    )


def test_calendar_days_from_midnight_last_23_and_25_hours() -> None:
    site = make_site([])
    # 03-29 00:00 CET = 03-28 23:00Z to 03-30 00:00 CEST = 03-29 22:00Z: 23 h
    assert relative_window(site, "today", utc(2026, 3, 29, 12)) == (
        utc(2026, 3, 28, 23),
        utc(2026, 3, 29, 22),
    )
    # 10-25 00:00 CEST = 10-24 22:00Z to 10-26 00:00 CET = 10-25 23:00Z: 25 h
    assert relative_window(site, "today", utc(2026, 10, 25, 12)) == (
        utc(2026, 10, 24, 22),
        utc(2026, 10, 25, 23),
    )


def test_a_production_day_starting_at_a_skipped_or_repeated_time() -> None:
    site = make_site([], day_start="02:30")
    # 03-29 02:30 does not exist: the day starts at 01:30Z (with CET), 03:30 CEST. At 01:10Z
    # (03:10 CEST, wall time minus 02:30 is 00:40 on 03-29) it is still 03-28.
    assert production_day(site, utc(2026, 3, 29, 1, 10)) == dt.date(2026, 3, 28)
    assert production_day(site, utc(2026, 3, 29, 1, 30)) == dt.date(2026, 3, 29)
    # 10-25 02:30 happens twice; the day starts at the second, 02:30 CET = 01:30Z. At 00:45Z
    # (02:45 CEST, the first time round) it is still 10-24, which lasts 00:30Z to 01:30Z + 1 d.
    assert production_day(site, utc(2026, 10, 25, 0, 45)) == dt.date(2026, 10, 24)
    assert group_windows(site, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12), "day") == [
        Group("2026-10-24", utc(2026, 10, 24, 12), utc(2026, 10, 25, 1, 30)),
        Group("2026-10-25", utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 12)),
    ]


def test_a_date_the_zone_skipped_has_no_group() -> None:
    site = make_site([], zone="Pacific/Apia")
    # Samoa went from 2011-12-29 24:00 (UTC-10) to 2011-12-31 00:00 (UTC+14): 12-29 starts at
    # 10:00Z on 12-29, 12-31 at 10:00Z on 12-30, and 12-30 never happened
    assert group_windows(site, utc(2011, 12, 29, 10), utc(2011, 12, 31, 10), "day") == [
        Group("2011-12-29", utc(2011, 12, 29, 10), utc(2011, 12, 30, 10)),
        Group("2011-12-31", utc(2011, 12, 30, 10), utc(2011, 12, 31, 10)),
    ]


# --- groups ----------------------------------------------------------------------------------


def test_hour_groups_on_the_change_days_skip_and_repeat_the_clocks_hour() -> None:
    site = make_site([])
    spring = group_windows(site, utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), "hour")
    assert len(spring) == 23  # 00:00 CET to 24:00 CEST
    assert [g.key for g in spring[:4]] == [
        "2026-03-29T00:00+01:00",
        "2026-03-29T01:00+01:00",
        "2026-03-29T03:00+02:00",  # 02:00 never shows
        "2026-03-29T04:00+02:00",
    ]
    assert spring[2] == Group("2026-03-29T03:00+02:00", utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))
    assert all(g.end - g.start == HOUR for g in spring)
    autumn = group_windows(site, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), "hour")
    assert len(autumn) == 25
    assert [g.key for g in autumn[1:5]] == [
        "2026-10-25T01:00+02:00",
        "2026-10-25T02:00+02:00",  # 00:00Z
        "2026-10-25T02:00+01:00",  # 01:00Z: the same hour again
        "2026-10-25T03:00+01:00",
    ]
    assert autumn[-1].key == "2026-10-25T23:00+01:00"


def test_hour_groups_cut_the_first_and_last_to_the_range() -> None:
    site = make_site([], zone="Asia/Kolkata")
    # UTC+05:30: local hours start at half past UTC hours; 00:00Z is 05:30 IST
    groups = group_windows(site, utc(2026, 3, 30), utc(2026, 3, 30, 1, 45), "hour")
    assert groups == [
        Group("2026-03-30T05:00+05:30", utc(2026, 3, 30), utc(2026, 3, 30, 0, 30)),
        Group("2026-03-30T06:00+05:30", utc(2026, 3, 30, 0, 30), utc(2026, 3, 30, 1, 30)),
        Group("2026-03-30T07:00+05:30", utc(2026, 3, 30, 1, 30), utc(2026, 3, 30, 1, 45)),
    ]


def test_shift_groups_are_occurrences_clipped_to_the_range() -> None:
    site = sample_site()
    # Fri 2026-03-27 00:00 CET (03-26 23:00Z) to 12:00Z: Thursday's night, then early
    assert group_windows(site, utc(2026, 3, 26, 23), utc(2026, 3, 27, 12), "shift") == [
        Group("2026-03-26/night", utc(2026, 3, 26, 23), utc(2026, 3, 27, 5)),
        Group("2026-03-27/early", utc(2026, 3, 27, 5), utc(2026, 3, 27, 12)),
    ]


def test_week_groups_across_iso_week_53_and_the_year() -> None:
    site = sample_site()  # production day from 06:00 CET (05:00Z in winter)
    # 2026 starts on a Thursday, so it has 53 ISO weeks: W53 is Mon 12-28 to Sun 2027-01-03
    assert group_windows(site, utc(2026, 12, 23, 12), utc(2027, 1, 10), "week") == [
        Group("2026-W52", utc(2026, 12, 23, 12), utc(2026, 12, 28, 5)),
        Group("2026-W53", utc(2026, 12, 28, 5), utc(2027, 1, 4, 5)),
        Group("2027-W01", utc(2027, 1, 4, 5), utc(2027, 1, 10)),
    ]
    # Mon 12-28 04:00 CET (03:00Z) is before 06:00: production day Sunday 12-27, week 52
    assert group_windows(site, utc(2026, 12, 28, 3), utc(2026, 12, 28, 6), "week") == [
        Group("2026-W52", utc(2026, 12, 28, 3), utc(2026, 12, 28, 5)),
        Group("2026-W53", utc(2026, 12, 28, 5), utc(2026, 12, 28, 6)),
    ]


def test_month_groups_start_on_the_first_production_day() -> None:
    site = sample_site()
    # 03-01 06:00 CET = 05:00Z; 04-01 06:00 CEST = 04:00Z: March has 31 x 24 - 1 = 743 h
    march = group_windows(site, utc(2026, 2, 15), utc(2026, 4, 15), GroupBy.MONTH)
    assert march == [
        Group("2026-02", utc(2026, 2, 15), utc(2026, 3, 1, 5)),
        Group("2026-03", utc(2026, 3, 1, 5), utc(2026, 4, 1, 4)),
        Group("2026-04", utc(2026, 4, 1, 4), utc(2026, 4, 15)),
    ]
    assert march[1].end - march[1].start == 743 * HOUR
    # 10-01 06:00 CEST = 04:00Z; 11-01 06:00 CET = 05:00Z: October has 31 x 24 + 1 = 745 h
    october = group_windows(site, utc(2026, 10, 1, 4), utc(2026, 11, 1, 5), "month")
    assert [(g.key, g.end - g.start) for g in october] == [("2026-10", 745 * HOUR)]
    # December to January
    assert group_windows(site, utc(2026, 12, 10), utc(2027, 1, 10), "month") == [
        Group("2026-12", utc(2026, 12, 10), utc(2027, 1, 1, 5)),
        Group("2027-01", utc(2027, 1, 1, 5), utc(2027, 1, 10)),
    ]


# --- relative windows ------------------------------------------------------------------------


def test_relative_windows_at_shift_edges() -> None:
    site = sample_site()
    early = (utc(2026, 3, 2, 5), utc(2026, 3, 2, 13))  # Mon 06:00-14:00 CET
    late = (utc(2026, 3, 2, 13), utc(2026, 3, 2, 21))  # Mon 14:00-22:00 CET
    friday_late = (utc(2026, 2, 27, 13), utc(2026, 2, 27, 21))  # no night shift on Fridays
    # exactly at early's start: early runs; the one before ended Friday
    assert relative_window(site, "current_shift", early[0]) == early
    assert relative_window(site, "previous_shift", early[0]) == friday_late
    # exactly at early's end, which is late's start: late runs, early is the previous one
    assert relative_window(site, "current_shift", late[0]) == late
    assert relative_window(site, "previous_shift", late[0]) == early
    # exactly at Friday late's end nothing runs, and late (ended at now) is the previous one
    with pytest.raises(LookupError, match="site 'Acme Dortmund' is running at 2026-02-27T21:00"):
        relative_window(site, "current_shift", friday_late[1])
    assert relative_window(site, "previous_shift", friday_late[1]) == friday_late
    assert relative_window(site, "previous_shift", utc(2026, 2, 28, 9)) == friday_late
    # Mon 05:59 CET is still production day Sunday 03-01 (06:00 CET = 05:00Z)
    assert relative_window(site, "today", utc(2026, 3, 2, 4, 59)) == (
        utc(2026, 3, 1, 5),
        utc(2026, 3, 2, 5),
    )
    assert relative_window(site, "yesterday", utc(2026, 3, 2, 4, 59)) == (
        utc(2026, 2, 28, 5),
        utc(2026, 3, 1, 5),
    )


def test_relative_window_refusals() -> None:
    site = make_site([], name=None)
    with pytest.raises(LookupError, match="no shift of the site in Europe/Berlin"):
        relative_window(site, "current_shift", utc(2026, 3, 4))
    with pytest.raises(ValueError, match="last_week"):
        relative_window(site, "last_week", utc(2026, 3, 4))
    with pytest.raises(ValueError, match="must carry a time zone"):
        relative_window(site, "today", dt.datetime(2026, 3, 4))


# --- other zones ------------------------------------------------------------------------------


def test_utc_new_york_and_kolkata() -> None:
    every_day = [night(list(WEEKDAYS))]
    in_utc = make_site(every_day, zone="UTC")
    assert [
        (o.start, o.end) for o in shift_occurrences(in_utc, utc(2026, 3, 29), utc(2026, 3, 29, 1))
    ] == [(utc(2026, 3, 28, 22), utc(2026, 3, 29, 6))]
    assert group_windows(in_utc, utc(2026, 3, 29), utc(2026, 3, 29, 1), "hour")[0].key == (
        "2026-03-29T00:00+00:00"
    )
    new_york = make_site([night(["sat"])], zone="America/New_York")
    # Sat 03-07 22:00 EST = 03:00Z to Sun 06:00 EDT = 10:00Z: 7 h
    assert [
        (o.start, o.end) for o in shift_occurrences(new_york, utc(2026, 3, 7), utc(2026, 3, 9))
    ] == [(utc(2026, 3, 8, 3), utc(2026, 3, 8, 10))]
    # Sat 10-31 22:00 EDT = 11-01 02:00Z to Sun 06:00 EST = 11:00Z: 9 h
    assert total(planned_busy(new_york, utc(2026, 10, 31), utc(2026, 11, 2))) == 9 * HOUR
    early = {"name": "early", "start": "06:00", "end": "14:00", "days": ["mon"]}
    kolkata = make_site([early], zone="Asia/Kolkata", day_start="06:00")
    # Mon 2026-03-30 06:00-14:00 IST (UTC+05:30) = 00:30Z-08:30Z
    assert shift_occurrences(kolkata, utc(2026, 3, 29), utc(2026, 3, 31)) == [
        ShiftOccurrence(
            "early", dt.date(2026, 3, 30), utc(2026, 3, 30, 0, 30), utc(2026, 3, 30, 8, 30)
        )
    ]
    assert production_day(kolkata, utc(2026, 3, 30, 0, 29)) == dt.date(2026, 3, 29)
    assert production_day(kolkata, utc(2026, 3, 30, 0, 30)) == dt.date(2026, 3, 30)


# --- limits ----------------------------------------------------------------------------------


def test_ranges_are_refused_when_empty_naive_or_longer_than_400_days() -> None:
    site = sample_site()
    with pytest.raises(ValueError, match="start must carry a time zone"):
        shift_occurrences(site, dt.datetime(2026, 1, 1), utc(2026, 1, 2))
    with pytest.raises(ValueError, match="is not after start"):
        planned_busy(site, utc(2026, 1, 2), utc(2026, 1, 2))
    with pytest.raises(ValueError, match="at most 400 days"):
        group_windows(site, utc(2026, 1, 1), utc(2027, 2, 5, 0, 0, 1), "none")
    assert group_windows(site, utc(2026, 1, 1), utc(2027, 2, 5), "none") == [  # 365 + 35 days
        Group("all", utc(2026, 1, 1), utc(2027, 2, 5))
    ]
    with pytest.raises(ValueError, match="quarter"):
        group_windows(site, utc(2026, 1, 1), utc(2026, 1, 2), "quarter")
    with pytest.raises(ValueError, match="at most 400 days"):
        planned_downtime_spans(site, utc(2026, 1, 1), utc(2028, 1, 1))


# --- the property ----------------------------------------------------------------------------

QUARTER = dt.timedelta(minutes=15)
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC")
# the changes of Berlin and New York, and an ordinary day
ANCHORS = (
    dt.date(2026, 3, 28),
    dt.date(2026, 10, 24),
    dt.date(2026, 3, 7),
    dt.date(2026, 10, 31),
    dt.date(2026, 6, 15),
)


def hhmm(quarters: int) -> str:
    minutes = quarters % 96 * 15
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def calendars(draw: st.DrawFn) -> tuple[Site, dt.datetime, dt.datetime]:
    """A valid calendar on a 15-minute grid, and a range near a daylight-saving change."""
    points = sorted(draw(st.sets(st.integers(0, 95), min_size=2, max_size=4)))
    days = st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)
    shifts = []
    # consecutive points of the day bound the shifts, so they never overlap, any days
    for index, (first, nxt) in enumerate(zip(points, [*points[1:], points[0] + 96], strict=True)):
        if not draw(st.booleans()):
            continue
        length = nxt - first
        edges = st.sampled_from([0, length]) | st.integers(0, length)  # breaks at the edges too
        cuts = sorted(draw(st.sets(edges, max_size=4)))
        cuts = cuts[: len(cuts) // 2 * 2]  # pairs of offsets into the shift: its breaks
        breaks = [
            {"start": hhmm(first + a), "end": hhmm(first + b)}
            for a, b in zip(cuts[::2], cuts[1::2], strict=True)
        ]
        shift = {"start": hhmm(first), "end": hhmm(nxt), "days": draw(days)}
        shifts.append({"name": f"s{index}", **shift, "breaks": breaks})
    downtime = [
        {"start": hhmm(a), "end": hhmm(a + n), "days": draw(days)}
        for a, n in draw(st.lists(st.tuples(st.integers(0, 95), st.integers(1, 95)), max_size=3))
    ]
    anchor = draw(st.sampled_from(ANCHORS))
    days_off = draw(
        st.lists(st.sampled_from([anchor + dt.timedelta(days=n) for n in range(3)]), unique=True)
    )
    try:
        site = make_site(
            shifts,
            zone=draw(st.sampled_from(ZONES)),
            downtime=downtime,
            days_off=[day.isoformat() for day in days_off],
        )
    except ValidationError:
        assume(False)
        raise
    start = dt.datetime.combine(anchor, dt.time(), dt.UTC) + draw(st.integers(0, 96)) * QUARTER
    return site, start, start + draw(st.integers(1, 192)) * QUARTER


def local_span(
    zone: ZoneInfo, day: dt.date, start: str, end: str, next_day: bool
) -> tuple[dt.datetime, dt.datetime]:
    """A window's UTC span, straight from the rule: HH:MM on `day` (or the day after)."""
    wall = dt.datetime.combine(day + dt.timedelta(days=next_day), dt.time.fromisoformat(start))
    length = (minute_of_day(end) - minute_of_day(start)) % 1440
    return to_utc(wall, zone), to_utc(wall + dt.timedelta(minutes=length), zone)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(calendars())
def test_planned_busy_is_shift_time_less_breaks_and_downtime(
    case: tuple[Site, dt.datetime, dt.datetime],
) -> None:
    site, start, end = case
    zone = ZoneInfo(site.time_zone)
    occurrences = shift_occurrences(site, start, end)
    busy = planned_busy(site, start, end)
    pdot = planned_downtime_spans(site, start, end)
    shifts = {shift.name: shift for shift in site.calendar.shifts}
    following = [o.start for o in occurrences[1:]]
    for index, o in enumerate(occurrences):
        shift = shifts[o.name]
        raw = local_span(zone, o.date, shift.start, shift.end, next_day=False)
        assert WEEKDAYS[o.date.weekday()] in shift.days
        assert o.date not in site.calendar.days_off
        assert o.start == raw[0] < o.end
        # it ends at its own end, or where the next begins (when a skipped time stretched it)
        assert o.end == raw[1] or o.end == following[index] < raw[1]
        assert index == len(following) or o.end <= following[index]
    for spans in ([(s.start, s.end) for s in busy], pdot):
        for (_, one_end), (other_start, _) in pairwise(spans):
            assert one_end <= other_start  # sorted, never overlapping
        assert all(start <= a < b <= end for a, b in spans)
    for span in busy:
        assert any(
            (o.name, o.date) == (span.shift, span.date)
            and o.start <= span.start
            and span.end <= o.end
            for o in occurrences
        )
    # every boundary is on the 15-minute grid in UTC, so sampling each quarter hour is exact
    first_day = start.astimezone(zone).date() - dt.timedelta(days=2)
    downtime = [
        local_span(zone, first_day + dt.timedelta(days=n), w.start, w.end, next_day=False)
        for n in range(6)
        for w in site.calendar.planned_downtime
        if WEEKDAYS[(first_day + dt.timedelta(days=n)).weekday()] in w.days
    ]
    expected_busy: set[dt.datetime] = set()
    expected_pdot: set[dt.datetime] = set()
    moment = start
    while moment < end:
        for o in occurrences:
            if not o.start <= moment < o.end:
                continue
            shift = shifts[o.name]
            after_midnight = [
                minute_of_day(b.start) < minute_of_day(shift.start) for b in shift.breaks
            ]
            pauses = [
                local_span(zone, o.date, b.start, b.end, later)
                for b, later in zip(shift.breaks, after_midnight, strict=True)
            ]
            if any(a <= moment < b for a, b in pauses):
                continue
            down = any(a <= moment < b for a, b in downtime)
            (expected_pdot if down else expected_busy).add(moment)
        moment += QUARTER

    def quarters(spans: list[tuple[dt.datetime, dt.datetime]]) -> set[dt.datetime]:
        found: set[dt.datetime] = set()
        for a, b in spans:
            assert (b - a) % QUARTER == dt.timedelta()
            found.update(a + n * QUARTER for n in range((b - a) // QUARTER))
        return found

    assert quarters([(s.start, s.end) for s in busy]) == expected_busy
    assert quarters(pdot) == expected_pdot
