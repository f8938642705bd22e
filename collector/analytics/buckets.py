"""Time buckets: ISO 8601 intervals, and bucket boundaries aligned in a time zone.

The boundaries computed here are the ones PostgreSQL's `date_bin` and `date_trunc(unit, ts,
zone)` put readings in (`bucket_key_sql`), so a bucket found in the database is always one of
the grid's. Local times that a daylight-saving change skips or repeats map to UTC as
PostgreSQL maps them: with the smaller of the two UTC offsets (the offset before a spring
change, the one after an autumn change).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from shared.invariants import required

INTERVAL_PATTERN = (
    r"^(P1[DWMY]|PT[0-9]{1,6}H([0-9]{1,6}M)?([0-9]{1,6}S)?|PT[0-9]{1,6}M([0-9]{1,6}S)?"
    r"|PT[0-9]{1,6}S)$"
)
"""What `interval` may be: P1D, P1W, P1M, P1Y, or hours, minutes and seconds (PT15M, PT1H30M)."""
_FIXED = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")
_ORIGIN = datetime(2000, 1, 3)  # a Monday, local midnight: where fixed buckets are counted from


class CalendarUnit(StrEnum):
    """A bucket as long as the zone's calendar makes it: a day may have 23 or 25 hours."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


_UNITS = {"D": CalendarUnit.DAY, "W": CalendarUnit.WEEK, "M": CalendarUnit.MONTH}
_UNITS["Y"] = CalendarUnit.YEAR


@dataclass(frozen=True, slots=True)
class Interval:
    """A bucket length: either fixed (`length`) or one calendar unit (`unit`)."""

    text: str
    length: timedelta | None = None
    unit: CalendarUnit | None = None


def parse_interval(text: str) -> Interval:
    """The interval an ISO 8601 duration (as INTERVAL_PATTERN allows) stands for.

    ValueError if it is shorter than a second.
    """
    if text.startswith("P1") and len(text) == 3:
        return Interval(text, unit=_UNITS[text[2]])
    match = _FIXED.match(text)
    if match is None:
        raise ValueError(f"expected an ISO 8601 duration such as PT15M or P1D, got {text!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    length = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if not length:
        raise ValueError("must be at least one second")
    return Interval(text, length=length)


@cache
def zone_names() -> frozenset[str]:
    """The IANA time zones this host knows (PostgreSQL reads the same database)."""
    return frozenset(available_timezones())


def find_zone(name: str) -> ZoneInfo:
    """The IANA time zone of this name; ValueError if there is none."""
    if name not in zone_names():
        raise ValueError(f"no IANA time zone {name!r}; e.g. Europe/Berlin or UTC")
    return ZoneInfo(name)


def to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall-clock time as UTC; skipped and repeated times as PostgreSQL maps them."""
    early = wall.replace(tzinfo=zone, fold=0)
    late = wall.replace(tzinfo=zone, fold=1)
    chosen = late if _offset(late) < _offset(early) else early
    return chosen.astimezone(UTC)


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    return offset if offset is not None else timedelta(0)


def _truncate(wall: datetime, unit: CalendarUnit) -> datetime:
    day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit is CalendarUnit.WEEK:
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if unit is CalendarUnit.MONTH:
        return day.replace(day=1)
    if unit is CalendarUnit.YEAR:
        return day.replace(month=1, day=1)
    return day


def _step(wall: datetime, unit: CalendarUnit) -> datetime:
    if unit is CalendarUnit.DAY:
        return wall + timedelta(days=1)
    if unit is CalendarUnit.WEEK:
        return wall + timedelta(days=7)
    if unit is CalendarUnit.MONTH:
        return wall.replace(year=wall.year + wall.month // 12, month=wall.month % 12 + 1)
    return wall.replace(year=wall.year + 1)


def fixed_origin(zone: ZoneInfo) -> datetime:
    """Where fixed-length buckets are counted from: local midnight of Monday 2000-01-03."""
    return to_utc(_ORIGIN, zone)


class TooManyBuckets(ValueError):
    """The range holds more buckets than allowed."""


def boundaries(
    interval: Interval, zone: ZoneInfo, start: datetime, end: datetime, most: int
) -> list[datetime]:
    """Aligned bucket boundaries b0 <= start < b1 < ... < bn with bn >= end (UTC).

    TooManyBuckets when [start, end) needs more than `most` buckets; OverflowError when a
    boundary falls outside the years 1 to 9999.
    """
    if interval.length is not None:
        origin = fixed_origin(zone)
        first = origin + ((start - origin) // interval.length) * interval.length
        count = -((first - end) // interval.length)  # ceiling division
        if count > most:
            raise TooManyBuckets(f"{count} buckets; at most {most}")
        return [first + i * interval.length for i in range(count + 1)]
    unit = required(interval.unit, "a calendar interval's unit")
    wall = _truncate(start.astimezone(zone).replace(tzinfo=None), unit)
    found = [to_utc(wall, zone)]
    while found[-1] < end:
        if len(found) > most:
            raise TooManyBuckets(f"more than {most} buckets")
        wall = _step(wall, unit)
        found.append(to_utc(wall, zone))
    return found


def bucket_key_sql(interval: Interval, column: str = "ts") -> str:
    """SQL for the start of the bucket of `column`; parameters %(stride)s, %(origin)s, %(zone)s."""
    if interval.length is not None:
        return f"date_bin(%(stride)s, {column}, %(origin)s)"
    return f"date_trunc('{interval.unit}', {column}, %(zone)s)"
