"""Machines' stored spans, counts and reclassifications, read for a window of time.

Every answer is computed from the stored intervals and counts clipped to its window, so it
never depends on how it was asked. Counts are summed in the database per segment of time
between consecutive boundaries the caller names (group edges, planned-time edges): within a
segment nothing the KPIs look at changes, so the sums are as exact as the minutes.
"""

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
# bounded by the (site, machine, start_ts) key, however long the machine's history. The codes
# come as JSON text: a machine has few distinct codes, each decoded once (_Codes).
_SPANS = """
SELECT m.machine, s.start_ts, s.end_ts, s.state::text, s.reason::text, s.product
FROM unnest(%(machines)s::text[]) AS m (machine)
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


class _Codes(dict[str | None, Any]):
    """Codes decoded from their JSON text, each distinct text once."""

    def __missing__(self, text: str | None) -> Any:
        code = None if text is None else json.loads(text)
        self[text] = code
        return code


class TooMuchHistory(ValueError):
    """The window holds more of the machines' history than one report reads."""


@asynccontextmanager
async def snapshot(conn: Conn) -> AsyncIterator[None]:
    """A read-only transaction that sees the database as of its first query, so a report never
    mixes what a deriver pass wrote with what it replaced."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


@dataclass(frozen=True, slots=True)
class SpansAndCounts:
    """Machines' spans and counts over a window."""

    spans: dict[str, list[StateSpan]]
    """Each machine's spans meeting the window, with all of a stop going on at its start or
    its end (a stop's length and reason come from all of it, whatever the window)."""
    counts: dict[str, list[CountMinute]]
    """Each machine's counts in the window, summed per segment between the edges and per
    product; a segment's sum is placed at its start."""


async def read_spans_and_counts(
    conn: Conn,
    site: str,
    machines: Sequence[str],
    edges: Sequence[datetime],
    now: datetime,
    stops: Iterable[Any] = (),
) -> SpansAndCounts:
    """Each machine's spans and counts in [edges[0], edges[-1]); `edges` are the sorted
    boundaries the counts are summed between, and `stops` the state codes that are not
    production."""
    start, end = edges[0], edges[-1]
    params = {"site": site, "machines": list(machines), "start": start, "end": end}
    counted = await (await conn.execute(_COUNT_SPANS, params)).fetchone()
    if counted is not None and counted[0] > MAX_SPANS:
        raise TooMuchHistory(f"{counted[0]} state spans in the window; at most {MAX_SPANS}")
    async with conn.pipeline() as pipeline:
        # Binary: timestamps load faster than from their text.
        spans = await conn.execute(_SPANS, params, binary=True)
        await pipeline.sync()  # the spans' rows are here; then the counts are asked for ...
        counts = await conn.execute(_COUNTS, {**params, "edges": list(edges)})
        # ... and the server sums them while the spans are decoded.
        found = await _spans(conn, site, machines, (start, end), now, stops, await spans.fetchall())
        out: dict[str, list[CountMinute]] = {machine: [] for machine in machines}
        for machine, segment, product, good, scrap in await counts.fetchall():
            out[machine].append(CountMinute(edges[segment - 1], product, good, scrap))
    return SpansAndCounts(found, out)


async def _spans(
    conn: Conn,
    site: str,
    machines: Sequence[str],
    window: tuple[datetime, datetime],
    now: datetime,
    stops: Iterable[Any],
    rows: list[TupleRow],
) -> dict[str, list[StateSpan]]:
    """The rows of _SPANS as each machine's spans, with all of a stop going on at the
    window's start or its end."""
    start, end = window
    out: dict[str, list[StateSpan]] = {machine: [] for machine in machines}
    codes = _Codes()
    # Every row is decoded before any further query (which would wait for the counts).
    for machine, start_ts, end_ts, state, reason, product in rows:
        out[machine].append(_span((start_ts, end_ts, codes[state], codes[reason], product), now))
    stopping = {code_key(code) for code in stops}
    for machine, spans in out.items():
        if spans and spans[0].start < start and code_key(spans[0].state) in stopping:
            edge = _row(spans[0])
            before = await _same_stop(conn, site, machine, edge, later=False)
            spans[:0] = [_span(row, now) for row in before]
        last = spans[-1] if spans else None
        if (
            last is not None
            and not last.open
            and last.end >= end
            and code_key(last.state) in stopping
        ):
            after = await _same_stop(conn, site, machine, _row(last), later=True)
            spans.extend(_span(row, now) for row in after)
    return out


def _span(row: Row, now: datetime) -> StateSpan:
    start, end, state, reason, product = row
    if end is None:  # still going on: it is known up to now
        return StateSpan(start, max(now, start), state, reason, product, open=True)
    return StateSpan(start, end, state, reason, product)


def _row(span: StateSpan) -> Row:
    return span.start, None if span.open else span.end, span.state, span.reason, span.product


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
