"""Machines' stored state intervals and counts: derived again from a minute on, and read back."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
    usable,
)
from collector.analytics.timespans import MINUTE, floor_minute
from collector.store import join_value
from shared.invariants import required
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
    WHERE t2.tag_id = ANY(%(ids)s)
    UNION SELECT * FROM unnest(%(sites)s::text[], %(machines)s::text[])
)
"""
_NTH = """
SELECT ts FROM readings WHERE tag_id = ANY(%s) AND ts >= %s ORDER BY ts OFFSET %s LIMIT 1
"""
# The last usable reading of a role's tag versions before a moment: one index probe each.
_BEFORE = """
SELECT e.ts, e.value, e.value_text, e.data_type FROM unnest(%(ids)s::int4[]) AS v(id),
LATERAL (
    SELECT r.ts, r.seq, r.value, r.value_text, t.data_type FROM readings r
    JOIN tags t ON t.tag_id = r.tag_id
    WHERE r.tag_id = v.id AND r.ts < %(at)s AND r.quality <> %(bad)s
        AND (r.value IS NOT NULL OR r.value_text IS NOT NULL)
        AND (r.value IS NULL OR abs(r.value) < 1e300)  -- NaN sorts above every number
    ORDER BY r.ts DESC, r.seq DESC LIMIT 1
) AS e ORDER BY e.ts DESC, e.seq DESC LIMIT 1
"""
_FROM = """
SELECT r.ts, r.value, r.value_text, r.tag_id FROM readings r
WHERE r.tag_id = ANY(%(ids)s) AND r.ts >= %(at)s AND r.quality <> %(bad)s
    AND r.ts < %(until)s
    AND (r.value IS NOT NULL OR r.value_text IS NOT NULL)
ORDER BY r.ts, r.seq
"""


@dataclass(slots=True)
class MachineTags:
    """A machine's model and the tag versions of each part its tags play."""

    machine: Machine
    roles: dict[str, list[int]]
    types: dict[int, DataType]


async def machines_of(
    conn: Conn, tag_ids: Sequence[int], keys: Sequence[MachineKey] = ()
) -> dict[MachineKey, MachineTags]:
    """The machines whose tags include any of these tag versions, and those named."""
    params = {
        "ids": list(tag_ids),
        "sites": [site for site, _ in keys],
        "machines": [machine for _, machine in keys],
    }
    rows = await (await conn.execute(_MACHINE_TAGS, params)).fetchall()
    out: dict[MachineKey, MachineTags] = {}
    for site, name, role, tag_id, data_type, spec in rows:
        found = out.get((site, name))
        if found is None:
            found = MachineTags(Machine.model_validate(spec), defaultdict(list), {})
            out[(site, name)] = found
        found.roles[role].append(tag_id)
        found.types[tag_id] = DataType(data_type)
    return out


async def rederive(
    conn: Conn, key: MachineKey, tags: MachineTags, start: datetime, until: datetime
) -> None:
    """Replace the machine's intervals and counts in [start, until) (`start` a minute
    boundary), from the readings in that range."""
    site, machine = key
    previous = await _span_before(conn, site, machine, start)
    before = Codes(
        await _value_before(conn, tags, "state", start),
        await _value_before(conn, tags, "reason", start),
        _product(await _value_before(conn, tags, "product", start)),
    )
    if before.state is None and previous is not None:
        # The readings it came from are gone (retention): the stored span still knows.
        before = Codes(previous[2], previous[3], previous[4])
    counters_before: dict[str, float] = {}
    for role in ("good", "scrap"):
        value = await _value_before(conn, tags, role, start)
        if value is not None:
            counters_before[role] = float(value)
    role_of = {tag: role for role, ids in tags.roles.items() for tag in ids}
    params: dict[str, Any] = {"ids": list(role_of), "at": start, "until": until, "bad": _BAD}
    readings = []
    for ts, number, text, tag_id in await (await conn.execute(_FROM, params)).fetchall():
        # _FROM leaves out readings without a value: join_value returns one.
        role = role_of[tag_id]
        value = usable(role, cast(Value, join_value(tags.types[tag_id], number, text)))
        if value is not None:
            readings.append(MachineReading(ts, role, value))
    derived = derive(tags.machine, start, before, counters_before, readings)
    await _store_spans(conn, key, (start, until), previous, derived.spans)
    await conn.execute(
        "DELETE FROM machine_counts WHERE site = %s AND machine = %s AND minute >= %s"
        " AND minute < %s",
        (site, machine, start, until),
    )
    counts = list(count_rows(derived))
    if counts:
        async with conn.cursor().copy(
            "COPY machine_counts (site, machine, minute, product, good, scrap) FROM STDIN"
        ) as copy:
            for row in counts:
                await copy.write_row((site, machine, *row))


async def slice_end(conn: Conn, tags: MachineTags, start: datetime, most: int) -> datetime | None:
    """Where a slice of at most about `most` of the machine's readings from `start` ends (a
    minute boundary after `start`), or None when fewer than that are left."""
    ids = [tag for found in tags.roles.values() for tag in found]
    row = await (await conn.execute(_NTH, (ids, start, most))).fetchone()
    if row is None:
        return None
    return max(floor_minute(row[0]), start + MINUTE)


StoredSpan = tuple[datetime, datetime | None, Any, Any, str | None]
"""start, end, state, reason, product of a stored span."""


async def _span_before(conn: Conn, site: str, machine: str, at: datetime) -> StoredSpan | None:
    row = await (
        await conn.execute(
            "SELECT start_ts, end_ts, state, reason, product FROM machine_intervals"
            " WHERE site = %s AND machine = %s AND start_ts < %s"
            " ORDER BY start_ts DESC LIMIT 1",
            (site, machine, at),
        )
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


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
    return usable(role, cast(Value, join_value(DataType(row[3]), row[1], row[2])))


def _product(value: bool | int | float | str | None) -> str | None:
    return None if value is None else product_text(value)


async def _store_spans(
    conn: Conn,
    key: MachineKey,
    window: tuple[datetime, datetime],
    previous: StoredSpan | None,
    spans: list[Span],
) -> None:
    """Put the spans of [start, until) in place of the stored ones: the span before `start`
    ends where the first new one starts or goes on as it; the last new one ends where the
    stored spans after `until` begin."""
    (site, machine), (start, until) = key, window
    await conn.execute(
        "DELETE FROM machine_intervals WHERE site = %s AND machine = %s AND start_ts >= %s"
        " AND start_ts < %s",
        (site, machine, start, until),
    )
    row = await (
        await conn.execute(
            "SELECT min(start_ts) FROM machine_intervals"
            " WHERE site = %s AND machine = %s AND start_ts >= %s",
            (site, machine, until),
        )
    ).fetchone()
    if spans:  # the last one is open: it goes on up to the spans after `until`, if any
        spans[-1] = replace(spans[-1], end=required(row, "min()'s row")[0])
    if previous is not None:
        end: datetime | None = start
        if spans and (spans[0].state, spans[0].reason, spans[0].product) == previous[2:]:
            end = spans[0].end
            spans = spans[1:]
        await conn.execute(
            "UPDATE machine_intervals SET end_ts = %s"
            " WHERE site = %s AND machine = %s AND start_ts = %s",
            (end, site, machine, previous[0]),
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
