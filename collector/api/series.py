"""/api/v1/series: one tag's readings raw (paginated) or in time buckets, at any zoom."""

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, NotRequired

import numpy as np
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from collector.analytics.buckets import (
    INTERVAL_PATTERN,
    TooManyBuckets,
    boundaries,
    find_zone,
    parse_interval,
)
from collector.analytics.readings_source import ReadingsSource, SeriesRequest
from collector.analytics.rollup_source import RollupSource
from collector.analytics.series import (
    TEXT_AGGS,
    Agg,
    Bucket,
    Fill,
    SourceName,
    aggregate,
    fill,
    keep_shape,
)
from collector.api.operations import API, Role
from collector.api.pages import next_link, position
from collector.api.params import QueryTime, Timestamp
from collector.api.problems import InvalidParam, ProblemError
from collector.api.readings import OneTag, ReadingOut, readings_out, resolve_tag
from collector.config import SeriesSettings
from collector.pagination import CURSOR_PATTERN
from collector.state import SETTINGS, STORE
from collector.store import ReadingRow, TagInfo
from shared.invariants import required
from shared.readings import DataType

_TIME_WEIGHTED = frozenset({Agg.TWA_STEP, Agg.TWA_LINEAR, Agg.INCREASE})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SeriesQuery(OneTag):
    """Which tag, which range, and how to bucket, aggregate, fill and downsample it."""

    start: QueryTime = Field(alias="from", description="Start of the range (included).")
    end: QueryTime = Field(alias="to", description="End of the range (excluded).")
    interval: str | None = Field(
        default=None,
        pattern=INTERVAL_PATTERN,
        description="Bucket length, ISO 8601: PT1S, PT15M, PT1H30M; or the calendar units P1D,"
        " P1W (from Monday), P1M, P1Y in `tz` (absent: raw readings).",
        examples=["PT15M", "P1D"],
    )
    tz: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+./-]+$",
        description="IANA time zone buckets are aligned in.",
        examples=["Europe/Berlin"],
    )
    agg: Agg | None = Field(default=None, description="A bucket's value (default avg).")
    fill: Fill | None = Field(
        default=None,
        description="Buckets without a value: left out (none, the default),"
        " null, previous value, or linear between neighbours.",
    )
    max_points: int | None = Field(
        default=None,
        ge=5,
        description="At most this many points, chosen to keep the shape (MinMaxLTTB, global"
        " minimum and maximum kept); at most series.max_points.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Raw readings per page (default and most: series.max_page)."
    )
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class BucketOut(TypedDict):
    """One bucket (a typed dict: a series holds many)."""

    start: Annotated[Timestamp, Field(description="Where the bucket starts (included).")]
    end: Annotated[Timestamp, Field(description="Where it ends (excluded).")]
    value: Annotated[float | str | None, Field(description="Null when it has none.")]
    count: Annotated[int, Field(description="Readings in the bucket.")]
    good: Annotated[
        float | None, Field(description="Share of them of good quality (null: no readings).")
    ]
    filled: NotRequired[Annotated[bool, Field(description="The value comes from `fill`.")]]


class SeriesPage(BaseModel):
    """A tag's series: buckets, or raw readings, oldest first."""

    model_config = ConfigDict(populate_by_name=True)

    agent: str
    device: str
    tag: str
    data_type: DataType = Field(description="The tag's current type (that of its newest reading).")
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to")
    interval: str | None = Field(description="Null for raw readings.")
    tz: str
    agg: Agg | None
    fill: Fill | None
    source: SourceName = Field(
        description="Where the values were computed from: raw `readings`, or the per-minute"
        " or per-hour rollups (`rollups_1m`, `rollups_1h`; the newest buckets may still come"
        " from raw readings)."
    )
    downsampled: bool = Field(description="True when max_points left points out.")
    count: int = Field(description="Buckets or readings returned.")
    buckets: list[BucketOut] | None = Field(description="With `interval`; else null.")
    readings: list[ReadingOut] | None = Field(description="Without `interval`; else null.")
    truncated: bool = Field(description="Raw readings only: more lie in the range.")
    next: str | None = Field(description="Raw readings only: URL of the next page.")


def refuse(name: str, reason: str) -> ProblemError:
    """A 422 naming the parameter that cannot be acted on (a limit, or a combination)."""
    return ProblemError(
        422, "Unprocessable request parameter", f"{name}: {reason}", [InvalidParam(name, reason)]
    )


def _check(query: SeriesQuery, limits: SeriesSettings) -> None:
    if query.start >= query.end:
        raise refuse("from", "must be earlier than `to`")
    if query.end - query.start > timedelta(days=limits.max_range_days):
        most = limits.max_range_days
        raise refuse("to", f"the range is longer than series.max_range_days ({most} days)")
    if query.max_points is not None and query.max_points > limits.max_points:
        raise refuse("max_points", f"at most series.max_points ({limits.max_points})")
    if query.interval is None:
        for name in ("agg", "fill"):
            if getattr(query, name) is not None:
                raise refuse(name, "needs `interval` (raw readings are not aggregated)")
    for name in ("cursor", "limit"):
        if getattr(query, name) is not None and (query.interval or query.max_points):
            raise refuse(name, "pages raw readings only: not with `interval` or `max_points`")
    if query.limit is not None and query.limit > limits.max_page:
        raise refuse("limit", f"at most series.max_page ({limits.max_page})")


@API.operation(
    "GET",
    "/api/v1/series",
    summary="One tag's readings over a range: raw, or bucketed and aggregated",
    tag="readings",
    role=Role.VIEWER,
    params=SeriesQuery,
    response=SeriesPage,
    errors=(404, 422),
)
async def get_series(request: web.Request, query: SeriesQuery) -> SeriesPage:
    """Readings of one tag with from <= ts < to, oldest first (docs/api.md#series).

    With `interval`, in buckets aligned in `tz`, each with its start, end, value (`agg`),
    count and share of good readings; without, raw readings a page at a time. `max_points`
    downsamples either, keeping the shape. A request beyond a limit is a 422 naming it.
    """
    limits = request.app[SETTINGS].series
    _check(query, limits)
    try:
        zone = find_zone(query.tz)
    except ValueError as exc:
        raise refuse("tz", str(exc)) from None
    try:
        interval = parse_interval(query.interval) if query.interval else None
    except ValueError as exc:
        raise refuse("interval", str(exc)) from None
    versions = await resolve_tag(request, query.tag, query.agent)
    store = request.app[STORE]
    tag = await store.latest(versions)
    text = tag.data_type is DataType.STRING
    page = SeriesPage.model_construct(
        agent=tag.agent_id,
        device=tag.device,
        tag=tag.name,
        data_type=tag.data_type,
        start=query.start,
        end=query.end,
        interval=query.interval,
        tz=query.tz,
        agg=None,
        fill=None,
        source=ReadingsSource.name,
        downsampled=False,
        count=0,
        buckets=None,
        readings=None,
        truncated=False,
        next=None,
    )
    if text and query.max_points is not None:
        raise refuse("max_points", "downsamples numbers; this tag's values are text")
    if interval is None:
        return await _raw(request, query, limits, versions, page)
    agg, how = query.agg or Agg.AVG, query.fill or Fill.NONE
    if text and agg not in TEXT_AGGS:
        raise refuse("agg", "this tag's values are text: only count, first or last")
    if text and how is Fill.LINEAR:
        raise refuse("fill", "this tag's values are text: linear needs numbers")
    try:
        aligned = boundaries(interval, zone, query.start, query.end, limits.max_buckets)
    except TooManyBuckets as exc:
        raise refuse("interval", f"{exc} (series.max_buckets)") from None
    except (OverflowError, ValueError):
        raise refuse("interval", "its buckets reach beyond the years 1 to 9999") from None
    same_kind = [v for v in versions if (v.data_type is DataType.STRING) == text]
    derived = request.app[SETTINGS].analytics.derive
    source = RollupSource(store.reads) if derived else ReadingsSource(store.reads)
    data = await source.summaries(
        SeriesRequest(
            tag_ids=[version.tag_id for version in same_kind],
            text=text,
            interval=interval,
            zone=zone,
            start=query.start,
            end=query.end,
            before=agg in _TIME_WEIGHTED,
            after=agg is Agg.TWA_LINEAR,
        )
    )
    buckets = fill(aggregate(agg, aligned, query.start, query.end, data), how)
    if query.max_points is not None and len(buckets) > query.max_points:
        buckets = _downsample_buckets(buckets, query.max_points)
        page.downsampled = True
    page.agg, page.fill, page.count, page.source = agg, how, len(buckets), data.source
    page.buckets = [_bucket_out(bucket) for bucket in buckets]
    return page


def _bucket_out(bucket: Bucket) -> BucketOut:
    out: BucketOut = {
        "start": bucket.start,
        "end": bucket.end,
        "value": bucket.value,
        "count": bucket.count,
        "good": bucket.good,
    }
    if bucket.filled:
        out["filled"] = True
    return out


def _micros(moments: list[datetime]) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    return np.array([(m - _EPOCH) // timedelta(microseconds=1) for m in moments], dtype=np.int64)


def _downsample_buckets(buckets: list[Bucket], most: int) -> list[Bucket]:
    valued = [bucket for bucket in buckets if bucket.value is not None]
    x = _micros([bucket.start for bucket in valued])
    y = np.array([bucket.value for bucket in valued], dtype=np.float64)
    return [valued[i] for i in keep_shape(x, y, most)]


async def _raw(
    request: web.Request,
    query: SeriesQuery,
    limits: SeriesSettings,
    versions: list[TagInfo],
    page: SeriesPage,
) -> SeriesPage:
    store = request.app[STORE]
    types = {version.tag_id: version.data_type for version in versions}
    if query.max_points is not None:
        most = limits.max_downsampled_readings
        rows = await store.readings(versions, query.start, query.end, most + 1)
        if len(rows) > most:
            raise refuse(
                "max_points",
                f"the range holds more than series.max_downsampled_readings ({most}) readings:"
                " give an `interval`",
            )
        valued = [row for row in rows if _number(row, types) is not None]
        x = _micros([row[0] for row in valued])
        y = np.array([_number(row, types) for row in valued], dtype=np.float64)
        kept: list[ReadingRow] = [valued[i] for i in keep_shape(x, y, query.max_points)]
        page.downsampled = len(kept) < len(rows)
    else:
        limit = query.limit or limits.max_page
        rows = await store.readings(
            versions, query.start, query.end, limit + 1, position(query.cursor)
        )
        kept = rows[:limit]
        last = (kept[-1][0], kept[-1][6]) if len(rows) > limit else None
        page.truncated = last is not None
        page.next = next_link(request, last, limit=str(limit))
    mixed = len({types[row[5]] for row in kept} | {page.data_type}) > 1
    page.readings = readings_out(kept, types, mixed)
    page.count = len(kept)
    return page


def _number(row: ReadingRow, types: dict[int, DataType]) -> float | None:
    """A raw reading's value as a finite number, or None (no value, text, or not finite)."""
    if types[row[5]] is DataType.STRING or (row[1] is None and row[2] is None):
        return None
    # An integer beyond 2^53 is kept as text (collector/store.py).
    number = row[1] if row[1] is not None else float(required(row[2], "value_text"))
    return number if math.isfinite(number) else None
