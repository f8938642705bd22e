"""ISO 22400-2 time and quantity elements of a machine over a window, and the KPIs computed
from them (by ISO 22400-2 or by the TPM convention), each showing its working.

Pure: the caller reads the spans, counts, calendar and reclassifications and passes them in.
Roll-ups add Elements (never average ratios). docs/analytics.md gives every formula.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import accumulate
from math import prod
from typing import Any

import numpy as np
from numpy.typing import NDArray

from collector.analytics.equipment import LossMapping, Machine, TimeElement
from collector.analytics.losses import (
    Reclassification,
    StateSpan,
    StopEvent,
    check_window,
    label_spans,
)


@dataclass(frozen=True, slots=True)
class CountMinute:
    """Units a machine counted in the minute starting at `minute`, of one product."""

    minute: datetime
    product: str
    """'' when the machine has no product tag."""
    good: float
    scrap: float


@dataclass(frozen=True, slots=True)
class Elements:
    """The ISO 22400-2 time (seconds) and quantity elements of a window; add them to roll up."""

    pot_s: float = 0.0
    """Planned operation time: planned busy time plus the calendar's planned downtime."""
    pdot_s: float = 0.0
    """Planned down time: the calendar's, plus stops classified as planned downtime."""
    apt_s: float = 0.0
    asut_s: float = 0.0
    adet_s: float = 0.0
    """Delays, minor stoppages included."""
    minor_stop_s: float = 0.0
    """The part of ADET that is minor stoppages."""
    adot_s: float = 0.0
    unknown_s: float = 0.0
    """Planned busy time without a known state."""
    unmapped_s: float = 0.0
    """Planned busy time in a state code the loss mapping lacks."""
    unplanned_production_s: float = 0.0
    """Production outside planned busy time (in the window, not in APT)."""
    restoration_s: float = 0.0
    """Planned busy time of the failures counted in FE, all of it (also past the window)."""
    gq: float = 0.0
    sq: float = 0.0
    unplanned_pq: float = 0.0
    """Units counted outside planned busy time (in the window, not in PQ)."""
    ideal_s: float | None = 0.0
    """Sum of ideal cycle time x PQ per product; None: a counted product has none."""
    fe: int = 0
    """Failure events: delays, not minor stoppages, starting in planned busy time."""
    products_without_ideal: tuple[str, ...] = ()

    @property
    def pbt_s(self) -> float:
        """Planned busy time: POT - PDOT."""
        return self.pot_s - self.pdot_s

    @property
    def aupt_s(self) -> float:
        """Actual unit processing time: APT + ASUT."""
        return self.apt_s + self.asut_s

    @property
    def aubt_s(self) -> float:
        """Actual unit busy time: AUPT + ADET."""
        return self.aupt_s + self.adet_s

    @property
    def aoet_s(self) -> float:
        """Actual order execution time: APT + ASUT + ADET + ADOT."""
        return self.aubt_s + self.adot_s

    @property
    def pq(self) -> float:
        """Produced quantity: GQ + SQ."""
        return self.gq + self.sq

    def __add__(self, other: "Elements") -> "Elements":
        """The elements of both (a line, area or site is the sum of its machines)."""
        summed: dict[str, Any] = {
            field.name: getattr(self, field.name) + getattr(other, field.name)
            for field in fields(self)
            if field.name not in ("ideal_s", "products_without_ideal")
        }
        # A None side has counts whose ideal time is unknown, so the sum's is unknown too.
        ideal = (
            None if self.ideal_s is None or other.ideal_s is None else self.ideal_s + other.ideal_s
        )
        missing = tuple(sorted({*self.products_without_ideal, *other.products_without_ideal}))
        return Elements(**summed, ideal_s=ideal, products_without_ideal=missing)

    def as_dict(self) -> dict[str, Any]:
        """Every element, the derived ones (PBT, AUPT, AUBT, AOET, PQ) included."""
        derived = ("pbt_s", "aupt_s", "aubt_s", "aoet_s", "pq")
        return {
            **{field.name: getattr(self, field.name) for field in fields(self)},
            **{name: getattr(self, name) for name in derived},
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_KINDS: tuple[TimeElement | None, ...] = (*TimeElement, None)
"""What a span's time counts as, by index: an element, or None for a state code the mapping
lacks."""
_KIND = {kind: index for index, kind in enumerate(_KINDS)}
_PRODUCTION = _KIND[TimeElement.PRODUCTION]
Micros = NDArray[np.int64]


def _us(moment: datetime) -> int:
    """Microseconds since the epoch: times are added up in whole microseconds, exactly."""
    return (moment - _EPOCH) // _MICROSECOND


def _s(us: int) -> float:
    """Seconds of a number of microseconds (as timedelta.total_seconds() gives them)."""
    return us / 1_000_000


class _Spans:
    """Sorted, merged [start, end) spans of time, in microseconds since the epoch."""

    def __init__(self, spans: Sequence[tuple[datetime, datetime]]) -> None:
        # A span of no length long before any time asked about: every moment has a span
        # starting at or before it.
        merged = [[-(2**62), -(2**62)]]
        for start, end in sorted((_us(start), _us(end)) for start, end in spans):
            if len(merged) > 1 and start <= merged[-1][1]:
                merged[-1][1] = max(end, merged[-1][1])
            else:
                merged.append([start, end])
        self._starts = [start for start, _ in merged]
        self._ends = [end for _, end in merged]
        self._lengths = [end - start for start, end in merged]
        self._before = [0, *accumulate(self._lengths)][:-1]
        """Their length before each of them."""
        self._arrays = tuple(
            np.array(v, np.int64) for v in (self._starts, self._lengths, self._before)
        )

    def until(self, moment: int) -> int:
        """Microseconds they cover before `moment`."""
        index = bisect_right(self._starts, moment) - 1
        return self._before[index] + min(moment - self._starts[index], self._lengths[index])

    def until_each(self, moments: Micros) -> Micros:
        """until() of each moment."""
        starts, lengths, before = self._arrays
        index = np.searchsorted(starts, moments, side="right") - 1
        covered: Micros = before[index] + np.minimum(moments - starts[index], lengths[index])
        return covered

    def overlap(self, start: int, end: int) -> int:
        """Microseconds of [start, end) they cover."""
        return self.until(end) - self.until(start)

    def __contains__(self, moment: int) -> bool:
        index = bisect_right(self._starts, moment) - 1
        return moment < self._ends[index]


class MachineHistory:
    """One machine's spans, counts and calendar, classified once: the elements of any window."""

    def __init__(
        self,
        machine: Machine,
        mapping: LossMapping,
        *,
        spans: Sequence[StateSpan],
        counts: Sequence[CountMinute],
        planned: Sequence[tuple[datetime, datetime]],
        calendar_pdot: Sequence[tuple[datetime, datetime]],
        reclassifications: Mapping[datetime, Reclassification],
    ) -> None:
        labelled = label_spans(mapping, spans, reclassifications)
        self.events: list[StopEvent] = labelled.events
        """The stop events, oldest first."""
        count = len(spans)
        self._starts = np.fromiter((_us(span.start) for span in spans), np.int64, count)
        self._ends = np.fromiter((_us(span.end) for span in spans), np.int64, count)
        self._kinds = np.fromiter((_KIND[kind] for kind in labelled.elements), np.intp, count)
        self._minor = np.array(labelled.minor, bool)
        self._planned = _Spans(planned)
        # The failures MTBF and MTTR count: delays, not minor stoppages, that start in planned
        # busy time. Each counts once (in the window it starts in), with all of its planned
        # busy time, so their restoration times are theirs alone.
        self._failures = [
            event
            for event in self.events
            if event.element is TimeElement.DELAY
            and not event.minor
            and _us(event.start) in self._planned
        ]
        self._failure_starts = [event.start for event in self._failures]
        self._restoration_before = [
            0,
            *accumulate(self._planned.overlap(_us(f.start), _us(f.until)) for f in self._failures),
        ]
        """Microseconds of restoration of the failures before each."""
        self._counts = sorted(counts, key=lambda count: count.minute)
        self._minutes = [count.minute for count in self._counts]
        self._calendar_pdot = _Spans(calendar_pdot)
        self._ideal = {entry.product: entry.ideal_cycle_time_s for entry in machine.products}
        self._default_ideal = machine.ideal_cycle_time_s

    def elements(self, a: datetime, b: datetime) -> Elements:
        """The elements of [a, b): time clipped to the window and to planned busy time."""
        check_window(a, b)
        a_us, b_us = _us(a), _us(b)
        busy_us = self._planned.overlap(a_us, b_us)
        # The spans meeting the window, clipped to it, and the planned busy time of each.
        first = int(np.searchsorted(self._ends, a_us, side="right"))
        stop = int(np.searchsorted(self._starts, b_us, side="left"))
        starts = np.clip(self._starts[first:stop], a_us, b_us)
        ends = np.clip(self._ends[first:stop], a_us, b_us)
        inside = self._planned.until_each(ends) - self._planned.until_each(starts)
        kinds = self._kinds[first:stop]
        # Integer microseconds: the sums are exact however many spans are added.
        per_kind = np.bincount(kinds, weights=inside, minlength=len(_KINDS)).astype(np.int64)
        seconds = {kind: _s(int(us)) for kind, us in zip(_KINDS, per_kind, strict=True)}
        minor_us = int(inside[self._minor[first:stop]].sum())
        production = kinds == _PRODUCTION
        outside_us = int((ends[production] - starts[production] - inside[production]).sum())
        known_us = int(per_kind.sum())
        busy_s = _s(busy_us)
        calendar_pdot_s = _s(self._calendar_pdot.overlap(a_us, b_us))
        quantities = self._quantities(a, b)
        first_failure, failures_stop = self._failures_in(a, b)
        return Elements(
            pot_s=busy_s + calendar_pdot_s,
            pdot_s=calendar_pdot_s + seconds[TimeElement.PLANNED_DOWNTIME],
            apt_s=seconds[TimeElement.PRODUCTION],
            asut_s=seconds[TimeElement.SETUP],
            adet_s=seconds[TimeElement.DELAY],
            minor_stop_s=_s(minor_us),
            adot_s=seconds[TimeElement.NO_ORDERS],
            unknown_s=round(_s(busy_us - known_us), 6),
            unmapped_s=seconds[None],
            unplanned_production_s=_s(outside_us),
            restoration_s=_s(
                self._restoration_before[failures_stop] - self._restoration_before[first_failure]
            ),
            fe=failures_stop - first_failure,
            **quantities,
        )

    def failures(self, a: datetime, b: datetime) -> list[StopEvent]:
        """The failure events of [a, b): delays, not minor stoppages, that start in its planned
        busy time (MTBF and MTTR count these)."""
        check_window(a, b)
        first, stop = self._failures_in(a, b)
        return self._failures[first:stop]

    def _failures_in(self, a: datetime, b: datetime) -> tuple[int, int]:
        """Where the failures starting in [a, b) are in self._failures."""
        return bisect_left(self._failure_starts, a), bisect_left(self._failure_starts, b)

    def _quantities(self, a: datetime, b: datetime) -> dict[str, Any]:
        """GQ, SQ, the units outside planned busy time, and the ideal time of the units."""
        good = scrap = outside = 0.0
        per_product: dict[str, float] = {}
        for count in self._counts[bisect_left(self._minutes, a) : bisect_left(self._minutes, b)]:
            if _us(count.minute) not in self._planned:
                outside += count.good + count.scrap
                continue
            good += count.good
            scrap += count.scrap
            units = count.good + count.scrap
            per_product[count.product] = per_product.get(count.product, 0.0) + units
        ideal = 0.0
        missing: list[str] = []
        for product, units in per_product.items():
            cycle = self._ideal.get(product, self._default_ideal)
            if cycle is not None:
                ideal += cycle * units
            elif units:
                missing.append(product)
        return {
            "gq": good,
            "sq": scrap,
            "unplanned_pq": outside,
            "ideal_s": None if missing else ideal,
            "products_without_ideal": tuple(sorted(missing)),
        }


class Model(StrEnum):
    """Where minor stoppages count: ISO 22400-2 (availability) or TPM (performance)."""

    ISO22400 = "iso22400"
    TPM = "tpm"


@dataclass(frozen=True, slots=True)
class KpiWarning:
    """Why a KPI is null or doubtful."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Working:
    """What a set of KPIs was computed from."""

    model: Model
    elements: Elements
    warnings: tuple[KpiWarning, ...]


@dataclass(frozen=True, slots=True)
class Kpis:
    """KPIs of ISO 22400-2 (ratios 0 to 1; None: unknown, never assumed) and their working."""

    availability: float | None
    effectiveness: float | None
    """Performance in the TPM model."""
    quality_ratio: float | None
    oee: float | None
    nee: float | None
    technical_efficiency: float | None
    setup_rate: float | None
    utilization_efficiency: float | None
    throughput_per_h: float | None
    scrap_ratio: float | None
    mtbf_s: float | None
    mttr_s: float | None
    working: Working


def _ratio(numerator: float | None, denominator: float) -> float | None:
    """numerator / denominator; None when either is unknown or the denominator is 0."""
    if numerator is None or denominator == 0:
        return None
    return numerator / denominator


def _times(*factors: float | None) -> float | None:
    known = [factor for factor in factors if factor is not None]
    return prod(known) if len(known) == len(factors) else None


def kpis(elements: Elements, model: Model = Model.ISO22400) -> Kpis:
    """The KPIs of some elements by the model's convention, with their working."""
    e = elements
    # No units counted: whatever uses a quantity is unknown (a silent counter is not zero).
    counted = e.pq > 0
    ideal = e.ideal_s if counted else None
    if model is Model.TPM:
        # Minor stoppages are running time (a speed loss); no orders is not loading time.
        operating, loading = e.apt_s + e.minor_stop_s, e.pbt_s - e.adot_s
    else:
        operating, loading = e.apt_s, e.pbt_s
    availability = _ratio(operating, loading)
    effectiveness = _ratio(ideal, operating)
    quality = _ratio(e.gq, e.pq)
    iso_effectiveness = _ratio(ideal, e.apt_s)
    return Kpis(
        availability=availability,
        effectiveness=effectiveness,
        quality_ratio=quality,
        oee=_times(availability, effectiveness, quality),
        nee=_times(_ratio(e.aupt_s, e.pbt_s), iso_effectiveness, quality),
        technical_efficiency=_ratio(e.apt_s, e.apt_s + e.adet_s),
        setup_rate=_ratio(e.asut_s, e.aupt_s),
        utilization_efficiency=_ratio(e.apt_s, e.aubt_s),
        throughput_per_h=_ratio(e.pq * 3600 if counted else None, e.aoet_s),
        scrap_ratio=_ratio(e.sq, e.pq),
        mtbf_s=_ratio(e.apt_s, e.fe),
        mttr_s=_ratio(e.restoration_s, e.fe),
        working=Working(model, e, tuple(_warnings(e, effectiveness))),
    )


def _warnings(e: Elements, effectiveness: float | None) -> list[KpiWarning]:
    found: list[KpiWarning] = []
    if e.pbt_s == 0:
        why = "all of it planned downtime" if e.pot_s else "no shift in the calendar"
        found.append(KpiWarning("no_planned_time", f"no planned busy time ({why}): KPIs are null"))
    elif not e.pq:
        found.append(
            KpiWarning("no_counts", "no units counted in planned busy time: quantity KPIs are null")
        )
    if e.ideal_s is None:
        products = ", ".join(product or "(no product)" for product in e.products_without_ideal)
        found.append(
            KpiWarning(
                "no_ideal_cycle_time",
                f"no ideal cycle time for {products}: effectiveness is null",
            )
        )
    if effectiveness is not None and effectiveness > 1:
        found.append(
            KpiWarning(
                "effectiveness_above_1",
                f"effectiveness {effectiveness:.3f} is above 1: an ideal cycle time is too long"
                " or counts are too high",
            )
        )
    if e.unknown_s:
        found.append(
            KpiWarning(
                "unknown_state",
                f"{e.unknown_s:g} s of planned busy time have no known state (counted against"
                " availability)",
            )
        )
    if e.unmapped_s:
        found.append(
            KpiWarning(
                "unmapped_state",
                f"{e.unmapped_s:g} s of planned busy time are in a state code the loss mapping"
                " lacks (counted against availability)",
            )
        )
    if e.unplanned_pq:
        found.append(
            KpiWarning(
                "counts_outside_plan",
                f"{e.unplanned_pq:g} units were counted outside planned busy time (not in PQ)",
            )
        )
    return found
