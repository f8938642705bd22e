"""/api/v1/kpis: ISO 22400-2 KPIs of a machine, line, area or site, showing their working."""

from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field

from collector.analytics.calendar import GroupBy
from collector.analytics.equipment import ISO_22400_ELEMENT, TimeElement, TpmLoss
from collector.analytics.histories import TooMuchHistory, snapshot
from collector.analytics.kpi import Elements, Kpis, Model
from collector.analytics.losses import StopEvent
from collector.analytics.reports import (
    GroupReport,
    KpiReport,
    Scope,
    TooManyGroups,
    kpi_report,
)
from collector.api.operations import API, Role
from collector.api.params import QueryBool, Timestamp
from collector.api.scope import ScopeQuery, refuse, resolve
from collector.replica import Connection
from collector.state import SETTINGS, STORE

TAG = "analytics"
Code = Annotated[bool | int | float | str, Field(description="A code as the tag reads it.")]


class KpiQuery(ScopeQuery):
    """Which machines, which window, grouped how, by which model."""

    group_by: GroupBy = Field(
        default=GroupBy.NONE,
        description="Groups in the site's time zone: hour, shift, production day, ISO week or"
        " month of production days (none: the window as a whole only).",
    )
    model: Model = Field(
        default=Model.ISO22400,
        description="iso22400: minor stoppages are delays (availability); tpm: they are"
        " running time lost to speed (performance).",
    )
    by_machine: QueryBool = Field(
        default=False, description="Also each machine's own elements and KPIs in every group."
    )


class ElementsOut(BaseModel):
    """The time (seconds) and quantity elements the KPIs were computed from (ISO 22400-2)."""

    pot_s: float = Field(description="POT: planned operation time (shifts less breaks).")
    pdot_s: float = Field(description="PDOT: planned down time (calendar and states).")
    pbt_s: float = Field(description="PBT: planned busy time, POT - PDOT.")
    apt_s: float = Field(description="APT: actual production time.")
    asut_s: float = Field(description="ASUT: actual unit setup time.")
    adet_s: float = Field(description="ADET: actual unit delay time, minor stoppages included.")
    minor_stop_s: float = Field(description="The part of ADET that is minor stoppages.")
    adot_s: float = Field(description="ADOT: actual unit down time (no orders).")
    aupt_s: float = Field(description="AUPT: APT + ASUT.")
    aubt_s: float = Field(description="AUBT: AUPT + ADET.")
    aoet_s: float = Field(description="AOET: APT + ASUT + ADET + ADOT.")
    unknown_s: float = Field(description="Planned busy time without a known state.")
    unmapped_s: float = Field(description="Planned busy time in a code the mapping lacks.")
    unplanned_production_s: float = Field(description="Production outside planned busy time.")
    restoration_s: float = Field(
        description="Planned busy time of the FE failures, all of it (MTTR = this / FE)."
    )
    pq: float = Field(description="PQ: produced quantity, GQ + SQ.")
    gq: float = Field(description="GQ: good quantity.")
    sq: float = Field(description="SQ: scrap quantity.")
    unplanned_pq: float = Field(description="Units counted outside planned busy time.")
    ideal_s: float | None = Field(
        description="Sum of ideal cycle time x PQ per product (PRU x PQ); null: a counted"
        " product has no ideal cycle time."
    )
    fe: int = Field(description="FE: failure events starting in it.")
    products_without_ideal: list[str] = Field(description="Counted products lacking one.")


class WarningOut(BaseModel):
    """Why a KPI is null or doubtful."""

    code: str
    message: str


class WorkingOut(BaseModel):
    """What the KPIs were computed from."""

    model: Model
    elements: ElementsOut
    warnings: list[WarningOut]


class KpisOut(BaseModel):
    """Ratios from 0 to 1 (effectiveness may exceed 1, with a warning); null: unknown."""

    availability: float | None = Field(description="APT / PBT (tpm: (APT + minor) / loading).")
    effectiveness: float | None = Field(description="PRU x PQ / APT (tpm: performance).")
    quality_ratio: float | None = Field(description="GQ / PQ.")
    oee: float | None = Field(description="Availability x effectiveness x quality ratio.")
    nee: float | None = Field(description="AUPT / PBT x effectiveness x quality ratio.")
    technical_efficiency: float | None = Field(description="APT / (APT + ADET).")
    setup_rate: float | None = Field(description="ASUT / AUPT.")
    utilization_efficiency: float | None = Field(description="APT / AUBT.")
    throughput_per_h: float | None = Field(description="PQ / AOET, units per hour.")
    scrap_ratio: float | None = Field(description="SQ / PQ.")
    mtbf_s: float | None = Field(description="APT / FE.")
    mttr_s: float | None = Field(description="Restoration time / FE.")


class ReclassifiedOut(BaseModel):
    """The reason an operator set afterwards."""

    reason: Code
    by: str = Field(description="The key that set it (its prefix).")
    by_name: str | None
    at: Timestamp
    note: str | None


class StopOut(BaseModel):
    """A stop: touching spans of one state that is not production."""

    machine: str
    start: Timestamp
    end: Timestamp | None = Field(description="Null while it goes on.")
    ongoing: bool
    duration_s: float = Field(description="Its whole length (so far, while it goes on).")
    state: Code
    state_name: str
    reason: Code | None
    reason_name: str | None
    element: TimeElement
    iso_element: str = Field(description="The ISO 22400-2 element: ADET, ASUT, ADOT or PDOT.")
    tpm: TpmLoss | None
    minor: bool = Field(description="A minor stoppage.")
    reclassified: ReclassifiedOut | None


class MachineKpisOut(BaseModel):
    """One machine's part of a group."""

    machine: str
    kpis: KpisOut
    working: WorkingOut
    failure_events: list[StopOut]


class GroupOut(BaseModel):
    """A group (or the whole window): KPIs of the summed elements, and their working."""

    key: str = Field(description="all, or the group's local hour, shift, day, week or month.")
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to")
    kpis: KpisOut
    working: WorkingOut
    failure_events: list[StopOut] = Field(description="The FE counted: MTBF's and MTTR's events.")
    machines: list[MachineKpisOut] | None = Field(description="With by_machine=true.")


class KpiReportOut(BaseModel):
    """KPIs of the machines in scope, over the window (cut at now) and its groups."""

    site: str
    time_zone: str
    machines: list[str] = Field(description="The machines summed.")
    model: Model
    group_by: GroupBy
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to", description="The window's end, or now if earlier.")
    total: GroupOut
    groups: list[GroupOut]


def stop_out(machine: str, event: StopEvent) -> StopOut:
    """A stop event as the API shows it."""
    again = event.reclassified
    return StopOut(
        machine=machine,
        start=event.start,
        end=event.end,
        ongoing=event.end is None,
        duration_s=event.duration_s,
        state=event.state,
        state_name=event.state_name,
        reason=event.reason,
        reason_name=event.reason_name,
        element=event.element,
        iso_element=ISO_22400_ELEMENT[event.element],
        tpm=event.tpm,
        minor=event.minor,
        reclassified=None
        if again is None
        else ReclassifiedOut(
            reason=again.reason,
            by=again.actor,
            by_name=again.actor_name,
            at=again.at,
            note=again.note,
        ),
    )


def _elements(elements: Elements) -> ElementsOut:
    return ElementsOut.model_validate(elements.as_dict())


def _kpis(values: Kpis) -> tuple[KpisOut, WorkingOut]:
    names = KpisOut.model_fields
    out = KpisOut.model_validate({name: getattr(values, name) for name in names})
    working = WorkingOut(
        model=values.working.model,
        elements=_elements(values.working.elements),
        warnings=[WarningOut(code=w.code, message=w.message) for w in values.working.warnings],
    )
    return out, working


class _Stops(dict[tuple[str, datetime], StopOut]):
    """Each machine's stops as the API shows them, made once: a failure is in the total and in
    its group (and in its machine's part of both)."""

    def of(self, machine: str, event: StopEvent) -> StopOut:
        """The stop of `machine` as stop_out() shows it."""
        found = self.get((machine, event.start))
        if found is None:
            found = self[(machine, event.start)] = stop_out(machine, event)
        return found


def _group(report: GroupReport, by_machine: bool, stops: _Stops) -> GroupOut:
    kpis_out, working = _kpis(report.kpis)
    machines = None
    if by_machine:
        machines = []
        for part in report.machines:
            part_kpis, part_working = _kpis(part.kpis)
            machines.append(
                MachineKpisOut(
                    machine=part.machine,
                    kpis=part_kpis,
                    working=part_working,
                    failure_events=[stops.of(part.machine, e) for e in part.failures],
                )
            )
    values: dict[str, Any] = {
        "key": report.key,
        "from": report.start,
        "to": report.end,
        "kpis": kpis_out,
        "working": working,
        "failure_events": [stops.of(m, e) for m, e in report.failures],
        "machines": machines,
    }
    return GroupOut.model_validate(values)


@API.operation(
    "GET",
    "/api/v1/kpis",
    summary="ISO 22400-2 KPIs (OEE and more) of a machine, line, area or site",
    tag=TAG,
    role=Role.VIEWER,
    params=KpiQuery,
    response=KpiReportOut,
    errors=(404, 422),
)
async def get_kpis(request: web.Request, query: KpiQuery) -> KpiReportOut:
    """KPIs over a window and its groups, each with the elements it used and warnings.

    A line, area or site sums its machines' time and quantity elements and computes its KPIs
    from the sums. Windows are cut at now; a KPI without data is null, never assumed.
    """
    scope = await resolve(request, query)
    most = request.app[SETTINGS].analytics.max_groups

    async def work(conn: Connection) -> KpiReport:
        async with snapshot(conn):
            return await kpi_report(
                conn, scope, query.group_by, query.model, query.by_machine, most
            )

    try:
        report = await request.app[STORE].reads.run(work)
    except TooManyGroups as exc:
        raise refuse("group_by", f"{exc}; at most analytics.max_groups ({most})") from None
    except TooMuchHistory as exc:
        raise refuse("from", f"{exc}: ask for a shorter window or fewer machines") from None
    return report_out(scope, query, report)


def report_out(scope: Scope, query: KpiQuery, report: KpiReport) -> KpiReportOut:
    """A KPI report as the API answers it."""
    stops = _Stops()
    values: dict[str, Any] = {
        "site": scope.site_id,
        "time_zone": scope.site.time_zone,
        "machines": [machine.id for machine in scope.machines],
        "model": query.model,
        "group_by": query.group_by,
        "from": report.total.start,
        "to": report.total.end,
        "total": _group(report.total, query.by_machine, stops),
        "groups": [_group(group, query.by_machine, stops) for group in report.groups],
    }
    return KpiReportOut.model_validate(values)
