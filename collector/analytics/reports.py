"""KPI, downtime and state reports of machines over a window, from their stored history.

A report reads each machine's spans, counts and reclassifications once, classifies them once
(kpi.MachineHistory), then asks each group of the window for its elements. A line, area or
site is the sum of its machines' elements; its KPIs are computed from those sums, never by
averaging machines' ratios. Time after `now` has not happened yet: windows are cut there.
"""

from dataclasses import dataclass, field
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.analytics.calendar import Group, group_windows, planned_busy, planned_downtime_spans
from collector.analytics.equipment import Site, TimeElement
from collector.analytics.equipment_store import StoredMachine
from collector.analytics.histories import (
    edges_of,
    read_reclassifications,
    read_spans_and_counts,
)
from collector.analytics.kpi import Elements, Kpis, MachineHistory, Model, kpis
from collector.analytics.losses import (
    ParetoBar,
    StateSpan,
    StateTime,
    StopEvent,
    pareto,
    time_in_state,
)

Conn = AsyncConnection[TupleRow]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a report is about: a site, some of its machines, a window, and now."""

    site_id: str
    site: Site
    machines: list[StoredMachine]
    start: datetime
    end: datetime
    now: datetime


@dataclass(frozen=True, slots=True)
class MachinePart:
    """One machine's share of a group."""

    machine: str
    elements: Elements
    kpis: Kpis
    failures: list[StopEvent]


@dataclass(frozen=True, slots=True)
class GroupReport:
    """A group of the window: its machines' elements summed, and the KPIs of the sum."""

    key: str
    start: datetime
    end: datetime
    elements: Elements
    kpis: Kpis
    failures: list[tuple[str, StopEvent]]
    machines: list[MachinePart] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Histories:
    """Machines' histories over a window cut at now, ready for any group inside it."""

    start: datetime
    end: datetime
    """min(the window's end, now)."""
    machines: dict[str, MachineHistory]
    spans: dict[str, list[StateSpan]] = field(default_factory=dict)


async def load_histories(
    conn: Conn, scope: Scope, extra_edges: list[tuple[datetime, datetime]] | None = None
) -> Histories:
    """Each machine's spans, counts, reclassifications and calendar over the window."""
    site_id, site, machines, now = scope.site_id, scope.site, scope.machines, scope.now
    start, end = scope.start, min(scope.end, now)
    if end <= start:
        return Histories(start, start, {m.id: _nothing(m, site) for m in machines})
    planned = [(span.start, span.end) for span in planned_busy(site, start, end)]
    pdot = planned_downtime_spans(site, start, end)
    ids = [machine.id for machine in machines]
    mapping = site.loss_mapping
    stops = [
        code
        for state in mapping.states
        if state.element is not TimeElement.PRODUCTION
        for code in state.values
    ]
    edges = edges_of(start, end, planned, pdot, extra_edges or [])
    read = await read_spans_and_counts(conn, site_id, ids, edges, now, stops)
    spans, counts = read.spans, read.counts
    earliest = min((found[0].start for found in spans.values() if found), default=start)
    latest = max((found[-1].end for found in spans.values() if found), default=end)
    reclassified = await read_reclassifications(conn, site_id, ids, earliest, max(latest, end))
    return Histories(
        start,
        end,
        {
            machine.id: MachineHistory(
                machine.machine,
                mapping,
                spans=spans[machine.id],
                counts=counts[machine.id],
                planned=planned,
                calendar_pdot=pdot,
                reclassifications=reclassified[machine.id],
            )
            for machine in machines
        },
        spans,
    )


def _nothing(machine: StoredMachine, site: Site) -> MachineHistory:
    return MachineHistory(
        machine.machine,
        site.loss_mapping,
        spans=[],
        counts=[],
        planned=[],
        calendar_pdot=[],
        reclassifications={},
    )


class TooManyGroups(ValueError):
    """The window holds more groups than a request may ask for."""


@dataclass(frozen=True, slots=True)
class KpiReport:
    """The window as a whole, and its groups."""

    total: GroupReport
    groups: list[GroupReport]


async def kpi_report(
    conn: Conn,
    scope: Scope,
    by: str,
    model: Model,
    per_machine: bool,
    most_groups: int,
) -> KpiReport:
    """KPIs of the machines, together, over the window and each of its groups.

    TooManyGroups when the window holds more than `most_groups` groups.
    """
    start, end = scope.start, min(scope.end, scope.now)
    groups = group_windows(scope.site, start, end, by) if start < end else []
    if len(groups) > most_groups:
        raise TooManyGroups(f"{len(groups)} groups")
    edges = [(group.start, group.end) for group in groups]
    histories = await load_histories(conn, scope, edges)
    whole = Group("all", start, max(start, end))
    if start < end:
        total = _report(histories, whole, model, per_machine)
    else:  # a window still to come: nothing has happened in it
        total = GroupReport(whole.key, start, start, Elements(), kpis(Elements(), model), [])
    return KpiReport(total, [_report(histories, group, model, per_machine) for group in groups])


def _report(histories: Histories, group: Group, model: Model, per_machine: bool) -> GroupReport:
    parts = []
    total = Elements()
    failures: list[tuple[str, StopEvent]] = []
    for name, history in histories.machines.items():
        elements = history.elements(group.start, group.end)
        found = history.failures(group.start, group.end)
        total = total + elements
        failures.extend((name, event) for event in found)
        if per_machine:
            parts.append(MachinePart(name, elements, kpis(elements, model), found))
    return GroupReport(
        group.key, group.start, group.end, total, kpis(total, model), failures, parts
    )


@dataclass(frozen=True, slots=True)
class DowntimeReport:
    """Stops meeting the window, Paretos of their time in it, and time in each state."""

    start: datetime
    end: datetime
    events: list[tuple[str, StopEvent]]
    by_reason: list[ParetoBar]
    by_category: list[ParetoBar]
    states: dict[str, list[StateTime]]


async def downtime_report(conn: Conn, scope: Scope) -> DowntimeReport:
    """The machines' stops and states over the window (cut at now)."""
    histories = await load_histories(conn, scope)
    start, end = histories.start, histories.end
    events = sorted(
        (
            (name, event)
            for name, history in histories.machines.items()
            for event in history.events
            if event.start < end and event.until > start
        ),
        key=lambda pair: (pair[1].start, pair[0]),
    )
    if end <= start:
        return DowntimeReport(start, end, [], [], [], {m.id: [] for m in scope.machines})
    stops = [event for _, event in events]
    return DowntimeReport(
        start,
        end,
        events,
        pareto(stops, (start, end), "reason"),
        pareto(stops, (start, end), "category"),
        {
            name: time_in_state(scope.site.loss_mapping, histories.spans[name], start, end)
            for name in histories.machines
        },
    )
