"""/api/v1/machine-states: what each machine of a site is doing now, and since when."""

from aiohttp import web
from pydantic import BaseModel, Field

from collector.analytics.equipment import ID_PATTERN, TimeElement
from collector.analytics.losses import Classifier
from collector.analytics.machine_events import Latest, latest_spans
from collector.api.kpis import TAG, Code
from collector.api.operations import API, Params, Role
from collector.api.params import Timestamp
from collector.api.scope import refuse
from collector.replica import Connection
from collector.state import EQUIPMENT, STORE


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
            mapped = classifier.state(state)
            found = classifier.reason(reason)
            now.state, now.reason, now.product, now.since = state, reason, product, since
            now.reason_name = None if found is None else found.name
            if mapped is not None:
                now.state_name = mapped.name
                now.element = (
                    mapped.element
                    if mapped.element is TimeElement.PRODUCTION
                    else classifier.stop(mapped, found)[0]
                )
        out.append(now)
    return MachineStatesOut(site=query.site, time_zone=site.site.time_zone, machines=out)
