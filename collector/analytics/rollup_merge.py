"""Merges new rollup summaries into `rollups_1m` and `rollups_1h`, exactly, or says what to redo.

Most summaries are of buckets no stored row has yet (readings arriving in time order, each
minute once it has ended): `stored` tells those apart, and the writer copies them straight
into the rollups. The rest are merged here. The collector summarises the readings it holds
once per tag version and minute, and once per tag version and hour, so each bucket gets one
new summary. It merges with the stored row exactly when the spans of their readings do not
overlap: the usual case, readings arriving in time order. The merge is the one of
collector/analytics/summary_sql.py (merged_summaries) for two summaries, written out: sums,
the earlier one's first and the later one's last, and what lies between the earlier one's
last number and the later one's first. Where spans overlap (a late reading inside a minute
already summarised, or readings that a summary of the stored readings already counts), the
minute is redone from the stored readings, or the hour from its minutes, instead: right
whatever the summaries hold. A minute that overlaps lies in an hour that overlaps, so redoing
a minute redoes its hour.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from collector.analytics.minute_summaries import Summaries, bucket_key
from collector.analytics.rollups import Span
from collector.analytics.summary_sql import (
    ROLLUP_TIMES,
    SUMMARY_COLUMNS,
    counter_step,
    linear_area,
    step_area,
)
from collector.analytics.timespans import HOUR, MINUTE
from collector.replica import Connection

_COLUMNS = [c.strip() for c in f"{SUMMARY_COLUMNS}, {ROLLUP_TIMES}".split(",")]
SUMMARY_TABLE_COLUMNS = ", ".join(["tag_id", "bucket", *_COLUMNS])
"""The columns of the new summaries' tables, in the order they are copied."""
MINUTES, HOURS = "rollups_1m", "rollups_1h"
NEW_MINUTES = "new_rollup_minutes"
NEW_HOURS = "new_rollup_hours"
_CREATE = """
CREATE TEMP TABLE IF NOT EXISTS {table} (
    tag_id int4 NOT NULL, bucket timestamptz NOT NULL, count int4 NOT NULL, good int4 NOT NULL,
    numbers int4 NOT NULL, first_ts timestamptz, first_value float8, last_ts timestamptz,
    last_value float8, total float8, low float8, high float8, step_area float8 NOT NULL,
    linear_area float8 NOT NULL, increase float8 NOT NULL, low_ts timestamptz,
    high_ts timestamptz, span_lo timestamptz NOT NULL, span_hi timestamptz NOT NULL
) ON COMMIT DELETE ROWS"""
CREATE_NEW = ";".join(_CREATE.format(table=table) for table in (NEW_MINUTES, NEW_HOURS))
"""The session's temporary tables of new summaries per minute and per hour (emptied at
commit)."""


def _merged(e: str, x: str) -> dict[str, str]:
    """Each summary column of `e` (the earlier summary) merged with `x` (the later), as SQL."""
    both = f"{e}.numbers > 0 AND {x}.numbers > 0"
    gaps = {
        "step_area": step_area(f"{e}.last_value", f"{e}.last_ts", f"{x}.first_ts"),
        "linear_area": linear_area(
            f"{e}.last_value", f"{x}.first_value", f"{e}.last_ts", f"{x}.first_ts"
        ),
        "increase": counter_step(f"{e}.last_value", f"{x}.first_value"),
    }
    out = {name: f"{e}.{name} + {x}.{name}" for name in ("count", "good", "numbers")}
    for name in ("first_ts", "first_value"):
        out[name] = f"CASE WHEN {e}.numbers > 0 THEN {e}.{name} ELSE {x}.{name} END"
    for name in ("last_ts", "last_value"):
        out[name] = f"CASE WHEN {x}.numbers > 0 THEN {x}.{name} ELSE {e}.{name} END"
    out["total"] = (
        f"CASE WHEN {both} THEN {e}.total + {x}.total ELSE coalesce({e}.total, {x}.total) END"
    )
    out["low"] = f"least({e}.low, {x}.low)"
    out["high"] = f"greatest({e}.high, {x}.high)"
    for name, gap in gaps.items():
        out[name] = f"{e}.{name} + {x}.{name} + CASE WHEN {both} THEN {gap} ELSE 0 END"
    # The earliest time the merged low (high) was reached.
    out["low_ts"] = (
        f"CASE WHEN {x}.low IS NULL OR {e}.low <= {x}.low THEN {e}.low_ts ELSE {x}.low_ts END"
    )
    out["high_ts"] = (
        f"CASE WHEN {x}.high IS NULL OR {e}.high >= {x}.high THEN {e}.high_ts ELSE {x}.high_ts END"
    )
    out["span_lo"] = f"least({e}.span_lo, {x}.span_lo)"
    out["span_hi"] = f"greatest({e}.span_hi, {x}.span_hi)"
    return out


def _update(stored: str, new: str) -> str:
    """SET list merging the new summary into the stored one, whichever comes first."""
    later, earlier = _merged(stored, new), _merged(new, stored)
    return ", ".join(
        f"{name} = CASE WHEN {new}.span_lo > {stored}.span_hi THEN {later[name]}"
        f" ELSE {earlier[name]} END"
        for name in _COLUMNS
    )


_UPSERT = """
    INSERT INTO {table} AS s ({columns}) SELECT {columns} FROM {new}
    ON CONFLICT (tag_id, bucket) DO UPDATE SET {update}
    WHERE excluded.span_lo > s.span_hi OR excluded.span_hi < s.span_lo
    RETURNING tag_id, bucket"""
_MERGE_TEMPLATE = """
WITH minutes AS ({minutes}
), hours AS ({hours}
)
SELECT n.tag_id, 'minute', n.bucket FROM {new_minutes} n
WHERE NOT EXISTS (SELECT FROM minutes m WHERE (m.tag_id, m.bucket) = (n.tag_id, n.bucket))
UNION ALL
SELECT n.tag_id, 'hour', n.bucket FROM {new_hours} n
WHERE NOT EXISTS (SELECT FROM hours h WHERE (h.tag_id, h.bucket) = (n.tag_id, n.bucket))
"""
_MERGE = _MERGE_TEMPLATE.format(
    minutes=_UPSERT.format(
        table="rollups_1m",
        columns=SUMMARY_TABLE_COLUMNS,
        new=NEW_MINUTES,
        update=_update("s", "excluded"),
    ),
    hours=_UPSERT.format(
        table="rollups_1h",
        columns=SUMMARY_TABLE_COLUMNS,
        new=NEW_HOURS,
        update=_update("s", "excluded"),
    ),
    new_minutes=NEW_MINUTES,
    new_hours=NEW_HOURS,
)


# Per tag version, the stored buckets between its first and last new one: a short index range
# each, where a probe per bucket would be one index descent per summary.
_STORED = """
SELECT r.tag_id, (extract(epoch FROM r.bucket) * 1000000)::int8
FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS k(tag_id, lo, hi)
JOIN {table} r ON r.tag_id = k.tag_id
    AND r.bucket >= timestamptz 'epoch' + k.lo * interval '1 microsecond'
    AND r.bucket <= timestamptz 'epoch' + k.hi * interval '1 microsecond'
"""


def _literal(values: NDArray[np.integer[Any]]) -> str:
    """An integer array as PostgreSQL's text form: thousands of numbers go as one string, not
    each dumped on its own."""
    return "{" + ",".join(map(str, values.tolist())) + "}"


async def stored(conn: Connection, table: str, summaries: Summaries) -> NDArray[np.bool_]:
    """Which of the summaries (ordered by tag version, then bucket) `table` has a row for."""
    tag = summaries.tag
    first = np.flatnonzero(np.r_[True, tag[1:] != tag[:-1]])
    last = np.append(first[1:], len(tag)) - 1
    cursor = await conn.execute(
        _STORED.format(table=table),
        [_literal(tag[first]), _literal(summaries.bucket[first]), _literal(summaries.bucket[last])],
        binary=True,
    )
    found = await cursor.fetchall()
    if not found:
        return np.zeros(len(summaries), np.bool_)
    tags, buckets = (np.array(column, np.int64) for column in zip(*found, strict=True))
    return np.isin(summaries.keys(), bucket_key(tags.astype(np.int32), buckets))


@dataclass(slots=True)
class Unmerged:
    """What a fold could not merge."""

    minutes: list[tuple[list[int], datetime, datetime]] = field(default_factory=list)
    """Minutes to redo from the stored readings (and their hours from their minutes)."""
    hours: list[Span] = field(default_factory=list)
    """Hours to redo from their minutes."""


async def merge_summaries(conn: Connection) -> Unmerged:
    """Within the caller's transaction: merge the summaries in NEW_MINUTES and NEW_HOURS into
    rollups_1m and rollups_1h where they merge exactly; what does not is for the caller to
    redo. A stored row whose span is not known (written before spans were kept) overlaps."""
    out = Unmerged()
    for tag, grain, bucket in await (await conn.execute(_MERGE, binary=True)).fetchall():
        if grain == "minute":
            out.minutes.append(([tag], bucket, bucket + MINUTE))
        else:
            out.hours.append((tag, bucket, bucket + HOUR))
    return out
