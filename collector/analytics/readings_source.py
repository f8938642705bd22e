"""Bucket summaries computed by PostgreSQL from the raw readings table.

Each summary is one GROUP BY bucket over the readings of [start, end); window functions pair
each reading with the next one in its bucket for the time-weighted areas and the counter
increase (collector/analytics/summary_sql.py). The rollup tables answer the same `summaries`
call for long ranges without reading raw rows (collector/analytics/rollup_source.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from psycopg.rows import TupleRow

from collector.analytics.buckets import Interval, bucket_key_sql, fixed_origin
from collector.analytics.series import Point, SourceData, Summary
from collector.analytics.summary_sql import NUMBER, TEXT, readings_summaries
from collector.replica import Connection, ReadPools

_RANGE = "readings WHERE tag_id = ANY(%(ids)s) AND ts >= %(start)s AND ts < %(end)s"
# One index probe per tag version: ORDER BY ts over `tag_id = ANY(...)` would scan them all.
_EDGE = """
SELECT e.ts, e.v FROM unnest(%(ids)s::int4[]) AS t(id), LATERAL (
    SELECT ts, seq, {value} AS v FROM readings
    WHERE tag_id = t.id AND ts {side} %(at)s AND {value} IS NOT NULL
    ORDER BY ts {order}, seq {order} LIMIT 1
) AS e ORDER BY e.ts {order}, e.seq {order} LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """What a source is asked: which tag versions, which range, bucketed how."""

    tag_ids: Sequence[int]
    text: bool
    interval: Interval
    zone: ZoneInfo
    start: datetime
    end: datetime
    before: bool = False
    """Also the last reading with a value before `start`."""
    after: bool = False
    """Also the first reading with a value at or after `end`."""


def bucket_params(request: SeriesRequest) -> dict[str, Any]:
    """The query parameters of a request's range and buckets (`bucket_key_sql`'s among them)."""
    return {
        "ids": list(request.tag_ids),
        "start": request.start,
        "end": request.end,
        "stride": request.interval.length,
        "origin": fixed_origin(request.zone),
        "zone": request.zone.key,
    }


class ReadingsSource:
    """Summaries straight from the readings table, on the API's read pools."""

    name: Final = "readings"

    def __init__(self, reads: ReadPools) -> None:
        self._reads = reads

    async def summaries(self, request: SeriesRequest) -> SourceData:
        """One summary per bucket holding readings, and the readings around the range."""

        async def work(conn: Connection) -> SourceData:
            found = await read_summaries(conn, request)
            return SourceData(found, *await read_edges(conn, request))

        return await self._reads.run(work)


async def read_summaries(conn: Connection, request: SeriesRequest) -> list[Summary]:
    """On `conn`: one summary per bucket of the request's range that holds readings."""
    sql = readings_summaries(
        _RANGE,
        bucket_key_sql(request.interval),
        TEXT if request.text else NUMBER,
        numbers=not request.text,
    )
    rows = await (await conn.execute(sql, bucket_params(request), binary=True)).fetchall()
    return [summary_of(row) for row in rows]


async def read_edges(conn: Connection, request: SeriesRequest) -> tuple[Point | None, Point | None]:
    """On `conn`: the readings just before and after the range, those the request asks for."""
    value = TEXT if request.text else NUMBER
    before = after = None
    if request.before:
        before = await _edge(conn, value, request.tag_ids, request.start, "<", "DESC")
    if request.after:
        after = await _edge(conn, value, request.tag_ids, request.end, ">=", "ASC")
    return before, after


async def _edge(
    conn: Connection, value: str, ids: Sequence[int], at: datetime, side: str, order: str
) -> Point | None:
    sql = _EDGE.format(value=value, side=side, order=order)
    row = await (await conn.execute(sql, {"ids": list(ids), "at": at})).fetchone()
    return None if row is None else Point(row[0], row[1])


def summary_of(row: TupleRow) -> Summary:
    """A summary from a row of the queries of summary_sql.py (text: the first 8 columns)."""
    first = Point(row[4], row[5]) if row[3] else None
    last = Point(row[6], row[7]) if row[3] else None
    return Summary(row[0], row[1], row[2], row[3], first, last, *row[8:])
