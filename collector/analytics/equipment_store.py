"""The equipment model in PostgreSQL: sites, machines, their tags, and the audit of changes.

Sites named in the collector's equipment file are managed by it: each start-up makes the
database's copy of those sites (their machines included) equal to the file, and the API may
read them but not change them. Every other site is managed through the API. Every change, by
either, is audited with who made it and the documents before and after.
"""

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from collector.analytics.equipment import LossMapping, Machine, Plant, Site
from collector.metrics import CollectorMetrics
from collector.store import join_value
from shared.errors import PlantwireError
from shared.invariants import required
from shared.readings import DataType

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
Conn = AsyncConnection[TupleRow]
_SEED_LOCK = 0x706C616E74657131
"""Advisory lock key: collectors starting at once seed one after the other."""
CONFIG = "config"
API = "api"


class EquipmentError(PlantwireError):
    """A change the model refuses; `field` names what it is about."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownEquipment(EquipmentError):
    """No such site or machine."""


class EquipmentConflict(EquipmentError):
    """The change clashes with how the model is managed or what depends on it."""


class InvalidEquipment(EquipmentError):
    """The change would leave a machine off every line of its site."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes the model: an API key (its prefix and name), or the config file."""

    who: str
    name: str | None = None


CONFIG_FILE = Actor(CONFIG)


@dataclass(frozen=True, slots=True)
class StoredSite:
    """A site as stored."""

    id: str
    site: Site
    managed_by: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class StoredMachine:
    """A machine as stored."""

    site: str
    id: str
    machine: Machine
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to the model."""

    id: int
    at: datetime
    actor: str
    actor_name: str | None
    action: str
    site: str
    machine: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class MachineState:
    """A machine's latest state-tag value and what its site's loss mapping makes of it."""

    site: str
    machine: str
    states: tuple[str, ...]
    state: str | None


_SITE = sql.SQL("site, spec, managed_by, updated_at, updated_by")
_MACHINE = sql.SQL("site, machine, spec, updated_at, updated_by")


def _site(row: TupleRow) -> StoredSite:
    return StoredSite(row[0], Site.model_validate(row[1]), row[2], row[3], row[4])


def _machine(row: TupleRow) -> StoredMachine:
    return StoredMachine(row[0], row[1], Machine.model_validate(row[2]), row[3], row[4])


def _site_document(site: Site, managed_by: str) -> dict[str, Any]:
    return {"managed_by": managed_by, **site.model_dump(mode="json")}


def _stored_site_document(stored: StoredSite | None) -> dict[str, Any] | None:
    return None if stored is None else _site_document(stored.site, stored.managed_by)


def _stored_machine_document(stored: StoredMachine | None) -> dict[str, Any] | None:
    return None if stored is None else stored.machine.model_dump(mode="json")


async def _audit(
    conn: Conn,
    actor: Actor,
    site: str,
    machine: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    action = "create" if before is None else "delete" if after is None else "update"
    await conn.execute(
        "INSERT INTO equipment_audit (actor, actor_name, action, site, machine, before, after)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            actor.who,
            actor.name,
            action,
            site,
            machine,
            None if before is None else Jsonb(before),
            None if after is None else Jsonb(after),
        ),
    )


async def _rederive_all(conn: Conn, site: str, machine: str) -> None:
    """Forget a changed machine's derived data and have the deriver derive it from its tags'
    first readings (collector/analytics/deriver.py)."""
    for table in ("machine_intervals", "machine_counts"):
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE site = %s AND machine = %s").format(
                sql.Identifier(table)
            ),
            (site, machine),
        )
    await conn.execute(
        "INSERT INTO derive_machines (site, machine, lo)"
        " SELECT e.site, e.machine, min(r.lo) FROM equipment_tags e"
        " JOIN tags t ON (t.agent_id, t.device, t.name) = (e.agent_id, e.device, e.name)"
        " CROSS JOIN LATERAL (SELECT min(ts) AS lo FROM readings WHERE tag_id = t.tag_id) r"
        " WHERE e.site = %s AND e.machine = %s GROUP BY e.site, e.machine"
        " HAVING min(r.lo) IS NOT NULL"
        " ON CONFLICT (site, machine) DO UPDATE SET lo = least(derive_machines.lo, excluded.lo)",
        (site, machine),
    )


def _managed_by_api(site: str, stored: StoredSite | None) -> StoredSite:
    """The site, if it exists and the API may change it."""
    if stored is None:
        raise UnknownEquipment("site", f"no site {site}")
    if stored.managed_by == CONFIG:
        raise EquipmentConflict(
            "site", f"site {site} is managed by the collector's equipment file; change it there"
        )
    return stored


class EquipmentStore:
    """Reads and changes the equipment model; every change is audited in the same transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def sites(self) -> list[StoredSite]:
        """Every site, by id."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT {site} FROM equipment_sites ORDER BY site").format(site=_SITE)
            )
            return [_site(row) for row in await cursor.fetchall()]

    async def machines(self, site: str | None = None) -> list[StoredMachine]:
        """Every machine (of one site, or of all), by site and id."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "SELECT {machine} FROM equipment_machines WHERE %s::text IS NULL "
                    "OR site = %s ORDER BY site, machine"
                ).format(machine=_MACHINE),
                (site, site),
            )
            return [_machine(row) for row in await cursor.fetchall()]

    async def site(self, site: str) -> StoredSite | None:
        """One site, or None."""
        async with self._pool.connection() as conn:
            return await self._site_in(conn, site)

    async def machine(self, site: str, machine: str) -> StoredMachine | None:
        """One machine, or None."""
        async with self._pool.connection() as conn:
            return await self._machine_in(conn, site, machine)

    @staticmethod
    async def _site_in(conn: Conn, site: str, lock: bool = False) -> StoredSite | None:
        cursor = await conn.execute(
            sql.SQL("SELECT {site} FROM equipment_sites WHERE site = %s{lock}").format(
                site=_SITE, lock=sql.SQL(" FOR UPDATE" if lock else "")
            ),
            (site,),
        )
        row = await cursor.fetchone()
        return None if row is None else _site(row)

    @staticmethod
    async def _machine_in(conn: Conn, site: str, machine: str) -> StoredMachine | None:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT {machine} FROM equipment_machines WHERE site = %s AND machine = %s"
            ).format(machine=_MACHINE),
            (site, machine),
        )
        row = await cursor.fetchone()
        return None if row is None else _machine(row)

    @staticmethod
    async def _machines_in(conn: Conn, site: str) -> list[StoredMachine]:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT {machine} FROM equipment_machines WHERE site = %s ORDER BY machine"
            ).format(machine=_MACHINE),
            (site,),
        )
        return [_machine(row) for row in await cursor.fetchall()]

    async def _locked_api_site(self, conn: Conn, site: str) -> StoredSite:
        return _managed_by_api(site, await self._site_in(conn, site, lock=True))

    async def put_site(self, site: str, spec: Site, actor: Actor) -> StoredSite:
        """Create or replace a site managed by the API; unchanged, it is left as it is."""
        async with self._pool.connection() as conn, conn.transaction():
            before = await self._site_in(conn, site, lock=True)
            if before is not None:
                _managed_by_api(site, before)
                for machine in await self._machines_in(conn, site):
                    placed = machine.machine
                    if not spec.has_line(placed.area, placed.line):
                        raise InvalidEquipment(
                            "areas",
                            f"machine {machine.id} is on {placed.area}/{placed.line}, which this"
                            " site would no longer have; move or delete it first",
                        )
            return await self._write_site(conn, site, spec, API, actor, before)

    async def _write_site(
        self,
        conn: Conn,
        site: str,
        spec: Site,
        managed_by: str,
        actor: Actor,
        before: StoredSite | None,
    ) -> StoredSite:
        after = _site_document(spec, managed_by)
        if before is not None and _stored_site_document(before) == after:
            return before
        cursor = await conn.execute(
            sql.SQL(
                "INSERT INTO equipment_sites (site, spec, time_zone, managed_by, "
                "updated_by) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site) DO UPDATE"
                " SET spec = excluded.spec, time_zone = excluded.time_zone, "
                "managed_by = excluded.managed_by, updated_at = now(), updated_by = "
                "excluded.updated_by RETURNING {site}"
            ).format(site=_SITE),
            (site, Jsonb(spec.model_dump(mode="json")), spec.time_zone, managed_by, actor.who),
        )
        await _audit(conn, actor, site, None, _stored_site_document(before), after)
        return _site(required(await cursor.fetchone(), "the written site"))

    async def delete_site(self, site: str, actor: Actor) -> StoredSite:
        """Delete a site managed by the API that has no machines left."""
        async with self._pool.connection() as conn, conn.transaction():
            stored = await self._locked_api_site(conn, site)
            machines = await self._machines_in(conn, site)
            if machines:
                names = ", ".join(machine.id for machine in machines[:10])
                raise EquipmentConflict(
                    "site", f"site {site} still has machines ({names}); delete them first"
                )
            await conn.execute("DELETE FROM equipment_sites WHERE site = %s", (site,))
            await _audit(conn, actor, site, None, _stored_site_document(stored), None)
            return stored

    async def put_machine(
        self, site: str, machine: str, spec: Machine, actor: Actor
    ) -> StoredMachine:
        """Create or replace a machine of a site managed by the API; unchanged, it is kept."""
        async with self._pool.connection() as conn, conn.transaction():
            stored = await self._locked_api_site(conn, site)
            if not stored.site.has_line(spec.area, spec.line):
                raise InvalidEquipment(
                    "line", f"site {site} has no line {spec.line} in an area {spec.area}"
                )
            return await self._write_machine(conn, site, machine, spec, actor)

    async def _write_machine(
        self, conn: Conn, site: str, machine: str, spec: Machine, actor: Actor
    ) -> StoredMachine:
        before = await self._machine_in(conn, site, machine)
        after = spec.model_dump(mode="json")
        if before is not None and _stored_machine_document(before) == after:
            return before
        cursor = await conn.execute(
            sql.SQL(
                "INSERT INTO equipment_machines (site, machine, area, line, spec, "
                "updated_by) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (site, "
                "machine) DO UPDATE SET area = excluded.area, line = excluded.line, "
                "spec = excluded.spec, updated_at = now(), updated_by = "
                "excluded.updated_by RETURNING {machine}"
            ).format(machine=_MACHINE),
            (site, machine, spec.area, spec.line, Jsonb(after), actor.who),
        )
        written = _machine(required(await cursor.fetchone(), "the written machine"))
        await conn.execute(
            "DELETE FROM equipment_tags WHERE site = %s AND machine = %s", (site, machine)
        )
        async with conn.cursor() as tags:
            await tags.executemany(
                "INSERT INTO equipment_tags (site, machine, role, agent_id, device, name)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [(site, machine, role, t.agent, t.device, t.name) for role, t in spec.tags()],
            )
        await _rederive_all(conn, site, machine)
        await _audit(conn, actor, site, machine, _stored_machine_document(before), after)
        return written

    async def delete_machine(self, site: str, machine: str, actor: Actor) -> StoredMachine:
        """Delete a machine of a site managed by the API."""
        async with self._pool.connection() as conn, conn.transaction():
            await self._locked_api_site(conn, site)
            stored = await self._machine_in(conn, site, machine)
            if stored is None:
                raise UnknownEquipment("machine", f"site {site} has no machine {machine}")
            await self._remove_machine(conn, stored, actor)
            return stored

    @staticmethod
    async def _remove_machine(conn: Conn, stored: StoredMachine, actor: Actor) -> None:
        await conn.execute(
            "DELETE FROM equipment_machines WHERE site = %s AND machine = %s",
            (stored.site, stored.id),
        )
        await _audit(conn, actor, stored.site, stored.id, _stored_machine_document(stored), None)

    async def seed(self, plant: Plant) -> None:
        """Make the sites the equipment file names equal to it; release those it no longer names.

        A released site stays, managed by the API from then on: dropping a site from the file
        by mistake must not delete it.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SEED_LOCK,))
            for entry in plant.sites:
                before = await self._site_in(conn, entry.id, lock=True)
                named = {machine.id for machine in entry.machines}
                for stored in await self._machines_in(conn, entry.id):
                    if stored.id not in named:
                        await self._remove_machine(conn, stored, CONFIG_FILE)
                await self._write_site(conn, entry.id, entry.site(), CONFIG, CONFIG_FILE, before)
                for machine in entry.machines:
                    spec = Machine.model_validate(machine.model_dump(exclude={"id"}))
                    await self._write_machine(conn, entry.id, machine.id, spec, CONFIG_FILE)
            cursor = await conn.execute(
                sql.SQL(
                    "SELECT {site} FROM equipment_sites WHERE managed_by = %s AND NOT"
                    " site = ANY(%s) FOR UPDATE"
                ).format(site=_SITE),
                (CONFIG, [entry.id for entry in plant.sites]),
            )
            for row in await cursor.fetchall():
                released = _site(row)
                await self._write_site(conn, released.id, released.site, API, CONFIG_FILE, released)

    async def audit(self, after_id: int, limit: int, site: str | None) -> list[AuditEntry]:
        """Changes after `after_id`, oldest first, of one site or of all."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT id, at, actor, actor_name, action, site, machine, before, after"
                " FROM equipment_audit WHERE id > %s AND (%s::text IS NULL OR site = %s)"
                " ORDER BY id LIMIT %s",
                (after_id, site, site, limit),
            )
            return [AuditEntry(*row) for row in await cursor.fetchall()]

    async def machine_states(self) -> list[MachineState]:
        """Each machine's state now: its state tag's latest reading, read by its loss mapping."""
        async with self._pool.connection() as conn:
            # One index probe per version of each state tag: a join of tags and readings
            # ordered by time would have the planner scan every partition.
            cursor = await conn.execute(
                "SELECT m.site, m.machine, s.spec -> 'loss_mapping', r.data_type, r.value,"
                " r.value_text FROM equipment_tags m JOIN equipment_sites s ON s.site = m.site"
                " LEFT JOIN LATERAL (SELECT t.data_type, rd.value, rd.value_text FROM tags t"
                "   CROSS JOIN LATERAL (SELECT ts, seq, value, value_text FROM readings"
                "     WHERE tag_id = t.tag_id ORDER BY ts DESC, seq DESC LIMIT 1) rd"
                "   WHERE t.agent_id = m.agent_id AND t.device = m.device AND t.name = m.name"
                "   ORDER BY rd.ts DESC, rd.seq DESC LIMIT 1) r ON true"
                " WHERE m.role = 'state' ORDER BY m.site, m.machine"
            )
            rows = await cursor.fetchall()
        states = []
        for site, machine, mapping_json, data_type, number, text in rows:
            mapping = LossMapping.model_validate(mapping_json)
            value = None if data_type is None else join_value(DataType(data_type), number, text)
            names = tuple(state.name for state in mapping.states)
            states.append(MachineState(site, machine, names, mapping.state_of(value)))
        return states


async def watch_status(store: EquipmentStore, metrics: CollectorMetrics, every_s: float) -> None:
    """Keep the equipment_status gauge at each machine's latest state (runs supervised)."""
    while True:
        metrics.show_equipment(
            {
                f"{state.site}/{state.machine}": (
                    state.state or "unknown",
                    (*state.states, "unknown"),
                )
                for state in await store.machine_states()
            }
        )
        await asyncio.sleep(every_s)
