"""Per-minute and per-hour rollups of numeric tag versions, recomputed from the readings.

`refresh_rollups` redoes the minutes a write touched from their readings, then the hours
holding them from their minutes, each level in one set-based statement: the deriver
(collector/analytics/deriver.py) calls it with ended minutes only, so each reading is read
once per write that touched its minute. A late write therefore corrects exactly the minutes
and hours it falls in.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from collector.analytics.summary_sql import (
    NUMBER,
    ROLLUP_TIMES,
    SUMMARY_COLUMNS,
    merged_summaries,
    readings_summaries,
)
from collector.analytics.timespans import HOUR, MINUTE, floor_to, joined, on_grain
from collector.replica import Connection

Span = tuple[int, datetime, datetime]
"""A tag version and a range [start, end) of its rollups."""

# Times travel as microseconds since the Unix epoch: thousands of them dump far faster as
# integers than as datetimes.
_WORK = """(
    SELECT id, timestamptz 'epoch' + l * interval '1 microsecond' AS lo,
        timestamptz 'epoch' + h * interval '1 microsecond' AS hi
    FROM unnest(%(ids)s::int4[], %(los)s::int8[], %(his)s::int8[]) AS u(id, l, h)
) AS w"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NUMERIC_READINGS = """{work}
    JOIN tags ON tags.tag_id = w.id AND tags.data_type <> 'string'
    CROSS JOIN LATERAL (
        SELECT ts, seq, quality, value, value_text FROM readings
        WHERE readings.tag_id = w.id AND readings.ts >= w.lo AND readings.ts < w.hi
        OFFSET 0  -- keeps this a scan of each tag's index (pulled up, it can become a seq scan)
    ) AS x"""
_MINUTE_ROWS = "{work} JOIN rollups_1m ON rollups_1m.tag_id = w.id"
_MINUTE_ROWS += " AND rollups_1m.bucket >= w.lo AND rollups_1m.bucket < w.hi"
_INSERT = "INSERT INTO {table} (tag_id, bucket, {columns}, {times}) {query}"
_MINUTES = _INSERT.format(
    table="rollups_1m",
    columns=SUMMARY_COLUMNS,
    times=ROLLUP_TIMES,
    query=readings_summaries(
        _NUMERIC_READINGS.format(work=_WORK), "date_trunc('minute', ts, 'UTC')", NUMBER, tag="w.id"
    ),
)
_HOURS = _INSERT.format(
    table="rollups_1h",
    columns=SUMMARY_COLUMNS,
    times=ROLLUP_TIMES,
    query=merged_summaries(
        _MINUTE_ROWS.format(work=_WORK), "date_trunc('hour', bucket, 'UTC')", tag="w.id"
    ),
)
_CLEAR = "DELETE FROM {table} AS r USING {work}"
_CLEAR += " WHERE r.tag_id = w.id AND r.bucket >= w.lo AND r.bucket < w.hi"


def _spans(work: Iterable[tuple[Sequence[int], datetime, datetime]]) -> list[Span]:
    """Each tag's ranges with overlapping or touching ones joined, so no row is read twice."""
    ranges: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for tags, start, end in work:
        for tag in tags:
            ranges[tag].append((start, end))
    out: list[Span] = []
    for tag, found in sorted(ranges.items()):
        out.extend((tag, start, end) for start, end in joined(found))
    return out


def _params(spans: Sequence[Span]) -> dict[str, list[int]]:
    return {
        "ids": [span[0] for span in spans],
        "los": [(span[1] - _EPOCH) // _MICROSECOND for span in spans],
        "his": [(span[2] - _EPOCH) // _MICROSECOND for span in spans],
    }


async def refresh_rollups(
    conn: Connection, work: Sequence[tuple[Sequence[int], datetime, datetime]]
) -> int:
    """Within the caller's transaction: redo the rollups of these tag versions and ranges.

    Each range [start, end) is of whole minutes (UTC); the minutes in it are recomputed from
    the readings (those that hold none lose their row), then every hour touching it from its
    minutes. Text tag versions have no rollups. Returns the rows written.
    """
    for _, start, end in work:
        if not (start < end and on_grain(start, MINUTE) and on_grain(end, MINUTE)):
            raise ValueError(f"rollups are redone for whole minutes, not [{start}, {end})")
    minutes = _spans(work)
    await conn.execute(_CLEAR.format(table="rollups_1m", work=_WORK), _params(minutes))
    written = (await conn.execute(_MINUTES, _params(minutes))).rowcount
    return written + await refresh_hours(conn, minutes)


async def refresh_hours(conn: Connection, minutes: Sequence[Span]) -> int:
    """Within the caller's transaction: redo from their minutes the hours holding these
    tag versions' minute ranges; returns the rows written."""
    hours = _spans(
        ([tag], floor_to(start, HOUR), floor_to(end - MINUTE, HOUR) + HOUR)
        for tag, start, end in minutes
    )
    await conn.execute(_CLEAR.format(table="rollups_1h", work=_WORK), _params(hours))
    return (await conn.execute(_HOURS, _params(hours))).rowcount
