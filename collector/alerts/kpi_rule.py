"""KPI rules: the KPI of the shift running now, computed as /api/v1/kpis computes it."""

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.alerts.rules import KpiCondition
from collector.analytics.calendar import relative_window
from collector.analytics.equipment import Machine, Site
from collector.analytics.equipment_store import StoredMachine
from collector.analytics.kpi import Elements, Model, kpis
from collector.analytics.reports import Scope, load_histories

Conn = AsyncConnection[TupleRow]


@dataclass(frozen=True, slots=True)
class ShiftKpi:
    """A KPI of the current shift so far, and how much planned busy time it rests on."""

    shift_start: datetime
    shift_end: datetime
    value: float | None
    planned_s: float


async def site_of(conn: Conn, site: str) -> Site | None:
    """A site's model, or None if there is no such site."""
    cursor = await conn.execute("SELECT spec FROM equipment_sites WHERE site = %s", (site,))
    row = await cursor.fetchone()
    return None if row is None else Site.model_validate(row[0])


def shift_at(site: Site, moment: datetime) -> tuple[datetime, datetime] | None:
    """The shift running at `moment`, or None."""
    try:
        return relative_window(site, "current_shift", moment)
    except LookupError:
        return None


async def shift_kpi(
    conn: Conn, site: Site, condition: KpiCondition, now: datetime
) -> ShiftKpi | None:
    """The condition's KPI over the shift running now, up to now (None: no shift runs, or no
    machine is in scope)."""
    shift = shift_at(site, now)
    if shift is None:
        return None
    cursor = await conn.execute(
        "SELECT site, machine, spec, updated_at, updated_by FROM equipment_machines"
        " WHERE site = %s AND (%s::text IS NULL OR machine = %s) ORDER BY machine",
        (condition.site, condition.machine, condition.machine),
    )
    machines = [
        StoredMachine(row[0], row[1], Machine.model_validate(row[2]), row[3], row[4])
        for row in await cursor.fetchall()
    ]
    if not machines:
        return None
    scope = Scope(condition.site, site, machines, shift[0], shift[1], now)
    histories = await load_histories(conn, scope)
    total = Elements()
    for history in histories.machines.values():
        total = total + history.elements(histories.start, histories.end)
    found = kpis(total, Model(condition.model))
    value = {
        "oee": found.oee,
        "availability": found.availability,
        "performance": found.effectiveness,
        "quality": found.quality_ratio,
    }[condition.kpi]
    return ShiftKpi(shift[0], shift[1], value, total.pbt_s)
