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
MAX_SPANS = 500_000
"""The most spans one report reads (a machine changing state every second over months would
otherwise hold the server for minutes)."""
_COUNT_SPANS = """
SELECT count(*) FROM machine_intervals
WHERE site = %(site)s AND machine = ANY(%(machines)s) AND start_ts >= %(start)s
    AND start_ts < %(end)s
"""
_WALK = 200
"""Spans read per step while following a stop going on at a window's start or end."""

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
_LATER = """
SELECT start_ts, end_ts, state, reason, product FROM machine_intervals
WHERE site = %s AND machine = %s AND start_ts >= %s ORDER BY start_ts LIMIT %s
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


class TooMuchHistory(ValueError):
    """The window holds more of the machines' history than one report reads."""


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
    window: tuple[datetime, datetime],
    now: datetime,
    stops: Iterable[Any] = (),
) -> dict[str, list[StateSpan]]:
    """Each machine's spans meeting the window, with all of a stop going on at its start or
    its end (a stop's length and reason come from all of it, whatever the window).

    `stops` are the state codes that are not production.
    """
    start, end = window
    params = {"site": site, "machines": list(machines), "start": start, "end": end}
    counted = await (await conn.execute(_COUNT_SPANS, params)).fetchone()
    if counted is not None and counted[0] > MAX_SPANS:
        raise TooMuchHistory(f"{counted[0]} state spans in the window; at most {MAX_SPANS}")
    rows = await (await conn.execute(_SPANS, params)).fetchall()
    found: dict[str, list[Row]] = defaultdict(list)
    for machine, *row in rows:
        found[machine].append((row[0], row[1], row[2], row[3], row[4]))
    stopping = {code_key(code) for code in stops}
    out: dict[str, list[StateSpan]] = {}
    for machine in machines:
        spans = found.get(machine, [])
        if spans and spans[0][0] < start and code_key(spans[0][2]) in stopping:
            spans = await _same_stop(conn, site, machine, spans[0], later=False) + spans
        last_end = spans[-1][1] if spans else None
        if last_end is not None and last_end >= end and code_key(spans[-1][2]) in stopping:
            spans = spans + await _same_stop(conn, site, machine, spans[-1], later=True)
        out[machine] = [_span(row, now) for row in spans]
    return out


async def _same_stop(conn: Conn, site: str, machine: str, edge: Row, later: bool) -> list[Row]:
    """The spans touching `edge` one after the other, in its state, before it or after it (as
    far as they go), in time order."""
    found: list[Row] = []
    query, at = (_LATER, edge[1]) if later else (_EARLIER, edge[0])
    while True:
        rows = await (await conn.execute(query, (site, machine, at, _WALK))).fetchall()
        for row in rows:
            touching = row[0] == edge[1] if later else row[1] == edge[0]
            if not touching or code_key(row[2]) != code_key(edge[2]):
                return found if later else found[::-1]
            edge = (row[0], row[1], row[2], row[3], row[4])
            found.append(edge)
        if len(rows) < _WALK:
            return found if later else found[::-1]
        at = edge[1] if later else edge[0]


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
