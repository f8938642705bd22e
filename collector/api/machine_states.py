"""/api/v1/machine-states: what each machine of a site is doing now, and since when; and one
machine's spans of state over a window (its timeline)."""

from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel, Field

from collector.analytics.equipment import ID_PATTERN, TimeElement
from collector.analytics.histories import TooMuchHistory, read_spans_and_counts, snapshot
from collector.analytics.losses import Classifier, StateSpan
from collector.analytics.machine_events import Latest, latest_spans
from collector.api.kpis import TAG, Code
from collector.api.operations import API, Params, Role
from collector.api.params import Timestamp
from collector.api.scope import ScopeQuery, refuse, resolve
from collector.replica import Connection
from collector.state import EQUIPMENT, STORE


@dataclass(frozen=True, slots=True)
class _Named:
    """What a span's codes mean in the site's loss mapping (None: the mapping lacks it)."""

    state: str | None
    element: TimeElement | None
    reason: str | None

    @staticmethod
    def of(classifier: Classifier, state: Code, reason: Code | None) -> "_Named":
        mapped = classifier.state(state)
        found = classifier.reason(reason)
        reason_name = None if found is None else found.name
        if mapped is None:
            return _Named(None, None, reason_name)
        # A stop's time goes where its reason says, while that reason applies to the state.
        element = (
            mapped.element
            if mapped.element is TimeElement.PRODUCTION
            else classifier.stop(mapped, found)[0]
        )
        return _Named(mapped.name, element, reason_name)


class MachineStatesQuery(Params):
    """Which site."""

    site: str = Field(pattern=ID_PATTERN, max_length=64, description="The site's id.")


class MachineNow(BaseModel):
    """A machine's current span of state (all null: no state known yet)."""

    machine: str
    name: str | None = Field(description="The machine's display name.")
    area: str
    line: str
    state: Code | None = Field(description="The state code its state tag reads.")
    state_name: str | None = Field(description="The code's state in the loss mapping.")
    element: TimeElement | None = Field(
        description="Where its time goes now (its reason's element while one applies)."
    )
    reason: Code | None
    reason_name: str | None
    product: str | None
    since: Timestamp | None = Field(description="When this span began.")


class MachineStatesOut(BaseModel):
    """Each machine of a site as the deriver last saw it (docs/analytics.md)."""

    site: str
    time_zone: str
    machines: list[MachineNow]


@API.operation(
    "GET",
    "/api/v1/machine-states",
    summary="Each machine's current state, reason and product, and since when",
    tag=TAG,
    role=Role.VIEWER,
    params=MachineStatesQuery,
    response=MachineStatesOut,
    errors=(404,),
)
async def get_machine_states(request: web.Request, query: MachineStatesQuery) -> MachineStatesOut:
    """The latest derived span of each machine, named by the site's loss mapping.

    The same spans the `machine.state` stream events announce: a client shows these, then
    follows the stream.
    """
    store = request.app[EQUIPMENT]
    site = await store.site(query.site)
    if site is None:
        raise refuse("site", f"no site {query.site}", 404)
    machines = await store.machines(query.site)
    keys = [(query.site, machine.id) for machine in machines]

    async def work(conn: Connection) -> Latest:
        return await latest_spans(conn, keys)

    latest = await request.app[STORE].reads.run(work)
    classifier = Classifier(site.site.loss_mapping)
    out = []
    for machine in machines:
        now = MachineNow(
            machine=machine.id,
            name=machine.machine.name,
            area=machine.machine.area,
            line=machine.machine.line,
            state=None,
            state_name=None,
            element=None,
            reason=None,
            reason_name=None,
            product=None,
            since=None,
        )
        span = latest.get((query.site, machine.id))
        if span is not None:
            since, state, reason, product = span
            named = _Named.of(classifier, state, reason)
            now.state, now.reason, now.product, now.since = state, reason, product, since
            now.state_name, now.element, now.reason_name = named.state, named.element, named.reason
        out.append(now)
    return MachineStatesOut(site=query.site, time_zone=site.site.time_zone, machines=out)


class TimelineQuery(ScopeQuery):
    """One machine, and a window."""

    machine: str = Field(pattern=ID_PATTERN, max_length=64, description="The machine's id.")


class TimelineSpan(BaseModel):
    """A span of unchanged state, reason and product, cut to the window."""

    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to", description="Now, for the span going on.")
    ongoing: bool
    state: Code
    state_name: str | None
    element: TimeElement | None
    reason: Code | None
    reason_name: str | None
    product: str | None


class TimelineOut(BaseModel):
    """A machine's spans over the window (cut at now), oldest first; time without a span is
    unknown (before its first state reading)."""

    site: str
    machine: str
    time_zone: str
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to", description="The window's end, or now if earlier.")
    spans: list[TimelineSpan]


@API.operation(
    "GET",
    "/api/v1/machine-states/timeline",
    summary="One machine's spans of state over a window",
    tag=TAG,
    role=Role.VIEWER,
    params=TimelineQuery,
    response=TimelineOut,
    errors=(404, 422),
)
async def get_machine_timeline(request: web.Request, query: TimelineQuery) -> TimelineOut:
    """The machine's stored spans meeting the window, cut to it, named by the loss mapping.

    The same spans the KPIs and downtime are computed from (docs/analytics.md).
    """
    scope = await resolve(request, query)
    start, end = scope.start, min(scope.end, scope.now)

    async def work(conn: Connection) -> list[StateSpan]:
        if end <= start:
            return []
        async with snapshot(conn):
            read = await read_spans_and_counts(
                conn, scope.site_id, [query.machine], [start, end], scope.now
            )
        return read.spans[query.machine]

    try:
        spans = await request.app[STORE].reads.run(work)
    except TooMuchHistory as exc:
        raise refuse("from", f"{exc}: ask for a shorter window") from None
    classifier = Classifier(scope.site.loss_mapping)
    out = []
    # The reader adds all of a stop going on at an edge (for its length); only the window shows.
    for span in (s for s in spans if s.end > start and s.start < end):
        named = _Named.of(classifier, span.state, span.reason)
        values = {
            "from": max(span.start, start),
            "to": min(span.end, end),
            "ongoing": span.open,
            "state": span.state,
            "state_name": named.state,
            "element": named.element,
            "reason": span.reason,
            "reason_name": named.reason,
            "product": span.product,
        }
        out.append(TimelineSpan.model_validate(values))
    values = {
        "site": scope.site_id,
        "machine": query.machine,
        "time_zone": scope.site.time_zone,
        "from": start,
        "to": max(start, end),
        "spans": out,
    }
    return TimelineOut.model_validate(values)
