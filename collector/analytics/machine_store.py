"""Machines' stored state intervals and counts: derived again from a minute on, and read back."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from collector.analytics.equipment import Machine
from collector.analytics.machine_derivation import (
    Codes,
    MachineReading,
    Span,
    count_rows,
    derive,
    product_text,
)
from collector.store import join_value
from shared.readings import DataType, Quality, Value

Conn = AsyncConnection[TupleRow]
MachineKey = tuple[str, str]
"""(site, machine)."""
_BAD = int(Quality.BAD)

# The versions of every tag of the machines that any of the given tag versions belongs to.
_MACHINE_TAGS = """
SELECT e.site, e.machine, e.role, t.tag_id, t.data_type, m.spec
FROM equipment_tags e
JOIN tags t ON (t.agent_id, t.device, t.name) = (e.agent_id, e.device, e.name)
JOIN equipment_machines m ON (m.site, m.machine) = (e.site, e.machine)
WHERE (e.site, e.machine) IN (
    SELECT e2.site, e2.machine FROM equipment_tags e2
    JOIN tags t2 ON (t2.agent_id, t2.device, t2.name) = (e2.agent_id, e2.device, e2.name)
    WHERE t2.tag_id = ANY(%s)
)
"""
# The last usable reading of a role's tag versions before a moment: one index probe each.
_BEFORE = """
SELECT e.ts, e.value, e.value_text, e.data_type FROM unnest(%(ids)s::int4[]) AS v(id),
LATERAL (
    SELECT r.ts, r.seq, r.value, r.value_text, t.data_type FROM readings r
    JOIN tags t ON t.tag_id = r.tag_id
    WHERE r.tag_id = v.id AND r.ts < %(at)s AND r.quality <> %(bad)s
        AND (r.value IS NOT NULL OR r.value_text IS NOT NULL)
    ORDER BY r.ts DESC, r.seq DESC LIMIT 1
) AS e ORDER BY e.ts DESC, e.seq DESC LIMIT 1
"""
_FROM = """
SELECT r.ts, r.value, r.value_text, r.tag_id FROM readings r
WHERE r.tag_id = ANY(%(ids)s) AND r.ts >= %(at)s AND r.quality <> %(bad)s
    AND (r.value IS NOT NULL OR r.value_text IS NOT NULL)
ORDER BY r.ts, r.seq
"""


@dataclass(slots=True)
class MachineTags:
    """A machine's model and the tag versions of each part its tags play."""

    machine: Machine
    roles: dict[str, list[int]]
    types: dict[int, DataType]


async def machines_of(conn: Conn, tag_ids: Sequence[int]) -> dict[MachineKey, MachineTags]:
    """The machines whose tags include any of these tag versions."""
    rows = await (await conn.execute(_MACHINE_TAGS, [list(tag_ids)])).fetchall()
    out: dict[MachineKey, MachineTags] = {}
    for site, name, role, tag_id, data_type, spec in rows:
        found = out.get((site, name))
        if found is None:
            found = MachineTags(Machine.model_validate(spec), defaultdict(list), {})
            out[(site, name)] = found
        found.roles[role].append(tag_id)
        found.types[tag_id] = DataType(data_type)
    return out


async def rederive(conn: Conn, key: MachineKey, tags: MachineTags, start: datetime) -> None:
    """Replace the machine's intervals and counts from `start` (a minute boundary) on."""
    site, machine = key
    before = Codes(
        await _value_before(conn, tags, "state", start),
        await _value_before(conn, tags, "reason", start),
        _product(await _value_before(conn, tags, "product", start)),
    )
    counters_before: dict[str, float] = {}
    for role in ("good", "scrap"):
        value = await _value_before(conn, tags, role, start)
        if value is not None:
            counters_before[role] = float(value)
    role_of = {tag: role for role, ids in tags.roles.items() for tag in ids}
    rows = await (
        await conn.execute(_FROM, {"ids": list(role_of), "at": start, "bad": _BAD})
    ).fetchall()
    readings = []
    for ts, number, text, tag_id in rows:
        # _FROM leaves out readings without a value: join_value returns one.
        typed = cast(Value, join_value(tags.types[tag_id], number, text))
        readings.append(MachineReading(ts, role_of[tag_id], typed))
    derived = derive(tags.machine, start, before, counters_before, readings)
    await _store_spans(conn, site, machine, start, derived.spans)
    await conn.execute(
        "DELETE FROM machine_counts WHERE site = %s AND machine = %s AND minute >= %s",
        (site, machine, start),
    )
    counts = list(count_rows(derived))
    if counts:
        async with conn.cursor().copy(
            "COPY machine_counts (site, machine, minute, product, good, scrap) FROM STDIN"
        ) as copy:
            for row in counts:
                await copy.write_row((site, machine, *row))


async def _value_before(
    conn: Conn, tags: MachineTags, role: str, at: datetime
) -> bool | int | float | str | None:
    ids = tags.roles.get(role)
    if not ids:
        return None
    params: dict[str, Any] = {"ids": ids, "at": at, "bad": _BAD}
    row = await (await conn.execute(_BEFORE, params)).fetchone()
    if row is None:
        return None
    return join_value(DataType(row[3]), row[1], row[2])


def _product(value: bool | int | float | str | None) -> str | None:
    return None if value is None else product_text(value)


async def _store_spans(
    conn: Conn, site: str, machine: str, start: datetime, spans: list[Span]
) -> None:
    """Put the spans from `start` on in place of the stored ones, joining the span before."""
    await conn.execute(
        "DELETE FROM machine_intervals WHERE site = %s AND machine = %s AND start_ts >= %s",
        (site, machine, start),
    )
    row = await (
        await conn.execute(
            "SELECT start_ts, state, reason, product FROM machine_intervals"
            " WHERE site = %s AND machine = %s AND start_ts < %s"
            " ORDER BY start_ts DESC LIMIT 1",
            (site, machine, start),
        )
    ).fetchone()
    if row is not None:
        # The span before `start` ends where the first new one starts, or goes on as it.
        end: datetime | None = start
        if spans and (spans[0].state, spans[0].reason, spans[0].product) == tuple(row[1:]):
            end = spans[0].end
            spans = spans[1:]
        await conn.execute(
            "UPDATE machine_intervals SET end_ts = %s"
            " WHERE site = %s AND machine = %s AND start_ts = %s",
            (end, site, machine, row[0]),
        )
    if spans:
        async with conn.cursor().copy(
            "COPY machine_intervals (site, machine, start_ts, end_ts, state, reason, product)"
            " FROM STDIN"
        ) as copy:
            for span in spans:
                await copy.write_row(
                    (
                        site,
                        machine,
                        span.start,
                        span.end,
                        Jsonb(span.state),
                        None if span.reason is None else Jsonb(span.reason),
                        span.product,
                    )
                )
