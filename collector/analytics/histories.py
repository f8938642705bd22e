"""Machines' stored spans, counts and reclassifications, read for a window of time.

Every answer is computed from the stored intervals and counts clipped to its window, so it
never depends on how it was asked. Counts are summed in the database per segment of time
between consecutive boundaries the caller names (group edges, planned-time edges): within a
segment nothing the KPIs look at changes, so the sums are as exact as the minutes.
"""

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.analytics.equipment import code_key
from collector.analytics.kpi import CountMinute
from collector.analytics.losses import Reclassification, StateSpan

Conn = AsyncConnection[TupleRow]
_WALK_BACK = 200
"""Spans read per step while looking back for the start of a stop going on at a window's start."""

# Per machine: the span in force at `start`, then those starting inside the window; both
# bounded by the (site, machine, start_ts) key, however long the machine's history.
_SPANS = """
SELECT m.machine, s.* FROM unnest(%(machines)s::text[]) AS m (machine)
CROSS JOIN LATERAL (
    (SELECT * FROM (
        SELECT start_ts, end_ts, state, reason, product FROM machine_intervals
        WHERE site = %(site)s AND machine = m.machine AND start_ts <= %(start)s
        ORDER BY start_ts DESC LIMIT 1
     ) AS latest WHERE end_ts IS NULL OR end_ts > %(start)s)
    UNION ALL
    (SELECT start_ts, end_ts, state, reason, product FROM machine_intervals
     WHERE site = %(site)s AND machine = m.machine AND start_ts > %(start)s
         AND start_ts < %(end)s)
) AS s
ORDER BY m.machine, s.start_ts
"""
_EARLIER = """
SELECT start_ts, end_ts, state, reason, product FROM machine_intervals
WHERE site = %s AND machine = %s AND start_ts < %s ORDER BY start_ts DESC LIMIT %s
"""
_COUNTS = """
SELECT machine, width_bucket(minute, %(edges)s::timestamptz[]) AS segment, product,
    sum(good), sum(scrap)
FROM machine_counts
WHERE site = %(site)s AND machine = ANY(%(machines)s) AND minute >= %(start)s
    AND minute < %(end)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
_RECLASSIFIED = """
SELECT DISTINCT ON (machine, start_ts) machine, start_ts, reason, actor, actor_name, at, note
FROM downtime_reclassifications
WHERE site = %(site)s AND machine = ANY(%(machines)s) AND start_ts >= %(start)s
    AND start_ts < %(end)s
ORDER BY machine, start_ts, id DESC
"""

Row = tuple[datetime, datetime | None, Any, Any, str | None]


@asynccontextmanager
async def snapshot(conn: Conn) -> AsyncIterator[None]:
    """A read-only transaction that sees the database as of its first query, so a report never
    mixes what a deriver pass wrote with what it replaced."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _span(row: Row, now: datetime) -> StateSpan:
    start, end, state, reason, product = row
    if end is None:
        return StateSpan(start, max(now, start), state, reason, product, open=True)
    return StateSpan(start, end, state, reason, product)


async def read_spans(
    conn: Conn,
    site: str,
    machines: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime,
    stops: Iterable[Any] = (),
) -> dict[str, list[StateSpan]]:
    """Each machine's spans meeting [start, end), and before them the whole stop going on
    at `start` (a stop's length and reason come from all of it).

    `stops` are the state codes that are not production (a span of one of them at `start`
    is followed back to where its state began).
    """
    params = {"site": site, "machines": list(machines), "start": start, "end": end}
    rows = await (await conn.execute(_SPANS, params)).fetchall()
    found: dict[str, list[Row]] = defaultdict(list)
    for machine, *row in rows:
        found[machine].append((row[0], row[1], row[2], row[3], row[4]))
    stopping = {_key(code) for code in stops}
    out: dict[str, list[StateSpan]] = {}
    for machine in machines:
        spans = found.get(machine, [])
        if spans and spans[0][0] < start and _key(spans[0][2]) in stopping:
            spans = await _whole_stop(conn, site, machine, spans) + spans
        out[machine] = [_span(row, now) for row in spans]
    return out


async def _whole_stop(conn: Conn, site: str, machine: str, spans: list[Row]) -> list[Row]:
    """The touching spans of the same state before spans[0], oldest first."""
    first = spans[0]
    earlier: list[Row] = []
    while True:
        rows = await (
            await conn.execute(_EARLIER, (site, machine, first[0], _WALK_BACK))
        ).fetchall()
        for row in rows:
            if row[1] != first[0] or _key(row[2]) != _key(first[2]):
                return earlier[::-1]
            earlier.append((row[0], row[1], row[2], row[3], row[4]))
            first = earlier[-1]
        if len(rows) < _WALK_BACK:
            return earlier[::-1]


def _key(code: Any) -> tuple[str, Any]:
    return code_key(code)


async def read_counts(
    conn: Conn, site: str, machines: Sequence[str], edges: Sequence[datetime]
) -> dict[str, list[CountMinute]]:
    """Each machine's counts in [edges[0], edges[-1]), summed per segment between edges and
    per product; a segment's sum is placed at its start."""
    params = {
        "site": site,
        "machines": list(machines),
        "edges": list(edges),
        "start": edges[0],
        "end": edges[-1],
    }
    rows = await (await conn.execute(_COUNTS, params)).fetchall()
    out: dict[str, list[CountMinute]] = {machine: [] for machine in machines}
    for machine, segment, product, good, scrap in rows:
        out[machine].append(CountMinute(edges[segment - 1], product, good, scrap))
    return out


async def read_reclassifications(
    conn: Conn, site: str, machines: Sequence[str], start: datetime, end: datetime
) -> dict[str, dict[datetime, Reclassification]]:
    """The newest reclassification of each stop starting in [start, end), per machine."""
    params = {"site": site, "machines": list(machines), "start": start, "end": end}
    rows = await (await conn.execute(_RECLASSIFIED, params)).fetchall()
    out: dict[str, dict[datetime, Reclassification]] = {machine: {} for machine in machines}
    for machine, at, reason, actor, actor_name, when, note in rows:
        out[machine][at] = Reclassification(reason, actor, actor_name, when, note)
    return out


def edges_of(
    start: datetime, end: datetime, *spans: Iterable[tuple[datetime, datetime]]
) -> list[datetime]:
    """Sorted distinct boundaries: start, end and every span edge strictly between them."""
    inside = {
        moment for pairs in spans for pair in pairs for moment in pair if start < moment < end
    }
    return [start, *sorted(inside), end]
