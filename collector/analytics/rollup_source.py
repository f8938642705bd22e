"""Bucket summaries from the per-hour or per-minute rollups, exact even while they lag.

A request whose bucket edges and ends all lie on whole hours (UTC) is answered from
`rollups_1h`, else on whole minutes from `rollups_1m`: every rollup row then lies inside one
bucket, and the rows of a bucket merge into the summary its readings would give
(collector/analytics/summary_sql.py). Writes not rolled up yet are still in `derive_log` or
`rollup_claims` (held by a collector until their minutes end): the buckets from the earliest
of them on are read from the raw readings, in the same snapshot, so an answer never misses a
reading. Anything else goes to the raw readings.
"""

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

from collector.analytics.buckets import boundaries, bucket_key_sql, fixed_origin
from collector.analytics.readings_source import (
    ReadingsSource,
    SeriesRequest,
    bucket_params,
    read_edges,
    read_summaries,
    summary_of,
)
from collector.analytics.series import SourceData, SourceName, Summary
from collector.analytics.summary_sql import merged_summaries, rollup_summaries
from collector.analytics.timespans import HOUR, MINUTE, on_grain
from collector.replica import Connection, ReadPools
from shared.invariants import required

_GRAINS: Final[dict[SourceName, timedelta]] = {"rollups_1h": HOUR, "rollups_1m": MINUTE}
_MOST_EDGES = 1_000_000  # calendar buckets of a range the API allows are far fewer
_PENDING = """SELECT least(
    (SELECT min(lo) FROM derive_log WHERE rollups AND tag_ids && %(ids)s::int4[]),
    (SELECT min(c.lo) FROM rollup_claims c JOIN tags t ON t.agent_id = c.agent_id
        WHERE t.tag_id = ANY(%(ids)s))
)"""


def rollup_table(request: SeriesRequest) -> SourceName | None:
    """The coarsest rollup table whose rows each lie in one bucket of the request, if any."""
    if request.text:
        return None
    for table, grain in _GRAINS.items():
        if on_grain(request.start, grain) and on_grain(request.end, grain):
            length = request.interval.length
            if length is not None:
                # Fixed buckets start at origin + k x length: all on the grain, or some not.
                origin = fixed_origin(request.zone)
                if on_grain(origin, grain) and not length % grain:
                    return table
                continue
            edges = boundaries(
                request.interval, request.zone, request.start, request.end, _MOST_EDGES
            )
            if all(on_grain(edge, grain) for edge in edges[1:-1]):
                return table
    return None


class RollupSource:
    """Summaries from the rollups where a request allows, on the API's read pools."""

    def __init__(self, reads: ReadPools) -> None:
        self._reads = reads

    async def summaries(self, request: SeriesRequest) -> SourceData:
        """One summary per bucket holding readings, and the readings around the range."""
        table = rollup_table(request)
        if table is None:
            return await ReadingsSource(self._reads).summaries(request)
        found = table

        async def work(conn: Connection) -> SourceData:
            async with conn.transaction():
                # Rollups, the write log and raw readings seen as of one moment; times come
                # back in datetime.UTC, which compares with the bucket edges ten times faster
                # than a ZoneInfo (every query here names its zones).
                await conn.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SET LOCAL TIME ZONE 'UTC'"
                )
                split = await _derived_until(conn, request)
                head: list[Summary] = []
                if split > request.start:
                    head = await _read_rollups(conn, found, replace(request, end=split))
                tail: list[Summary] = []
                if split < request.end:
                    tail = await read_summaries(conn, replace(request, start=split))
                before, after = await read_edges(conn, request)
            source = found if split > request.start else ReadingsSource.name
            return SourceData(head + tail, before, after, source)

        return await self._reads.run(work)


async def _derived_until(conn: Connection, request: SeriesRequest) -> datetime:
    """The start of the request's first bucket holding a write not rolled up yet (or its end)."""
    row = await (await conn.execute(_PENDING, {"ids": list(request.tag_ids)})).fetchone()
    pending: datetime | None = required(row, "min(lo) of the write log")[0]
    if pending is None or pending >= request.end:
        return request.end
    if pending <= request.start:
        return request.start
    first = boundaries(
        request.interval, request.zone, pending, pending + timedelta(microseconds=1), 1
    )[0]
    return max(first, request.start)


async def _read_rollups(
    conn: Connection, table: SourceName, request: SeriesRequest
) -> list[Summary]:
    kept = f"{table} WHERE tag_id = ANY(%(ids)s) AND bucket >= %(start)s AND bucket < %(end)s"
    if len(request.tag_ids) == 1 and request.interval.length == _GRAINS[table]:
        sql = rollup_summaries(kept)  # a bucket per row: nothing to merge
    else:
        sql = merged_summaries(kept, bucket_key_sql(request.interval, "bucket"))
    rows = await (await conn.execute(sql, bucket_params(request), binary=True)).fetchall()
    return [summary_of(row) for row in rows]
