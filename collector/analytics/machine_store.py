"""Machines' stored state intervals and counts: derived again from a minute on, and read back."""

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from collector.analytics.equipment import CounterKind, Machine
from collector.analytics.machine_derivation import (
    Code,
    Codes,
    MachineReading,
    Span,
    count_rows,
    derive,
    product_text,
    usable,
)
from collector.analytics.timespans import MINUTE, floor_minute
from collector.copy_rows import (
    HEADER,
    TRAILER,
    binary_row,
    datetime_field,
    float8_field,
    jsonb_field,
)
from collector.store import join_value
from shared.invariants import required
from shared.readings import DataType, Quality, Value

Conn = AsyncConnection[TupleRow]
MachineKey = tuple[str, str]
"""(site, machine)."""
_BAD = int(Quality.BAD)
_BEFORE_ROLES = ("state", "reason", "product", "good", "scrap")
_CODE_ROLES = frozenset({"state", "reason", "product"})

# The versions of every tag of the given machines.
_MACHINE_TAGS = """
SELECT e.site, e.machine, e.role, t.tag_id, t.data_type, m.spec
FROM unnest(%s::text[], %s::text[]) AS k (site, machine)
JOIN equipment_machines m ON (m.site, m.machine) = (k.site, k.machine)
JOIN equipment_tags e ON (e.site, e.machine) = (k.site, k.machine)
JOIN tags t ON (t.agent_id, t.device, t.name) = (e.agent_id, e.device, e.name)
"""
# Per machine: how many of its readings there are from `at` on, up to most + 1, and the
# time of the (most + 1)th, where the next slice starts.
_SLICES = """
SELECT m.g, s.n, s.last FROM (
    SELECT g, array_agg(id) AS ids, min(at) AS at
    FROM unnest(%(g)s::int4[], %(ids)s::int4[], %(at)s::timestamptz[]) AS u(g, id, at) GROUP BY g
) AS m CROSS JOIN LATERAL (
    SELECT count(*) AS n, max(ts) AS last FROM (
        SELECT ts FROM readings WHERE tag_id = ANY(m.ids) AND ts >= m.at
        ORDER BY ts LIMIT %(most)s + 1
    ) AS first
) AS s
"""
# The last usable reading of each group of tag versions before its moment.
_BEFORE = """
SELECT DISTINCT ON (u.g) u.g, e.value, e.value_text, e.data_type
FROM unnest(%(g)s::int4[], %(ids)s::int4[], %(at)s::timestamptz[]) AS u(g, id, at)
CROSS JOIN LATERAL (
    SELECT r.ts, r.seq, r.value, r.value_text, t.data_type FROM readings r
    JOIN tags t ON t.tag_id = r.tag_id
    WHERE r.tag_id = u.id AND r.ts < u.at AND r.quality <> %(bad)s
        AND (r.value IS NOT NULL OR r.value_text IS NOT NULL)
        AND (r.value IS NULL OR abs(r.value) < 1e300)  -- NaN sorts above every number
    ORDER BY r.ts DESC, r.seq DESC LIMIT 1
) AS e
ORDER BY u.g, e.ts DESC, e.seq DESC
"""
# Each machine's readings in its range, in time order.
# A reading equal to the one before it changes nothing a code (state, reason, product) or a
# cumulative counter says: such tags' readings are sent only where their value changes.
_FROM = """
SELECT u.g, r.ts, r.value, r.value_text, r.tag_id
FROM unnest(%(g)s::int4[], %(ids)s::int4[], %(at)s::timestamptz[], %(until)s::timestamptz[],
    %(codes)s::bool[]) AS u(g, id, at, until, codes)
CROSS JOIN LATERAL (
    SELECT ts, seq, value, value_text, tag_id FROM (
        SELECT ts, seq, value, value_text, tag_id, (value, value_text)
            IS NOT DISTINCT FROM lag((value, value_text)) OVER (ORDER BY ts, seq) AS same
        FROM readings
        WHERE tag_id = u.id AND ts >= u.at AND ts < u.until AND quality <> %(bad)s
            AND (value IS NOT NULL OR value_text IS NOT NULL)
        OFFSET 0  -- keeps this a scan of each tag's index (pulled up, it became a seq scan)
    ) AS w
    WHERE NOT (u.codes AND w.same)
) AS r
ORDER BY u.g, r.ts, r.seq
"""
_SPANS_BEFORE = """
SELECT u.g, s.start_ts, s.end_ts, s.state, s.reason, s.product
FROM unnest(%s::int4[], %s::text[], %s::text[], %s::timestamptz[]) AS u(g, site, machine, at)
CROSS JOIN LATERAL (
    SELECT start_ts, end_ts, state, reason, product FROM machine_intervals
    WHERE site = u.site AND machine = u.machine AND start_ts < u.at
    ORDER BY start_ts DESC LIMIT 1
) AS s
"""
_RANGES = "unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])"
_CLEAR = """
DELETE FROM {table} d USING {ranges} AS u(site, machine, lo, hi)
WHERE d.site = u.site AND d.machine = u.machine AND d.{column} >= u.lo AND d.{column} < u.hi
"""
_NEXT_STARTS = """
SELECT u.g, (
    SELECT min(start_ts) FROM machine_intervals
    WHERE site = u.site AND machine = u.machine AND start_ts >= u.at
) FROM unnest(%s::int4[], %s::text[], %s::text[], %s::timestamptz[]) AS u(g, site, machine, at)
"""
_END_PREVIOUS = """
UPDATE machine_intervals m SET end_ts = u.end_ts
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])
    AS u(site, machine, start_ts, end_ts)
WHERE (m.site, m.machine, m.start_ts) = (u.site, u.machine, u.start_ts)
"""


@dataclass(slots=True)
class MachineTags:
    """A machine's model and the tag versions of each part its tags play."""

    machine: Machine
    roles: dict[str, list[int]]
    types: dict[int, DataType]

    def ids(self) -> list[int]:
        """Its tag versions, each once (one may play several parts)."""
        return list(dict.fromkeys(tag for found in self.roles.values() for tag in found))


async def machines_of(conn: Conn, keys: Sequence[MachineKey]) -> dict[MachineKey, MachineTags]:
    """These machines (those that exist) with their tag versions."""
    params = [[site for site, _ in keys], [machine for _, machine in keys]]
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


@dataclass(frozen=True, slots=True)
class Rederivation:
    """A machine whose intervals and counts in [start, until) are derived again (`start` a
    minute boundary)."""

    key: MachineKey
    tags: MachineTags
    start: datetime
    until: datetime

    @property
    def ids(self) -> list[int]:
        """Its tag versions, each once (one may play several parts)."""
        return self.tags.ids()


@dataclass(frozen=True, slots=True)
class Slice:
    """How much of a machine's readings from a moment on one pass derives."""

    readings: int
    """How many readings it holds (at most `most` + 1)."""
    end: datetime | None
    """Where the next slice starts (a minute boundary), or None: the rest fits in this one."""


async def slices(
    conn: Conn, starts: Sequence[tuple[MachineTags, datetime]], most: int
) -> list[Slice]:
    """For each machine, the slice of about `most` of its readings from its start on."""
    g, ids, at = [], [], []
    for number, (tags, start) in enumerate(starts):
        for tag in tags.ids():
            g.append(number)
            ids.append(tag)
            at.append(start)
    params = {"g": g, "ids": ids, "at": at, "most": most}
    found = {
        n: (count, last)
        for n, count, last in await (await conn.execute(_SLICES, params)).fetchall()
    }
    out = []
    for number, (_, start) in enumerate(starts):
        count, last = found.get(number, (0, None))
        end = max(floor_minute(last), start + MINUTE) if count > most else None
        out.append(Slice(count, end))
    return out


async def rederive(conn: Conn, jobs: Sequence[Rederivation]) -> None:
    """Replace the machines' intervals and counts in their ranges, from the readings there
    (a few statements for all of them)."""
    previous = await _spans_before(conn, jobs)
    before = await _values_before(conn, jobs)
    readings = await _readings_in(conn, jobs)
    spans = []
    counts: list[bytes] = []
    for number, job in enumerate(jobs):
        values = before.get(number, {})
        codes = Codes(values.get("state"), values.get("reason"), _product(values.get("product")))
        stored = previous.get(number)
        if codes.state is None and stored is not None:
            # The readings it came from are gone (retention): the stored span still knows.
            codes = Codes(stored[2], stored[3], stored[4])
        counters = {
            role: float(value)
            for role in ("good", "scrap")
            if (value := values.get(role)) is not None
        }
        derived = derive(job.tags.machine, job.start, codes, counters, readings.get(number, []))
        spans.append(derived.spans)
        site, machine = (name.encode() for name in job.key)
        counts.extend(
            binary_row(
                [
                    site,
                    machine,
                    datetime_field(minute),
                    product.encode(),
                    float8_field(good),
                    float8_field(scrap),
                ]
            )
            for minute, product, good, scrap in count_rows(derived)
        )
    await _store_spans(conn, jobs, previous, spans)
    await conn.execute(_clear("machine_counts", "minute"), _ranges(jobs))
    if counts:
        await _copy(conn, "machine_counts (site, machine, minute, product, good, scrap)", counts)


async def _copy(conn: Conn, table: str, rows: list[bytes]) -> None:
    """Binary COPY of these rows into `table` (its name and columns)."""
    async with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        await copy.write(b"".join([HEADER, *rows, TRAILER]))


def _clear(table: str, column: str) -> sql.Composed:
    return sql.SQL(_CLEAR).format(
        table=sql.Identifier(table), ranges=sql.SQL(_RANGES), column=sql.Identifier(column)
    )


def _ranges(jobs: Sequence[Rederivation]) -> list[list[Any]]:
    return [
        [job.key[0] for job in jobs],
        [job.key[1] for job in jobs],
        [job.start for job in jobs],
        [job.until for job in jobs],
    ]


def _keyed(jobs: Sequence[Rederivation], at: Sequence[datetime]) -> list[list[Any]]:
    return [
        list(range(len(jobs))),
        [job.key[0] for job in jobs],
        [job.key[1] for job in jobs],
        list(at),
    ]


StoredSpan = tuple[datetime, datetime | None, Any, Any, str | None]
"""start, end, state, reason, product of a stored span."""


async def _spans_before(conn: Conn, jobs: Sequence[Rederivation]) -> dict[int, StoredSpan]:
    """The stored span before each job's start, by job number, where there is one."""
    params = _keyed(jobs, [job.start for job in jobs])
    rows = await (await conn.execute(_SPANS_BEFORE, params)).fetchall()
    return {row[0]: (row[1], row[2], row[3], row[4], row[5]) for row in rows}


async def _values_before(conn: Conn, jobs: Sequence[Rederivation]) -> dict[int, dict[str, Any]]:
    """Each job's usable value per role just before its start, by job number."""
    g: list[int] = []
    ids: list[int] = []
    at: list[datetime] = []
    parts: list[tuple[int, str]] = []
    for number, job in enumerate(jobs):
        for role in _BEFORE_ROLES:
            for tag in job.tags.roles.get(role, ()):
                g.append(len(parts))
                ids.append(tag)
                at.append(job.start)
            parts.append((number, role))
    params: dict[str, Any] = {"g": g, "ids": ids, "at": at, "bad": _BAD}
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    for part, number, text, data_type in await (await conn.execute(_BEFORE, params)).fetchall():
        owner, role = parts[part]
        out[owner][role] = usable(role, cast(Value, join_value(DataType(data_type), number, text)))
    return out


async def _readings_in(conn: Conn, jobs: Sequence[Rederivation]) -> dict[int, list[MachineReading]]:
    """Each job's usable readings in its range, in time order, by job number."""
    parts: list[dict[int, list[str]]] = []
    for job in jobs:
        played: dict[int, list[str]] = defaultdict(list)
        for role, found in job.tags.roles.items():
            for tag in found:
                played[tag].append(role)
        parts.append(played)
    g, ids, at, until, codes = [], [], [], [], []
    for number, job in enumerate(jobs):
        for tag in job.ids:
            g.append(number)
            ids.append(tag)
            at.append(job.start)
            until.append(job.until)
            codes.append(_changes_only(job.tags, parts[number][tag]))
    params: dict[str, Any] = {
        "g": g,
        "ids": ids,
        "at": at,
        "until": until,
        "codes": codes,
        "bad": _BAD,
    }
    out: dict[int, list[MachineReading]] = defaultdict(list)
    for number, ts, value, text, tag_id in await (await conn.execute(_FROM, params)).fetchall():
        # _FROM leaves out readings without a value: join_value returns one.
        raw = cast(Value, join_value(jobs[number].tags.types[tag_id], value, text))
        for role in parts[number][tag_id]:  # a tag may play several parts: each gets it
            code = usable(role, raw)
            if code is not None:
                out[number].append(MachineReading(ts, role, code))
    return out


def _changes_only(tags: MachineTags, roles: Sequence[str]) -> bool:
    """Whether only a tag version's changes matter in every part it plays: codes and
    cumulative counters (a delta counter's every reading is a count), each of them played by
    this version alone (versions of one tag take turns: each's changes are not the part's)."""
    machine = tags.machine
    for role in roles:
        if len(tags.roles[role]) > 1:
            return False
        if role in _CODE_ROLES:
            continue
        counter = machine.good if role == "good" else required(machine.scrap, "a scrap counter")
        if counter.kind is CounterKind.DELTA:
            return False
    return True


def _product(value: bool | int | float | str | None) -> str | None:
    return None if value is None else product_text(value)


async def _store_spans(
    conn: Conn,
    jobs: Sequence[Rederivation],
    previous: dict[int, StoredSpan],
    derived: Sequence[list[Span]],
) -> None:
    """Put each job's spans of [start, until) in place of the stored ones: the span before
    `start` ends where the first new one starts or goes on as it; the last new one ends where
    the stored spans after `until` begin."""
    await conn.execute(_clear("machine_intervals", "start_ts"), _ranges(jobs))
    params = _keyed(jobs, [job.until for job in jobs])
    after: dict[int, datetime | None] = dict(
        await (await conn.execute(_NEXT_STARTS, params)).fetchall()
    )
    ended: list[tuple[str, str, datetime, datetime | None]] = []
    rows: list[bytes] = []
    codes = _JsonCodes()
    for number, (job, spans) in enumerate(zip(jobs, derived, strict=True)):
        if spans:  # the last one is open: it goes on up to the spans after `until`, if any
            spans[-1] = replace(spans[-1], end=after[number])
        stored = previous.get(number)
        if stored is not None:
            end: datetime | None = job.start
            if spans and (spans[0].state, spans[0].reason, spans[0].product) == stored[2:]:
                end = spans[0].end
                spans = spans[1:]
            ended.append((*job.key, stored[0], end))
        site, machine = (name.encode() for name in job.key)
        rows.extend(
            binary_row(
                [
                    site,
                    machine,
                    datetime_field(span.start),
                    None if span.end is None else datetime_field(span.end),
                    codes.field(span.state),
                    None if span.reason is None else codes.field(span.reason),
                    None if span.product is None else span.product.encode(),
                ]
            )
            for span in spans
        )
    if ended:
        await conn.execute(_END_PREVIOUS, [list(column) for column in zip(*ended, strict=True)])
    if rows:
        await _copy(
            conn,
            "machine_intervals (site, machine, start_ts, end_ts, state, reason, product)",
            rows,
        )


class _JsonCodes:
    """State and reason codes as jsonb fields, each distinct code encoded once."""

    def __init__(self) -> None:
        self._known: dict[tuple[type, Code], bytes] = {}

    def field(self, code: Code) -> bytes:
        """The code's jsonb field (True, 1 and 1.0 are three codes)."""
        key = (type(code), code)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = jsonb_field(json.dumps(code))
        return found
