"""/api/v1/downtime: stops, Paretos, time in state, and operators' reclassifications."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aiohttp import web
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from collector.analytics.equipment import ID_PATTERN, TimeElement, TpmLoss, code_key
from collector.analytics.histories import TooMuchHistory, snapshot
from collector.analytics.losses import ParetoBar, StateTime
from collector.analytics.reports import DowntimeReport, Scope, downtime_report
from collector.api.auth import PRINCIPAL
from collector.api.kpis import TAG, Code, StopOut, stop_out
from collector.api.operations import API, Body, Params, Role
from collector.api.params import QueryTime, Timestamp
from collector.api.scope import ScopeQuery, check_time, refuse, resolve
from collector.replica import Connection
from collector.state import EQUIPMENT, STORE
from shared.invariants import required

MAX_EVENTS = 10_000


class ParetoOut(BaseModel):
    """Stop time of one reason or one category within the window, largest first."""

    label: str = Field(description="The reason's name (else its code), or the category.")
    reason: Code | None = Field(description="By reason: its code (null: none given).")
    element: TimeElement | None = Field(description="By category: the time element.")
    tpm: TpmLoss | None
    seconds: float
    events: int
    share: float = Field(description="Of all stop time in the window, 0 to 1.")


class StateTimeOut(BaseModel):
    """Time in one state within the window."""

    state: str | None = Field(description="The state's name (null: unknown).")
    element: TimeElement | None
    seconds: float
    percent: float = Field(description="Of the window.")


class MachineStatesOut(BaseModel):
    """One machine's time in each state."""

    machine: str
    states: list[StateTimeOut]


class DowntimeOut(BaseModel):
    """Stops meeting the window (whole, with their full length) and what they cost in it."""

    site: str
    machines: list[str]
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to", description="The window's end, or now if earlier.")
    events: list[StopOut] = Field(description="Oldest first; ongoing ones last known up to now.")
    by_reason: list[ParetoOut]
    by_category: list[ParetoOut]
    states: list[MachineStatesOut]


def _bar(bar: ParetoBar) -> ParetoOut:
    return ParetoOut(
        label=bar.label,
        reason=bar.reason,
        element=bar.element,
        tpm=bar.tpm,
        seconds=bar.seconds,
        events=bar.events,
        share=bar.share,
    )


def _state(row: StateTime) -> StateTimeOut:
    return StateTimeOut(
        state=row.state, element=row.element, seconds=row.seconds, percent=row.percent
    )


async def _report(request: web.Request, scope: Scope) -> DowntimeReport:
    async def work(conn: Connection) -> DowntimeReport:
        async with snapshot(conn):
            return await downtime_report(conn, scope)

    return await request.app[STORE].reads.run(work)


@API.operation(
    "GET",
    "/api/v1/downtime",
    summary="Stops, their Pareto by reason and category, and time in each state",
    tag=TAG,
    role=Role.VIEWER,
    params=ScopeQuery,
    response=DowntimeOut,
    errors=(404, 422),
)
async def get_downtime(request: web.Request, query: ScopeQuery) -> DowntimeOut:
    """Every stop meeting the window, with start, end (or ongoing), reason and category."""
    scope = await resolve(request, query)
    try:
        report = await _report(request, scope)
    except TooMuchHistory as exc:
        raise refuse("from", f"{exc}: ask for a shorter window or fewer machines") from None
    if len(report.events) > MAX_EVENTS:
        raise refuse("from", f"{len(report.events)} stops; at most {MAX_EVENTS}: ask for less")
    values: dict[str, Any] = {
        "site": scope.site_id,
        "machines": [machine.id for machine in scope.machines],
        "from": report.start,
        "to": report.end,
        "events": [stop_out(machine, event) for machine, event in report.events],
        "by_reason": [_bar(bar) for bar in report.by_reason],
        "by_category": [_bar(bar) for bar in report.by_category],
        "states": [
            MachineStatesOut(machine=name, states=[_state(row) for row in rows])
            for name, rows in report.states.items()
        ],
    }
    return DowntimeOut.model_validate(values)


class Reclassify(Body):
    """A stop's reason, set afterwards by an operator."""

    site: str = Field(pattern=ID_PATTERN, max_length=64)
    machine: str = Field(pattern=ID_PATTERN, max_length=64)
    start: QueryTime = Field(description="The stop's start, as /api/v1/downtime gives it.")
    reason: Code
    note: Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f]*$")] | None = None


class ReclassificationOut(BaseModel):
    """A reclassification as kept: who set which reason for which stop, and when."""

    id: int
    site: str
    machine: str
    start: Timestamp
    reason: Code
    note: str | None
    by: str
    by_name: str | None
    at: Timestamp


class ReclassifiedStop(BaseModel):
    """The stop as it is now, and the change kept."""

    stop: StopOut
    change: ReclassificationOut


@API.operation(
    "POST",
    "/api/v1/downtime/reclassifications",
    summary="Set a stop's reason afterwards",
    tag=TAG,
    role=Role.OPERATOR,
    body=Reclassify,
    response=ReclassifiedStop,
    errors=(404, 422),
)
async def reclassify(request: web.Request, _: Params, body: Reclassify) -> ReclassifiedStop:
    """Give the stop that starts at `start` a reason; it applies to all of the stop, and the
    change (who, when, note) is kept. 404 if no stop of the machine starts then."""
    check_time("start", body.start)
    store = request.app[EQUIPMENT]
    site = await store.site(body.site)
    if site is None:
        raise refuse("site", f"no site {body.site}", 404)
    machine = await store.machine(body.site, body.machine)
    if machine is None:
        raise refuse("machine", f"site {body.site} has no machine {body.machine}", 404)
    if not any(
        code_key(reason.value) == code_key(body.reason) for reason in site.site.loss_mapping.reasons
    ):
        raise refuse(
            "reason", f"{body.reason!r} is not a reason of site {body.site}'s loss mapping"
        )
    key = request[PRINCIPAL]
    async with request.app[STORE].pool.connection() as conn, conn.transaction():
        instant = body.start + timedelta(microseconds=1)
        scope = Scope(body.site, site.site, [machine], body.start, instant, _now())
        before = await downtime_report(conn, scope)
        if not any(event.start == body.start for _, event in before.events):
            reason = f"no stop of {body.machine} starts at {body.start.isoformat()}"
            raise refuse("start", reason, 404)
        row = await (
            await conn.execute(
                sql.SQL(
                    "INSERT INTO downtime_reclassifications"
                    " (site, machine, start_ts, reason, note, actor, actor_name)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {columns}"
                ).format(columns=_COLUMNS),
                (
                    body.site,
                    body.machine,
                    body.start,
                    Jsonb(body.reason),
                    body.note,
                    f"key {key.prefix}",
                    key.name,
                ),
            )
        ).fetchone()
        after = await downtime_report(conn, replace(scope, now=_now()))
    stop = next(event for _, event in after.events if event.start == body.start)
    return ReclassifiedStop(
        stop=stop_out(body.machine, stop), change=_change(required(row, "the kept change"))
    )


_COLUMNS = sql.SQL("id, site, machine, start_ts, reason, note, actor, actor_name, at")


def _now() -> datetime:
    return datetime.now(UTC)


def _change(row: TupleRow) -> ReclassificationOut:
    return ReclassificationOut(
        id=row[0],
        site=row[1],
        machine=row[2],
        start=row[3],
        reason=row[4],
        note=row[5],
        by=row[6],
        by_name=row[7],
        at=row[8],
    )


class ReclassificationsQuery(Params):
    """Whose changes, and which page (newest first)."""

    site: str = Field(pattern=ID_PATTERN, max_length=64, description="The site's id.")
    machine: str | None = Field(
        default=None, pattern=ID_PATTERN, max_length=64, description="Only this machine's."
    )
    before: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="Only changes with a smaller id (paging)."
    )
    limit: int = Field(default=100, ge=1, le=1000, description="Page size.")


class ReclassificationsPage(BaseModel):
    """Reclassifications, newest first."""

    items: list[ReclassificationOut]


@API.operation(
    "GET",
    "/api/v1/downtime/reclassifications",
    summary="Every reason operators set afterwards, with who and when",
    tag=TAG,
    role=Role.VIEWER,
    params=ReclassificationsQuery,
    response=ReclassificationsPage,
)
async def list_reclassifications(
    request: web.Request, query: ReclassificationsQuery
) -> ReclassificationsPage:
    """Newest first; page on with `before` set to the last id seen."""

    async def work(conn: Connection) -> list[TupleRow]:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT {columns} FROM downtime_reclassifications"
                " WHERE site = %s AND (%s::text IS NULL OR machine = %s)"
                " AND (%s::int8 IS NULL OR id < %s) ORDER BY id DESC LIMIT %s"
            ).format(columns=_COLUMNS),
            (query.site, query.machine, query.machine, query.before, query.before, query.limit),
        )
        return await cursor.fetchall()

    rows = await request.app[STORE].reads.run(work)
    return ReclassificationsPage(items=[_change(row) for row in rows])
