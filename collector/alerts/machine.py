"""The state machine every alert rule shares, kept pure: clear, pending, firing, over time.

A rule's condition is observed at moments in time order. Entering it starts an episode
(pending while its hold runs, firing at once without one); the episode fires when the
condition has lasted the hold, and ends (resolved) when the condition clears. An observation's
value holds until the next one, so a hold that passed between two observations fired at its
true time, the episode's start plus the hold, even if the later observation clears it.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.readings import Quality

Phase = Literal["clear", "pending", "firing"]
Change = Literal["pending", "firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Track:
    """Where one subject of a rule stands: its phase, and the current episode's start."""

    phase: Phase = "clear"
    since: datetime | None = None
    value: float | None = None
    """The value that started the episode (None for conditions without one)."""


CLEAR = Track()


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an episode, at the time it truly happened."""

    change: Change
    at: datetime
    started: datetime
    """The episode's start, which names it (one alert per rule, subject and start)."""
    value: float | None
    seen: datetime
    """The time of the observation that showed it: far behind now, it is late."""


def observe(
    track: Track,
    at: datetime,
    *,
    entered: bool,
    cleared: bool,
    hold: timedelta,
    value: float | None = None,
) -> tuple[Track, list[Transition]]:
    """Advance by one observation at `at`: `entered` the condition holds; `cleared` it is over.

    Neither (between the threshold and the clear threshold): the phase stays as it is.
    """
    track, changes = elapse(track, at, hold, seen=at)
    if track.phase == "clear":
        if not entered:
            return track, changes
        if hold <= timedelta(0):
            changes.append(Transition("firing", at, at, value, at))
            return Track("firing", at, value), changes
        changes.append(Transition("pending", at, at, value, at))
        return Track("pending", at, value), changes
    if cleared:
        changes.append(Transition("resolved", at, _start(track), track.value, at))
        return CLEAR, changes
    return track, changes


def elapse(
    track: Track, now: datetime, hold: timedelta, *, seen: datetime | None = None
) -> tuple[Track, list[Transition]]:
    """Advance to `now` with nothing new observed: a pending episode whose hold has passed fires.

    `seen` is when the condition was last known to hold (default `now`).
    """
    if track.phase != "pending" or now < _start(track) + hold:
        return track, []
    fired = _start(track) + hold
    change = Transition("firing", fired, _start(track), track.value, seen or now)
    return Track("firing", track.since, track.value), [change]


def close(track: Track, at: datetime) -> tuple[Track, list[Transition]]:
    """End the current episode at `at`, whatever its phase (nothing to do when clear)."""
    if track.phase == "clear":
        return track, []
    return CLEAR, [Transition("resolved", at, _start(track), track.value, at)]


def _start(track: Track) -> datetime:
    if track.since is None:
        raise ValueError(f"a {track.phase} track has no start")
    return track.since


@dataclass(frozen=True, slots=True)
class Threshold:
    """A tag's value beyond `threshold` (above or below) starts an episode; at or back past
    `clear` it clears. `clear` lies on the safe side of `threshold`, or equals it."""

    above: bool
    threshold: float
    clear: float
    hold: timedelta


Reading = tuple[datetime, float | None, int]
"""(time, numeric value or None, quality) of one stored reading."""


def usable(value: float | None, quality: int) -> bool:
    """Whether a reading takes part: a number of good or uncertain quality (bad ones carry no
    value to trust, so the previous value holds through them)."""
    return value is not None and not math.isnan(value) and quality != Quality.BAD


def run_threshold(
    rule: Threshold, track: Track, readings: Sequence[Reading]
) -> tuple[Track, list[Transition]]:
    """Feed readings in time order through the machine; the track after them and what changed."""
    changes: list[Transition] = []
    for at, value, quality in readings:
        if value is None or not usable(value, quality):
            continue
        if rule.above:
            entered, cleared = value > rule.threshold, value <= rule.clear
        else:
            entered, cleared = value < rule.threshold, value >= rule.clear
        track, more = observe(
            track, at, entered=entered, cleared=cleared, hold=rule.hold, value=value
        )
        changes.extend(more)
    return track, changes


Span = tuple[datetime, datetime | None]
"""A recorded episode's start and end (None: still open)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Time no recorded episode covers, to evaluate again after late readings."""

    start: datetime
    end: datetime
    at_watermark: bool
    """It runs to what was evaluated (end included): its outcome is the subject's track."""


def gaps(lo: datetime, until: datetime, episodes: Sequence[Span]) -> list[Gap]:
    """The parts of [lo, until] outside the recorded episodes (sorted by start).

    Recorded episodes are never rewritten (their notifications are out): late readings are
    evaluated again only where none was recorded.
    """
    found = []
    cursor = lo
    for start, end in episodes:
        if start > cursor:
            found.append(Gap(cursor, min(start, until), False))
        if end is None:
            return [g for g in found if g.start < g.end]
        cursor = max(cursor, end)
    if cursor <= until:
        found.append(Gap(cursor, until, True))
    return [g for g in found if g.start < g.end or g.at_watermark]
