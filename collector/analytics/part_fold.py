"""Merges new rollup summaries into `rollups_1m` and `rollups_1h`, exactly, or says what to redo.

Summaries of one tag version and bucket (minute or hour) merge with each other and with the
stored row exactly when the spans of their readings do not overlap
(collector/analytics/summary_sql.py, merged_summaries): the usual case, readings arriving in
time order. Where spans overlap (a late reading inside a minute already summarised, or
readings that a summary of the stored readings already counts), the minute is redone from the
stored readings, or the hour from its minutes, instead: right whatever the summaries hold.
A minute that overlaps lies in an hour that overlaps, so redoing a minute redoes its hour.
"""

from dataclasses import dataclass, field
from datetime import datetime

from collector.analytics.rollups import Span
from collector.analytics.summary_sql import ROLLUP_TIMES, SUMMARY_COLUMNS, merged_summaries
from collector.analytics.timespans import HOUR, MINUTE
from collector.replica import Connection

_COLUMNS = f"{SUMMARY_COLUMNS}, {ROLLUP_TIMES}"
_UPDATE = ", ".join(
    f"{column} = excluded.{column}" for column in (c.strip() for c in _COLUMNS.split(","))
)
NEW_PARTS = "new_rollup_parts"
"""The session's temporary table the new summaries are copied into (emptied at commit)."""
CREATE_NEW_PARTS = f"""
CREATE TEMP TABLE IF NOT EXISTS {NEW_PARTS} (
    tag_id int4 NOT NULL, bucket timestamptz NOT NULL, count int4 NOT NULL, good int4 NOT NULL,
    numbers int4 NOT NULL, first_ts timestamptz, first_value float8, last_ts timestamptz,
    last_value float8, total float8, low float8, low_ts timestamptz, high float8,
    high_ts timestamptz, step_area float8 NOT NULL, linear_area float8 NOT NULL,
    increase float8 NOT NULL, span_lo timestamptz NOT NULL, span_hi timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""
PART_COLUMNS = f"tag_id, bucket, {_COLUMNS}"
"""The columns of NEW_PARTS, in the order the summaries are copied."""

# Per (tag version, bucket): do the new summaries and the stored row overlap?
_FLAGGED = """
    SELECT tag_id, bucket,
        bool_or(span_lo IS NULL OR span_hi IS NULL OR coalesce(span_lo <= before, false))
            AS overlapping
    FROM (
        SELECT tag_id, bucket, span_lo, span_hi,
            lag(span_hi) OVER (PARTITION BY tag_id, bucket ORDER BY span_lo, span_hi) AS before
        FROM {found}
    ) AS spans
    GROUP BY tag_id, bucket"""
_MERGE = """
    INSERT INTO {table} (tag_id, bucket, {columns})
    {query}
    ON CONFLICT (tag_id, bucket) DO UPDATE SET {update}"""
_FOLD_TEMPLATE = """
WITH minutes AS (
    SELECT {columns_all} FROM {parts}
), hours AS (
    SELECT tag_id, date_trunc('hour', bucket, 'UTC') AS bucket, {columns} FROM minutes
), found_minutes AS (
    SELECT * FROM minutes
    UNION ALL
    SELECT {columns_all} FROM rollups_1m
    WHERE (tag_id, bucket) IN (SELECT tag_id, bucket FROM minutes)
), found_hours AS (
    SELECT * FROM hours
    UNION ALL
    SELECT {columns_all} FROM rollups_1h
    WHERE (tag_id, bucket) IN (SELECT tag_id, bucket FROM hours)
), flagged_minutes AS ({flagged_minutes}
), flagged_hours AS ({flagged_hours}
), merging_minutes AS (
    SELECT f.* FROM found_minutes f JOIN flagged_minutes USING (tag_id, bucket)
    WHERE NOT overlapping
), merging_hours AS (
    SELECT f.* FROM found_hours f JOIN flagged_hours USING (tag_id, bucket)
    WHERE NOT overlapping
), merged_minutes AS ({merge_minutes}
), merged_hours AS ({merge_hours}
)
SELECT tag_id, 'minute', bucket FROM flagged_minutes WHERE overlapping
UNION ALL
SELECT tag_id, 'hour', bucket FROM flagged_hours WHERE overlapping
"""
_FOLD = _FOLD_TEMPLATE.format(
    columns_all=PART_COLUMNS,
    columns=_COLUMNS,
    parts=NEW_PARTS,
    flagged_minutes=_FLAGGED.format(found="found_minutes"),
    flagged_hours=_FLAGGED.format(found="found_hours"),
    merge_minutes=_MERGE.format(
        table="rollups_1m",
        columns=_COLUMNS,
        query=merged_summaries("merging_minutes", "bucket", tag="tag_id"),
        update=_UPDATE,
    ),
    merge_hours=_MERGE.format(
        table="rollups_1h",
        columns=_COLUMNS,
        query=merged_summaries("merging_hours", "bucket", tag="tag_id"),
        update=_UPDATE,
    ),
)


@dataclass(slots=True)
class Folded:
    """What a fold could not merge."""

    minutes: list[tuple[list[int], datetime, datetime]] = field(default_factory=list)
    """Minutes to redo from the stored readings (and their hours from their minutes)."""
    hours: list[Span] = field(default_factory=list)
    """Hours to redo from their minutes."""


async def fold_parts(conn: Connection) -> Folded:
    """Within the caller's transaction: merge the summaries in NEW_PARTS into rollups_1m and
    rollups_1h where they merge exactly; what they do not is for the caller to redo."""
    out = Folded()
    for tag, grain, bucket in await (await conn.execute(_FOLD, binary=True)).fetchall():
        if grain == "minute":
            out.minutes.append(([tag], bucket, bucket + MINUTE))
        else:
            out.hours.append((tag, bucket, bucket + HOUR))
    return out
