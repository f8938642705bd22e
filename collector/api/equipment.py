"""/api/v1/equipment: the equipment model, read by viewers, changed by admins, audited.

A site or machine is a document: GET answers it with its `spec`, PUT replaces the spec (the
same spec again changes nothing and is not audited), DELETE removes it and answers what it was.
Sites the collector's equipment file names are read-only here (409).
"""

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from collector.analytics.equipment import ID_PATTERN, Machine, Site
from collector.analytics.equipment_store import (
    Actor,
    AuditEntry,
    EquipmentConflict,
    EquipmentError,
    InvalidEquipment,
    StoredMachine,
    StoredSite,
    UnknownEquipment,
)
from collector.api.auth import PRINCIPAL
from collector.api.operations import API, Body, Params, Role
from collector.api.pages import next_link, position
from collector.api.params import Timestamp
from collector.api.problems import InvalidParam, ProblemError
from collector.pagination import CURSOR_PATTERN
from collector.state import EQUIPMENT, SETTINGS

MAX_LIMIT = 1000
TAG = "equipment"


class SiteSpec(Site, Body):
    """A site: its areas and lines, time zone, production day, calendar and loss mapping."""


class MachineSpec(Machine, Body):
    """A machine: its line, its tags and its ideal cycle times."""


class SiteOut(BaseModel):
    """A site as stored."""

    id: str
    managed_by: str = Field(
        description="config: the equipment file manages it (read-only here); api: this API."
    )
    updated_at: Timestamp
    updated_by: str = Field(description="Who made the last change: a key's prefix, or config.")
    machines: list[str] = Field(description="Ids of its machines.")
    spec: Site


class MachineOut(BaseModel):
    """A machine as stored."""

    site: str
    id: str
    updated_at: Timestamp
    updated_by: str
    spec: Machine


class LineNode(BaseModel):
    """A line of the tree, with its machines' ids."""

    id: str
    name: str | None
    machines: list[str]


class AreaNode(BaseModel):
    """An area of the tree."""

    id: str
    name: str | None
    lines: list[LineNode]


class SiteNode(BaseModel):
    """A site of the tree."""

    id: str
    name: str | None
    time_zone: str
    managed_by: str
    areas: list[AreaNode]


class EquipmentTree(BaseModel):
    """The enterprise, its sites, areas, lines and machines (ids and names only)."""

    enterprise: str
    sites: list[SiteNode]


class AuditOut(BaseModel):
    """One change to the equipment model."""

    id: int
    at: Timestamp
    actor: str = Field(description="A key's prefix (key 3f9a1c07), or config.")
    actor_name: str | None = Field(description="The key's name (null for config).")
    action: str = Field(json_schema_extra={"enum": ["create", "update", "delete"]})
    site: str
    machine: str | None = Field(description="null: a change to the site itself.")
    before: dict[str, Any] | None = Field(description="The document before (null: created).")
    after: dict[str, Any] | None = Field(description="The document after (null: deleted).")


class AuditPage(BaseModel):
    """A page of changes, oldest first."""

    items: list[AuditOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


def _ident(description: str) -> Any:
    return Field(pattern=ID_PATTERN, max_length=64, description=description, examples=["plant-1"])


class SitePath(Params):
    """Which site."""

    site: str = _ident("The site's id.")


class MachinePath(Params):
    """Which machine."""

    site: str = _ident("The site's id.")
    machine: str = _ident("The machine's id, within its site.")


class AuditQuery(Params):
    """Which changes, and which page."""

    site: str | None = Field(
        default=None, pattern=ID_PATTERN, max_length=64, description="Only this site's changes."
    )
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


_STATUS = {InvalidEquipment: 422, EquipmentConflict: 409}
_TITLE = {404: "Unknown equipment", 409: "Conflict", 422: "Invalid equipment"}


def _problem(error: EquipmentError) -> ProblemError:
    status = _STATUS.get(type(error), 404)
    return ProblemError(
        status, _TITLE[status], str(error), [InvalidParam(error.field, error.reason)]
    )


def _actor(request: web.Request) -> Actor:
    key = request[PRINCIPAL]
    return Actor(f"key {key.prefix}", key.name)


def _site_out(stored: StoredSite, machines: list[str]) -> SiteOut:
    return SiteOut(
        id=stored.id,
        managed_by=stored.managed_by,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
        machines=machines,
        spec=stored.site,
    )


def _machine_out(stored: StoredMachine) -> MachineOut:
    return MachineOut(
        site=stored.site,
        id=stored.id,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
        spec=stored.machine,
    )


def _unknown_site(site: str) -> ProblemError:
    return _problem(UnknownEquipment("site", f"no site {site}"))


@API.operation(
    "GET",
    "/api/v1/equipment",
    summary="The equipment tree",
    tag=TAG,
    role=Role.VIEWER,
    response=EquipmentTree,
)
async def get_equipment(request: web.Request, _: Params) -> EquipmentTree:
    """Enterprise, sites, areas, lines and machines: ids and names, each site's details apart."""
    store = request.app[EQUIPMENT]
    sites, machines = await store.sites(), await store.machines()
    plant = request.app[SETTINGS].equipment.plant
    nodes = []
    for stored in sites:
        placed = [m for m in machines if m.site == stored.id]
        areas = [
            AreaNode(
                id=area.id,
                name=area.name,
                lines=[
                    LineNode(
                        id=line.id,
                        name=line.name,
                        machines=[
                            m.id
                            for m in placed
                            if (m.machine.area, m.machine.line) == (area.id, line.id)
                        ],
                    )
                    for line in area.lines
                ],
            )
            for area in stored.site.areas
        ]
        nodes.append(
            SiteNode(
                id=stored.id,
                name=stored.site.name,
                time_zone=stored.site.time_zone,
                managed_by=stored.managed_by,
                areas=areas,
            )
        )
    return EquipmentTree(
        enterprise=plant.enterprise if plant is not None else "enterprise", sites=nodes
    )


@API.operation(
    "GET",
    "/api/v1/equipment/sites/{site}",
    summary="A site of the equipment model",
    tag=TAG,
    role=Role.VIEWER,
    params=SitePath,
    response=SiteOut,
    errors=(404,),
)
async def get_site(request: web.Request, path: SitePath) -> SiteOut:
    """A site's spec, who manages it, and its machines' ids."""
    store = request.app[EQUIPMENT]
    stored = await store.site(path.site)
    if stored is None:
        raise _unknown_site(path.site)
    return _site_out(stored, [m.id for m in await store.machines(path.site)])


@API.operation(
    "PUT",
    "/api/v1/equipment/sites/{site}",
    summary="Create or replace a site",
    tag=TAG,
    role=Role.ADMIN,
    params=SitePath,
    body=SiteSpec,
    response=SiteOut,
    errors=(409,),
)
async def put_site(request: web.Request, path: SitePath, spec: SiteSpec) -> SiteOut:
    """Create the site or replace its spec; the same spec again changes nothing.

    409 if the equipment file manages the site; 422 if a machine is on a line the new spec
    no longer has.
    """
    store = request.app[EQUIPMENT]
    try:
        stored = await store.put_site(path.site, spec, _actor(request))
    except EquipmentError as exc:
        raise _problem(exc) from None
    return _site_out(stored, [m.id for m in await store.machines(path.site)])


@API.operation(
    "DELETE",
    "/api/v1/equipment/sites/{site}",
    summary="Delete a site",
    tag=TAG,
    role=Role.ADMIN,
    params=SitePath,
    response=SiteOut,
    errors=(404, 409),
)
async def delete_site(request: web.Request, path: SitePath) -> SiteOut:
    """Delete a site without machines; the answer is what it was. 409 while it has machines."""
    try:
        stored = await request.app[EQUIPMENT].delete_site(path.site, _actor(request))
    except EquipmentError as exc:
        raise _problem(exc) from None
    return _site_out(stored, [])


@API.operation(
    "GET",
    "/api/v1/equipment/sites/{site}/machines/{machine}",
    summary="A machine of the equipment model",
    tag=TAG,
    role=Role.VIEWER,
    params=MachinePath,
    response=MachineOut,
    errors=(404,),
)
async def get_machine(request: web.Request, path: MachinePath) -> MachineOut:
    """A machine's spec: its line, tags, counters and ideal cycle times."""
    stored = await request.app[EQUIPMENT].machine(path.site, path.machine)
    if stored is None:
        raise _problem(
            UnknownEquipment("machine", f"site {path.site} has no machine {path.machine}")
        )
    return _machine_out(stored)


@API.operation(
    "PUT",
    "/api/v1/equipment/sites/{site}/machines/{machine}",
    summary="Create or replace a machine",
    tag=TAG,
    role=Role.ADMIN,
    params=MachinePath,
    body=MachineSpec,
    response=MachineOut,
    errors=(404, 409),
)
async def put_machine(request: web.Request, path: MachinePath, spec: MachineSpec) -> MachineOut:
    """Create the machine or replace its spec; the same spec again changes nothing.

    404 without the site; 409 if the equipment file manages the site; 422 if its line is not
    one of the site's.
    """
    try:
        stored = await request.app[EQUIPMENT].put_machine(
            path.site, path.machine, spec, _actor(request)
        )
    except EquipmentError as exc:
        raise _problem(exc) from None
    return _machine_out(stored)


@API.operation(
    "DELETE",
    "/api/v1/equipment/sites/{site}/machines/{machine}",
    summary="Delete a machine",
    tag=TAG,
    role=Role.ADMIN,
    params=MachinePath,
    response=MachineOut,
    errors=(404, 409),
)
async def delete_machine(request: web.Request, path: MachinePath) -> MachineOut:
    """Delete a machine; the answer is what it was."""
    try:
        stored = await request.app[EQUIPMENT].delete_machine(
            path.site, path.machine, _actor(request)
        )
    except EquipmentError as exc:
        raise _problem(exc) from None
    return _machine_out(stored)


@API.operation(
    "GET",
    "/api/v1/equipment/audit",
    summary="Changes to the equipment model, oldest first",
    tag=TAG,
    role=Role.ADMIN,
    params=AuditQuery,
    response=AuditPage,
)
async def list_equipment_audit(request: web.Request, query: AuditQuery) -> AuditPage:
    """Who changed what and when, with the documents before and after; paginated."""
    after = position(query.cursor)
    rows = await request.app[EQUIPMENT].audit(after[1] if after else 0, query.limit + 1, query.site)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    last = (rows[-1].at, rows[-1].id) if more else None
    return AuditPage(items=[_audit_out(row) for row in rows], next=next_link(request, last))


def _audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        id=entry.id,
        at=entry.at,
        actor=entry.actor,
        actor_name=entry.actor_name,
        action=entry.action,
        site=entry.site,
        machine=entry.machine,
        before=entry.before,
        after=entry.after,
    )
