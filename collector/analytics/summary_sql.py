"""The SQL of bucket summaries: from raw readings, and merged from smaller buckets' summaries.

Both queries give rows of one shape (the fields of `series.Summary`, in SUMMARY_COLUMNS order,
after the bucket key), so raw readings, `rollups_1m` and `rollups_1h` answer alike. A summary
only describes the readings inside its bucket; merging consecutive summaries adds what lies
between one's last reading and the next one's first, computed by the same expressions as
between two readings, so a merged summary equals the one made from the readings themselves.
"""

NUMBER = "CASE WHEN abs(coalesce(value, value_text::float8)) < 1e300"
NUMBER += " THEN coalesce(value, value_text::float8) END"
"""A reading's value as a number: NULL without one, or beyond ±1e300 (a PLC's "no value"
sentinel such as the largest double), whose sums and time-weighted areas would overflow."""
TEXT = "value_text"
"""A string tag's value."""

SUMMARY_COLUMNS = (
    "count, good, numbers, first_ts, first_value, last_ts, last_value, total, low, high,"
    " step_area, linear_area, increase"
)
"""A rollup table's summary columns, in the order the queries here give them."""
ROLLUP_TIMES = "low_ts, high_ts, span_lo, span_hi"
"""When a rollup's low and high were first reached, and its first and last readings' times of
any kind (given after SUMMARY_COLUMNS): two rollups of one bucket merge exactly only when their
spans do not overlap."""


def _seconds(begin: str, end: str) -> str:
    return f"extract(epoch FROM {end} - {begin})::float8"


def step_area(value: str, begin: str, end: str) -> str:
    """SQL for the area of `value` held from `begin` to `end` (value x seconds)."""
    return f"{value} * {_seconds(begin, end)}"


def linear_area(left: str, right: str, begin: str, end: str) -> str:
    """SQL for the area under the line from `left` at `begin` to `right` at `end`."""
    return f"({left} + {right}) / 2 * {_seconds(begin, end)}"


def counter_step(previous: str, current: str) -> str:
    """SQL for how far a counter moved between two values, as `series.counter_step`."""
    return f"CASE WHEN {current} >= {previous} THEN {current} - {previous} ELSE {current} END"


_READINGS = """
WITH r AS (
    SELECT {tag} AS g, {key} AS k, ts, seq, quality, {value} AS v FROM {source}
), w AS (
    SELECT g, k, ts, quality, v, lead(ts) OVER o AS nts, {windows}
        first_value(v) OVER f AS fv, last_value(v) OVER f AS lv
    FROM r
    WINDOW o AS (PARTITION BY g, k, v IS NULL ORDER BY ts, seq),
        f AS (o ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT {group} k, count(*), count(*) FILTER (WHERE quality = 0), count(v),
    min(ts) FILTER (WHERE v IS NOT NULL), max(fv), max(ts) FILTER (WHERE v IS NOT NULL), max(lv)
    {numbers}
FROM w GROUP BY g, k ORDER BY g, k
"""
_NUMBER_WINDOWS = "lead(v) OVER o AS nv, lag(v) OVER o AS pv,"
_EXTREME_WINDOWS = "min(v) OVER f AS lo, max(v) OVER f AS hi,"
_NUMBER_COLUMNS = f""",
    sum(v), min(v), max(v),
    coalesce(sum({step_area("v", "ts", "nts")}), 0),
    coalesce(sum({linear_area("v", "nv", "ts", "nts")}), 0),
    coalesce(sum({counter_step("pv", "v")}) FILTER (WHERE pv IS NOT NULL), 0)"""
_READING_EXTREMES = ", min(ts) FILTER (WHERE v = lo), min(ts) FILTER (WHERE v = hi),"
_READING_EXTREMES += " min(ts), max(ts)"


def readings_summaries(
    source: str, key: str, value: str, *, tag: str | None = None, numbers: bool = True
) -> str:
    """SQL for one summary per bucket `key` of the readings `source` selects (oldest first).

    `source` is a FROM clause giving readings' ts, seq, quality, value and value_text; with
    `tag` (an expression of it), one summary per tag version and bucket, led by the tag id,
    and ROLLUP_TIMES after the summary. Without `numbers`, only the count,
    good count, and first and last values (text).
    """
    windows = columns = ""
    if numbers:
        windows, columns = _NUMBER_WINDOWS, _NUMBER_COLUMNS
        if tag is not None:
            windows, columns = windows + _EXTREME_WINDOWS, columns + _READING_EXTREMES
    return _READINGS.format(
        tag="0" if tag is None else tag,
        key=key,
        value=value,
        source=source,
        group="" if tag is None else "g,",
        windows=windows,
        numbers=columns,
    )


_MERGE = """
WITH r AS (
    SELECT {tag} AS g, {key} AS k, bucket, {columns}, {times} FROM {source}
), w AS (
    SELECT *, lag(last_ts) OVER o AS pts, lag(last_value) OVER o AS pv,
        first_value(first_value) OVER f AS fv, last_value(last_value) OVER f AS lv,
        min(low) OVER f AS lo, max(high) OVER f AS hi
    FROM r
    WINDOW o AS (PARTITION BY g, k, first_ts IS NULL ORDER BY first_ts, last_ts, bucket),
        f AS (o ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT {group} k, sum(count), sum(good), sum(numbers), min(first_ts), max(fv), max(last_ts),
    max(lv), sum(total), min(low), max(high),
    sum(step_area) + coalesce(sum({step}), 0),
    sum(linear_area) + coalesce(sum({linear}), 0),
    sum(increase) + coalesce(sum({increase}) FILTER (WHERE pv IS NOT NULL), 0)
    {extremes}
FROM w GROUP BY g, k ORDER BY g, k
"""
# Between one row's last reading and the next row's first, as between two readings.
_GAPS = {
    "step": step_area("pv", "pts", "first_ts"),
    "linear": linear_area("pv", "first_value", "pts", "first_ts"),
    "increase": counter_step("pv", "first_value"),
}
_MERGED_EXTREMES = ", min(low_ts) FILTER (WHERE low = lo), min(high_ts) FILTER (WHERE high = hi),"
# A span not known in any row (a row from before spans were kept) leaves the merged one unknown.
_MERGED_EXTREMES += " CASE WHEN bool_and(span_lo IS NOT NULL) THEN min(span_lo) END,"
_MERGED_EXTREMES += " CASE WHEN bool_and(span_hi IS NOT NULL) THEN max(span_hi) END"


def merged_summaries(source: str, key: str, *, tag: str | None = None) -> str:
    """SQL for the summaries of rollup rows merged into the buckets `key` gives (oldest first).

    `source` is a FROM clause giving a rollup table's columns; `key`, an expression of their
    `bucket`, must put every row in the bucket all its readings belong to. With `tag`, one
    summary per tag version and bucket, led by the tag id and followed by ROLLUP_TIMES.
    """
    return _MERGE.format(
        **_GAPS,
        columns=SUMMARY_COLUMNS,
        times=ROLLUP_TIMES,
        tag="0" if tag is None else tag,
        key=key,
        source=source,
        group="" if tag is None else "g,",
        extremes="" if tag is None else _MERGED_EXTREMES,
    )


_ROWS = "SELECT bucket, {columns} FROM {source} ORDER BY bucket"


def rollup_summaries(source: str) -> str:
    """SQL for rollup rows as they are, when each is a bucket of its own (oldest first)."""
    return _ROWS.format(columns=SUMMARY_COLUMNS, source=source)
