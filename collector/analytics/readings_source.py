"""Bucket summaries computed by PostgreSQL from the raw readings table.

Each summary is one GROUP BY bucket over the readings of [start, end); window functions pair
each reading with the next one in its bucket for the time-weighted areas and the counter
increase. A rollup table kept per minute or hour can answer the same `summaries` call for long
ranges without reading raw rows (not built yet: every series reads raw readings today).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from psycopg.rows import TupleRow

from collector.analytics.buckets import Interval, bucket_key_sql, fixed_origin
from collector.analytics.series import Point, SourceData, Summary
from collector.replica import Connection, ReadPools

NUMBER = "CASE WHEN abs(coalesce(value, value_text::float8)) < 1e300"
NUMBER += " THEN coalesce(value, value_text::float8) END"
"""A reading's value as a number: NULL without one, or beyond ±1e300 (a PLC's "no value"
sentinel such as the largest double), whose sums and time-weighted areas would overflow."""
TEXT = "value_text"
"""A string tag's value."""

_SUMMARIES = """
WITH r AS (
    SELECT {key} AS k, ts, seq, quality, {value} AS v FROM readings
    WHERE tag_id = ANY(%(ids)s) AND ts >= %(start)s AND ts < %(end)s
), w AS (
    SELECT k, ts, quality, v, lead(ts) OVER o AS nts, {windows}
        first_value(v) OVER f AS fv, last_value(v) OVER f AS lv
    FROM r
    WINDOW o AS (PARTITION BY k, v IS NULL ORDER BY ts, seq),
        f AS (o ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT k, count(*), count(*) FILTER (WHERE quality = 0), count(v),
    min(ts) FILTER (WHERE v IS NOT NULL), max(fv), max(ts) FILTER (WHERE v IS NOT NULL), max(lv)
    {numbers}
FROM w GROUP BY k ORDER BY k
"""
_NUMBER_WINDOWS = "lead(v) OVER o AS nv, lag(v) OVER o AS pv,"
_NUMBER_COLUMNS = """,
    sum(v), min(v), max(v),
    coalesce(sum(v * extract(epoch FROM nts - ts)::float8), 0),
    coalesce(sum((v + nv) / 2 * extract(epoch FROM nts - ts)::float8), 0),
    coalesce(sum(CASE WHEN v >= pv THEN v - pv ELSE v END) FILTER (WHERE pv IS NOT NULL), 0)"""
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


class ReadingsSource:
    """Summaries straight from the readings table, on the API's read pools."""

    name: Final = "readings"

    def __init__(self, reads: ReadPools) -> None:
        self._reads = reads

    async def summaries(self, request: SeriesRequest) -> SourceData:
        """One summary per bucket holding readings, and the readings around the range."""
        value = TEXT if request.text else NUMBER
        sql = _SUMMARIES.format(
            key=bucket_key_sql(request.interval),
            value=value,
            windows="" if request.text else _NUMBER_WINDOWS,
            numbers="" if request.text else _NUMBER_COLUMNS,
        )
        params: dict[str, Any] = {
            "ids": list(request.tag_ids),
            "start": request.start,
            "end": request.end,
            "stride": request.interval.length,
            "origin": fixed_origin(request.zone),
            "zone": request.zone.key,
        }

        async def work(conn: Connection) -> SourceData:
            rows = await (await conn.execute(sql, params, binary=True)).fetchall()
            before = after = None
            if request.before:
                before = await _edge(conn, value, request.tag_ids, request.start, "<", "DESC")
            if request.after:
                after = await _edge(conn, value, request.tag_ids, request.end, ">=", "ASC")
            return SourceData([_summary(row) for row in rows], before, after)

        return await self._reads.run(work)


async def _edge(
    conn: Connection, value: str, ids: Sequence[int], at: datetime, side: str, order: str
) -> Point | None:
    sql = _EDGE.format(value=value, side=side, order=order)
    row = await (await conn.execute(sql, {"ids": list(ids), "at": at})).fetchone()
    return None if row is None else Point(row[0], row[1])


def _summary(row: TupleRow) -> Summary:
    first = Point(row[4], row[5]) if row[3] else None
    last = Point(row[6], row[7]) if row[3] else None
    if len(row) == 8:
        return Summary(row[0], row[1], row[2], row[3], first, last)
    return Summary(
        row[0],
        row[1],
        row[2],
        row[3],
        first,
        last,
        total=row[8],
        low=row[9],
        high=row[10],
        step_area=row[11],
        linear_area=row[12],
        increase=row[13],
    )
