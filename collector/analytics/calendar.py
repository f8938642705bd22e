"""A site's shift calendar in UTC: shift occurrences, planned busy time, production days, groups.

Everything here follows the site's calendar (docs/equipment.md) in its own time zone, so a day
may last 23 or 25 hours: a night shift 22:00-06:00 across the spring change in Europe/Berlin
lasts 7 hours, across the autumn change 9. Local wall-clock times become UTC only through
`buckets.to_utc`, which maps a time that a daylight-saving change skips or repeats as PostgreSQL
maps it (with the smaller of the two offsets), so a boundary computed here is the one the
database computes. Pure functions: no database, no clock.
"""

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from collector.analytics.buckets import find_zone, to_utc
from collector.analytics.equipment import (
    MINUTES_PER_DAY,
    WEEKDAYS,
    Site,
    Weekly,
    minute_of_day,
)

MAX_RANGE = dt.timedelta(days=400)
"""The longest range a calendar question may cover."""
PREVIOUS_SHIFT_SEARCH = dt.timedelta(days=31)
"""How far back `previous_shift` looks for an occurrence."""

Span = tuple[dt.datetime, dt.datetime]
_DAY = dt.timedelta(days=1)
_HOUR = dt.timedelta(hours=1)
_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)
_W = TypeVar("_W", bound=Weekly)


@dataclass(frozen=True, slots=True)
class ShiftOccurrence:
    """One worked occurrence of a shift, breaks included; `date` is the local date it starts on."""

    name: str
    date: dt.date
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True, slots=True)
class PlannedSpan:
    """A stretch of planned busy time (PBT) within one shift occurrence."""

    start: dt.datetime
    end: dt.datetime
    shift: str
    date: dt.date


class GroupBy(StrEnum):
    """How a range is cut into groups, in the site's time zone."""

    NONE = "none"
    HOUR = "hour"
    SHIFT = "shift"
    DAY = "day"
    """Production day."""
    WEEK = "week"
    """ISO week of production days, Monday first."""
    MONTH = "month"
    """Month of production days."""


@dataclass(frozen=True, slots=True)
class Group:
    """One group of a range: its key and its part of the range."""

    key: str
    start: dt.datetime
    end: dt.datetime


class RelativeWindow(StrEnum):
    """The windows `relative_window` knows by name."""

    CURRENT_SHIFT = "current_shift"
    PREVIOUS_SHIFT = "previous_shift"
    TODAY = "today"
    YESTERDAY = "yesterday"


# --- ranges and local windows --------------------------------------------------------------


def _utc(moment: dt.datetime, what: str) -> dt.datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{what} must carry a time zone, got {moment.isoformat()}")
    return moment.astimezone(dt.UTC)


def _range(start: dt.datetime, end: dt.datetime) -> Span:
    """The range in UTC; ValueError if it is empty or longer than MAX_RANGE."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    if end - start > MAX_RANGE:
        raise ValueError(f"the range is {end - start}; at most {MAX_RANGE.days} days")
    return start, end


def _local_span(zone: ZoneInfo, day: dt.date, start: str, end: str, after: int = 0) -> Span | None:
    """The UTC span of a local HH:MM window starting on `day`, or on the next day when its start
    is before minute `after` (a break in a night shift after midnight).

    None when a daylight-saving change leaves it no time (a window inside a skipped hour).
    """
    first = minute_of_day(start)
    if first < after:
        first += MINUTES_PER_DAY
    length = (minute_of_day(end) - minute_of_day(start)) % MINUTES_PER_DAY
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=first)
    begin, finish = to_utc(wall, zone), to_utc(wall + dt.timedelta(minutes=length), zone)
    return (begin, finish) if begin < finish else None


def _weekly(
    windows: Sequence[_W],
    zone: ZoneInfo,
    start: dt.datetime,
    end: dt.datetime,
    days_off: frozenset[dt.date] = frozenset(),
) -> Iterator[tuple[_W, dt.date, Span]]:
    """Every occurrence of weekly windows starting on a local date from the day before `start`'s
    to the day after `end`'s, except on `days_off`: every window overlapping [start, end) (a
    window lasts less than a day of wall time) and the next one."""
    day = start.astimezone(zone).date() - _DAY
    last = end.astimezone(zone).date() + _DAY
    while day <= last:
        weekday = WEEKDAYS[day.weekday()]
        for window in windows:
            if weekday in window.days and day not in days_off:
                span = _local_span(zone, day, window.start, window.end)
                if span is not None:
                    yield window, day, span
        day += _DAY


def _minus(span: Span, cuts: list[Span]) -> list[Span]:
    """What remains of `span` after removing `cuts` (sorted by start; they may overlap)."""
    pieces: list[Span] = []
    cursor, stop = span
    for cut_start, cut_end in cuts:
        if cut_end <= cursor or cut_start >= stop:
            continue
        if cut_start > cursor:
            pieces.append((cursor, cut_start))
        cursor = cut_end
    if cursor < stop:
        pieces.append((cursor, stop))
    return pieces


# --- shifts and planned busy time ----------------------------------------------------------


def _occurrences(
    site: Site, zone: ZoneInfo, start: dt.datetime, end: dt.datetime
) -> list[ShiftOccurrence]:
    found = sorted(
        (
            ShiftOccurrence(shift.name, day, *span)
            for shift, day, span in _weekly(
                site.calendar.shifts, zone, start, end, frozenset(site.calendar.days_off)
            )
        ),
        key=lambda occurrence: (occurrence.start, occurrence.end),
    )
    # Shifts never overlap in local time, but a window ending at a skipped local time ends an
    # hour late in UTC: such an occurrence ends where the next one begins.
    following = [*(occurrence.start for occurrence in found), _LATEST][1:]
    trimmed = (replace(o, end=min(o.end, nxt)) for o, nxt in zip(found, following, strict=True))
    return [o for o in trimmed if o.start < o.end]


def shift_occurrences(site: Site, start: dt.datetime, end: dt.datetime) -> list[ShiftOccurrence]:
    """Every shift occurrence overlapping [start, end), whole, in order."""
    start, end = _range(start, end)
    zone = find_zone(site.time_zone)
    return [o for o in _occurrences(site, zone, start, end) if o.start < end and o.end > start]


def _worked(
    site: Site, zone: ZoneInfo, start: dt.datetime, end: dt.datetime
) -> Iterator[tuple[ShiftOccurrence, Span]]:
    """Each shift occurrence's time less its breaks, within [start, end), in order."""
    shifts = {shift.name: shift for shift in site.calendar.shifts}
    outside = [(_EARLIEST, start), (end, _LATEST)]
    for occurrence in shift_occurrences(site, start, end):
        shift = shifts[occurrence.name]
        after = minute_of_day(shift.start)
        pauses = (
            _local_span(zone, occurrence.date, pause.start, pause.end, after)
            for pause in shift.breaks
        )
        cuts = sorted([span for span in pauses if span is not None] + outside)
        for piece in _minus((occurrence.start, occurrence.end), cuts):
            yield occurrence, piece


def _downtime(site: Site, zone: ZoneInfo, start: dt.datetime, end: dt.datetime) -> list[Span]:
    return sorted(span for _, _, span in _weekly(site.calendar.planned_downtime, zone, start, end))


def planned_busy(site: Site, start: dt.datetime, end: dt.datetime) -> list[PlannedSpan]:
    """Planned busy time in [start, end): shift time less breaks and planned downtime."""
    start, end = _range(start, end)
    zone = find_zone(site.time_zone)
    downtime = _downtime(site, zone, start, end)
    return [
        PlannedSpan(busy_start, busy_end, occurrence.name, occurrence.date)
        for occurrence, piece in _worked(site, zone, start, end)
        for busy_start, busy_end in _minus(piece, downtime)
    ]


def planned_downtime_spans(site: Site, start: dt.datetime, end: dt.datetime) -> list[Span]:
    """The planned downtime (PDOT) in [start, end) that falls in shift time outside breaks."""
    start, end = _range(start, end)
    zone = find_zone(site.time_zone)
    downtime = _downtime(site, zone, start, end)
    # what downtime takes from a piece is the piece less what downtime leaves of it
    return [
        taken
        for _, piece in _worked(site, zone, start, end)
        for taken in _minus(piece, _minus(piece, downtime))
    ]


# --- production days and groups ------------------------------------------------------------


def _day_start(site: Site, zone: ZoneInfo, day: dt.date) -> dt.datetime:
    wall = dt.datetime.combine(day, dt.time.fromisoformat(site.production_day_start))
    return to_utc(wall, zone)


def production_day(site: Site, moment: dt.datetime) -> dt.date:
    """The production day a moment belongs to."""
    moment = _utc(moment, "moment")
    zone = find_zone(site.time_zone)
    wall = moment.astimezone(zone).replace(tzinfo=None)
    day = (wall - dt.timedelta(minutes=minute_of_day(site.production_day_start))).date()
    # Where a change skips or repeats the day's start time, the day starts at to_utc's instant
    # (the later one), so a moment just before it still belongs to the day before.
    if moment < _day_start(site, zone, day):
        return day - _DAY
    return day


class _Unit(NamedTuple):
    align: Callable[[dt.date], dt.date]
    step: Callable[[dt.date], dt.date]
    key: Callable[[dt.date], str]


def _iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


_UNITS = {
    GroupBy.DAY: _Unit(lambda day: day, lambda day: day + _DAY, dt.date.isoformat),
    GroupBy.WEEK: _Unit(
        lambda day: day - dt.timedelta(days=day.weekday()),
        lambda day: day + 7 * _DAY,
        _iso_week,
    ),
    GroupBy.MONTH: _Unit(
        lambda day: day.replace(day=1),
        lambda day: dt.date(day.year + day.month // 12, day.month % 12 + 1, 1),
        lambda day: f"{day:%Y-%m}",
    ),
}


def _calendar_groups(
    site: Site, zone: ZoneInfo, start: dt.datetime, end: dt.datetime, unit: _Unit
) -> list[Group]:
    day = unit.align(production_day(site, start))
    begin = _day_start(site, zone, day)
    groups: list[Group] = []
    while begin < end:
        following = unit.step(day)
        finish = _day_start(site, zone, following)
        if begin < finish:  # a date a zone skipped entirely (Pacific/Apia, 2011-12-30) has no time
            groups.append(Group(unit.key(day), max(begin, start), min(finish, end)))
        day, begin = following, finish
    return groups


def _hour_groups(zone: ZoneInfo, start: dt.datetime, end: dt.datetime) -> list[Group]:
    # Hours are the clock's: a repeated hour is two groups (told apart by their offsets), a
    # skipped one none. Every change of the zones plants use moves the clock by whole hours, so
    # a local hour start plus an hour is the next one.
    begin = start.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(dt.UTC)
    groups: list[Group] = []
    while begin < end:
        key = begin.astimezone(zone).isoformat(timespec="minutes")
        groups.append(Group(key, max(begin, start), min(begin + _HOUR, end)))
        begin += _HOUR
    return groups


def group_windows(site: Site, start: dt.datetime, end: dt.datetime, by: str) -> list[Group]:
    """The groups of [start, end) by hour, shift, production day, ISO week or month (or none)."""
    start, end = _range(start, end)
    by = GroupBy(by)
    zone = find_zone(site.time_zone)
    if by is GroupBy.NONE:
        return [Group("all", start, end)]
    if by is GroupBy.HOUR:
        return _hour_groups(zone, start, end)
    if by is GroupBy.SHIFT:
        return [
            Group(f"{o.date.isoformat()}/{o.name}", max(o.start, start), min(o.end, end))
            for o in shift_occurrences(site, start, end)
        ]
    return _calendar_groups(site, zone, start, end, _UNITS[by])


# --- relative windows ----------------------------------------------------------------------


def _site_label(site: Site) -> str:
    return f"site {site.name!r}" if site.name else f"the site in {site.time_zone}"


def relative_window(site: Site, name: str, now: dt.datetime) -> Span:
    """The window `current_shift`, `previous_shift`, `today` or `yesterday` names at `now`."""
    window = RelativeWindow(name)
    now = _utc(now, "now")
    if window in (RelativeWindow.TODAY, RelativeWindow.YESTERDAY):
        zone = find_zone(site.time_zone)
        day = production_day(site, now)
        if window is RelativeWindow.YESTERDAY:
            day -= _DAY
        return _day_start(site, zone, day), _day_start(site, zone, day + _DAY)
    running = shift_occurrences(site, now, now + dt.timedelta(microseconds=1))
    if window is RelativeWindow.CURRENT_SHIFT:
        if not running:
            raise LookupError(f"no shift of {_site_label(site)} is running at {now.isoformat()}")
        return running[0].start, running[0].end
    before = running[0].start if running else now
    ended = [
        o
        for o in shift_occurrences(site, before - PREVIOUS_SHIFT_SEARCH, before)
        if o.end <= before
    ]
    if not ended:
        raise LookupError(
            f"no shift of {_site_label(site)} ended in the {PREVIOUS_SHIFT_SEARCH.days} days"
            f" before {before.isoformat()}"
        )
    return ended[-1].start, ended[-1].end
