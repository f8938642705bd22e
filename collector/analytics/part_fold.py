"""Merges rollup parts into `rollups_1m`, exactly, or says which minutes to redo from readings.

Parts of one tag version and minute merge with each other and with the stored row exactly
when the spans of their readings do not overlap (collector/analytics/summary_sql.py,
merged_summaries): the usual case, readings arriving in time order. Where spans overlap (a
late reading inside a minute already summarised, or readings a summary of the stored
readings already counts), the minute is redone from the stored readings instead, which is
right whatever the parts hold. Runs inside a deriver pass.
"""

from dataclasses import dataclass, field
from datetime import datetime

from collector.analytics.rollups import Span, refresh_hours
from collector.analytics.summary_sql import ROLLUP_TIMES, SUMMARY_COLUMNS, merged_summaries
from collector.analytics.timespans import MINUTE
from collector.replica import Connection

_COLUMNS = f"{SUMMARY_COLUMNS}, {ROLLUP_TIMES}"
_UPDATE = ", ".join(
    f"{column} = excluded.{column}" for column in (c.strip() for c in _COLUMNS.split(","))
)
# One statement, so one snapshot: the parts it takes are the parts it merges and deletes.
_FOLD_TEMPLATE = """
WITH taken AS (
    DELETE FROM rollup_parts
    WHERE id IN (SELECT id FROM rollup_parts ORDER BY id LIMIT %(limit)s)
    RETURNING tag_id, bucket, {columns}
), stored AS (
    SELECT tag_id, bucket, {columns} FROM rollups_1m
    WHERE (tag_id, bucket) IN (SELECT tag_id, bucket FROM taken)
), found AS (
    SELECT * FROM taken UNION ALL SELECT * FROM stored
), flagged AS (
    SELECT tag_id, bucket,
        bool_or(span_lo IS NULL OR span_hi IS NULL OR coalesce(span_lo <= before, false))
            AS overlapping
    FROM (
        SELECT tag_id, bucket, span_lo, span_hi,
            lag(span_hi) OVER (PARTITION BY tag_id, bucket ORDER BY span_lo, span_hi) AS before
        FROM found
    ) AS spans
    GROUP BY tag_id, bucket
), merging AS (
    SELECT found.* FROM found JOIN flagged USING (tag_id, bucket) WHERE NOT flagged.overlapping
), merged AS (
    INSERT INTO rollups_1m (tag_id, bucket, {columns})
    {query}
    ON CONFLICT (tag_id, bucket) DO UPDATE SET {update}
)
SELECT tag_id, min(bucket), max(bucket), array_agg(bucket) FILTER (WHERE overlapping),
    (SELECT count(*) FROM taken)
FROM flagged GROUP BY tag_id
"""
_FOLD = _FOLD_TEMPLATE.format(
    columns=_COLUMNS,
    query=merged_summaries("merging", "bucket", tag="tag_id"),
    update=_UPDATE,
)


@dataclass(slots=True)
class Folded:
    """What one fold did."""

    parts: int = 0
    merged: list[Span] = field(default_factory=list)
    """Per tag version, the first and last minute it took parts of (their hours are redone)."""
    redo: list[tuple[list[int], datetime, datetime]] = field(default_factory=list)
    """Minutes whose parts overlap: to be redone from the stored readings."""


async def fold_parts(conn: Connection, limit: int) -> Folded:
    """Within the caller's transaction: merge up to `limit` parts (oldest first) into
    rollups_1m, delete them, and redo the hours they touched."""
    rows = await (await conn.execute(_FOLD, {"limit": limit}, binary=True)).fetchall()
    out = Folded()
    for tag, first, last, overlapping, parts in rows:
        out.parts = parts
        out.merged.append((tag, first, last + MINUTE))
        out.redo.extend(([tag], minute, minute + MINUTE) for minute in overlapping or ())
    if out.merged:
        await refresh_hours(conn, out.merged)
    return out
