"""A machine's state intervals and per-minute counts, from its tags' readings (pure).

Derivation restarts at a minute boundary: given the codes and counter values in force just
before it and every reading from it on, it yields the intervals and counts from there. The
deriver stores them in place of what was there, so a late reading corrects everything after
it, and the result never depends on the order readings arrived in.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby

from collector.analytics.equipment import Counter, CounterKind, Machine
from collector.analytics.timespans import floor_minute

Code = bool | int | float | str
LARGEST = 1e300
"""Values at or beyond this are a PLC's "no value" sentinel (as in the series endpoint)."""


@dataclass(frozen=True, slots=True)
class Codes:
    """The state, reason and product codes in force (None: not known)."""

    state: Code | None = None
    reason: Code | None = None
    product: str | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A span of unchanged codes; `end` None while it goes on."""

    start: datetime
    end: datetime | None
    state: Code
    reason: Code | None
    product: str | None


@dataclass(frozen=True, slots=True)
class MachineReading:
    """A reading of one of the machine's tags, with the part that tag plays."""

    ts: datetime
    role: str
    value: Code


@dataclass(slots=True)
class Derived:
    """What derivation from one minute on yields."""

    spans: list[Span] = field(default_factory=list)
    counts: dict[tuple[datetime, str], list[float]] = field(default_factory=dict)
    """(minute, product) -> [good, scrap]."""


def product_text(value: Code) -> str:
    """A product code as the equipment model names products (2.0 is "2")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def usable(role: str, value: Code) -> Code | None:
    """The value as derivation takes it, or None when it carries no code or count.

    Not a number, an infinity or a PLC's "no value" sentinel (beyond ±1e300) means nothing,
    like a reading of bad quality; a counter's value must be a number (text that reads as one
    is taken as that number).
    """
    if role in ("good", "scrap"):
        if isinstance(value, bool):
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) < LARGEST):
        return None
    return value


def counter_increase(counter: Counter, previous: float | None, current: float) -> float:
    """Units counted between two readings of a counter.

    A delta counter's reading is the count itself. A cumulative counter's rise is the count;
    a drop is a rollover when the counter wraps and the wrapped rise is at most a quarter of
    its range (a value near the top followed by a small one), else a reset to 0 and the new
    value is what was counted since.
    """
    if counter.kind is CounterKind.DELTA:
        return current
    if previous is None:
        return 0.0
    if current >= previous:
        return current - previous
    if counter.rollover is not None:
        wrapped = current + counter.rollover - previous
        if wrapped <= counter.rollover / 4:
            return wrapped
    return current


def derive(
    machine: Machine,
    start: datetime,
    before: Codes,
    counters_before: dict[str, float],
    readings: Sequence[MachineReading],
) -> Derived:
    """Spans and counts from `start` (a minute boundary) on.

    `before` are the codes in force just before `start`, `counters_before` each counter's
    last value before it; `readings` are every reading from `start` on, in time order.
    """
    out = Derived()
    codes = before
    opened = start
    counters = {"good": machine.good, "scrap": machine.scrap}
    last = dict(counters_before)
    for ts, group in groupby(readings, key=lambda reading: reading.ts):
        now = list(group)
        product = codes.product or ""
        for reading in now:
            counter = counters.get(reading.role)
            if counter is not None:
                value = float(reading.value)
                moved = counter_increase(counter, last.get(reading.role), value)
                last[reading.role] = value
                if moved:
                    cell = out.counts.setdefault((floor_minute(ts), product), [0.0, 0.0])
                    cell[0 if reading.role == "good" else 1] += moved
        changed = _apply(codes, now)
        if changed == codes:
            continue
        if codes.state is not None and ts > opened:  # a change at `start` itself: no span
            out.spans.append(Span(opened, ts, codes.state, codes.reason, codes.product))
        opened = ts
        codes = changed
    if codes.state is not None:
        out.spans.append(Span(opened, None, codes.state, codes.reason, codes.product))
    return out


def _apply(codes: Codes, readings: list[MachineReading]) -> Codes:
    state, reason, product = codes.state, codes.reason, codes.product
    for reading in readings:
        if reading.role == "state":
            state = reading.value
        elif reading.role == "reason":
            reason = reading.value
        elif reading.role == "product":
            product = product_text(reading.value)
    return Codes(state, reason, product)


def count_rows(derived: Derived) -> Iterator[tuple[datetime, str, float, float]]:
    """(minute, product, good, scrap) rows, in minute order."""
    for (minute, product), (good, scrap) in sorted(derived.counts.items()):
        yield minute, product, good, scrap
