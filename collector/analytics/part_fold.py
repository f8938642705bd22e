"""Merges rollup parts into `rollups_1m`, exactly, or says which minutes to redo from readings.

Parts of one tag version and minute merge with each other and with the stored row exactly
when the spans of their readings do not overlap (collector/analytics/summary_sql.py,
merged_summaries): the usual case, readings arriving in time order. Where spans overlap (a
late reading inside a minute already summarised, or readings a summary of the stored
readings already counts), the minute is redone from the stored readings instead, which is
right whatever the parts hold. Runs inside a deriver pass.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from collector.analytics.rollups import Span, refresh_hours
from collector.analytics.summary_sql import ROLLUP_TIMES, SUMMARY_COLUMNS, merged_summaries
from collector.analytics.timespans import MINUTE
from collector.replica import Connection

_COLUMNS = f"{SUMMARY_COLUMNS}, {ROLLUP_TIMES}"
_SOURCE_TEMPLATE = """(
    SELECT tag_id, bucket, {columns} FROM rollup_parts WHERE id = ANY(%(parts)s)
    UNION ALL
    SELECT tag_id, bucket, {columns}
    FROM unnest(%(tags)s::int4[], %(buckets)s::timestamptz[]) AS k(tag_id, bucket)
    JOIN rollups_1m USING (tag_id, bucket)
) AS s"""
_SOURCE = _SOURCE_TEMPLATE.format(columns=_COLUMNS)
_UPDATE = ", ".join(
    f"{column} = excluded.{column}" for column in (c.strip() for c in _COLUMNS.split(","))
)
_MERGE_TEMPLATE = """INSERT INTO rollups_1m (tag_id, bucket, {columns})
{query}
ON CONFLICT (tag_id, bucket) DO UPDATE SET {update}"""
_MERGE = _MERGE_TEMPLATE.format(
    columns=_COLUMNS, query=merged_summaries(_SOURCE, "bucket", tag="tag_id"), update=_UPDATE
)
_STORED = """
SELECT tag_id, bucket, span_lo, span_hi
FROM unnest(%s::int4[], %s::timestamptz[]) AS k(tag_id, bucket)
JOIN rollups_1m USING (tag_id, bucket)
"""

Key = tuple[int, datetime]
"""(tag version, minute)."""


@dataclass(slots=True)
class Folded:
    """What one fold did."""

    parts: int = 0
    merged: list[Span] = field(default_factory=list)
    """Minutes merged from parts (their hours are redone already)."""
    redo: list[tuple[list[int], datetime, datetime]] = field(default_factory=list)
    """Minutes whose parts overlap: to be redone from the stored readings."""


def _overlaps(spans: list[tuple[datetime | None, datetime | None]]) -> bool:
    """Whether any two spans share a moment (a span not known counts as overlapping)."""
    known = [(lo, hi) for lo, hi in spans if lo is not None and hi is not None]
    if len(known) < len(spans):
        return True
    known.sort()
    return any(known[i][0] <= known[i - 1][1] for i in range(1, len(known)))


async def fold_parts(conn: Connection, limit: int) -> Folded:
    """Within the caller's transaction: merge up to `limit` parts (oldest first) into
    rollups_1m and their hours, and delete them."""
    rows = await (
        await conn.execute(
            "SELECT id, tag_id, bucket, span_lo, span_hi FROM rollup_parts ORDER BY id LIMIT %s",
            [limit],
        )
    ).fetchall()
    if not rows:
        return Folded()
    spans: dict[Key, list[tuple[datetime | None, datetime | None]]] = defaultdict(list)
    ids: dict[Key, list[int]] = defaultdict(list)
    for part, tag, bucket, lo, hi in rows:
        spans[(tag, bucket)].append((lo, hi))
        ids[(tag, bucket)].append(part)
    keys = list(spans)
    stored = await conn.execute(
        _STORED, [[tag for tag, _ in keys], [bucket for _, bucket in keys]], binary=True
    )
    for tag, bucket, lo, hi in await stored.fetchall():
        spans[(tag, bucket)].append((lo, hi))
    out = Folded(parts=len(rows))
    merging: list[Key] = []
    for key in keys:
        if _overlaps(spans[key]):
            out.redo.append(([key[0]], key[1], key[1] + MINUTE))
        else:
            merging.append(key)
    if merging:
        await conn.execute(
            _MERGE,
            {
                "parts": [part for key in merging for part in ids[key]],
                "tags": [tag for tag, _ in merging],
                "buckets": [bucket for _, bucket in merging],
            },
        )
        out.merged = [(tag, bucket, bucket + MINUTE) for tag, bucket in merging]
        await refresh_hours(conn, out.merged)
    await conn.execute("DELETE FROM rollup_parts WHERE id = ANY(%s)", [[row[0] for row in rows]])
    return out
