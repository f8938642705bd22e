"""/api/v1/readings: the readings of one tag over a time range."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NotRequired

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from collector.api.operations import API, Params, Role
from collector.api.pages import next_link, position
from collector.api.params import AgentName, QueryTime, Timestamp, format_ts
from collector.api.problems import InvalidParam, ProblemError, bad_param
from collector.pagination import CURSOR_PATTERN
from collector.state import SETTINGS, STORE
from collector.store import ReadingRow, TagInfo, join_value
from shared.readings import DataType, Quality

_EARLIEST = datetime.min.replace(tzinfo=UTC)


class OneTag(Params):
    """The tag a request is about: <device>/<tag>, and its agent when the name is not unique."""

    tag: str = Field(
        min_length=3,
        max_length=401,
        pattern=r"^[^/\x00-\x1f]+/[^\x00-\x1f]+$",
        description="The tag as <device>/<tag>.",
        examples=["press-1/temperature"],
    )
    agent: AgentName | None = Field(
        default=None, description="The agent, when several have a tag of that name."
    )


class ReadingsQuery(OneTag):
    """Which tag, which range, how many."""

    start: QueryTime | None = Field(
        default=None, alias="from", description="Readings at or after this (default: to - 1 h)."
    )
    end: QueryTime | None = Field(
        default=None, alias="to", description="Readings before this (default: now)."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Page size: most readings returned (default and most: http.max_readings).",
    )
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class ReadingOut(TypedDict):
    """One stored reading (a typed dict: a page holds many, serialised without an object each)."""

    ts: Annotated[Timestamp, Field(description="Source timestamp (or poll time).")]
    value: Annotated[
        bool | int | float | str | None,
        Field(description="Null when quality is bad, or when a float is not a number."),
    ]
    quality: Annotated[
        Literal["good", "uncertain", "bad"], Field(description="How far it can be trusted.")
    ]
    server_ts: NotRequired[
        Annotated[Timestamp, Field(description="OPC UA server timestamp, when one was sent.")]
    ]
    data_type: NotRequired[
        Annotated[
            DataType,
            Field(description="On every reading when the range spans a change of type."),
        ]
    ]


class ReadingsPage(BaseModel):
    """Readings of one tag, oldest first."""

    model_config = ConfigDict(populate_by_name=True)

    agent: str
    device: str
    tag: str
    data_type: DataType = Field(description="The tag's current type (that of its newest reading).")
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to")
    count: int
    truncated: bool = Field(description="True when more readings lie in the range than returned.")
    readings: list[ReadingOut]
    next: str | None = Field(
        description="URL of the next page of the same range (null: this is the last)."
    )


_QUALITY: dict[int, Literal["good", "uncertain", "bad"]] = {
    Quality.GOOD: "good",
    Quality.UNCERTAIN: "uncertain",
    Quality.BAD: "bad",
}


def readings_out(
    rows: list[ReadingRow], types: dict[int, DataType], with_type: bool
) -> list[ReadingOut]:
    """The rows as the API shows them (a page has many: no object per reading)."""
    out: list[ReadingOut] = []
    append = out.append
    for ts, number, text, quality, server_ts, tag_id, _ in rows:
        data_type = types[tag_id]
        value = (
            number
            if data_type in _FLOATS and number is not None
            else join_value(data_type, number, text)
        )
        reading: ReadingOut = {"ts": ts, "value": value, "quality": _QUALITY[quality]}
        if server_ts is not None:
            reading["server_ts"] = server_ts
        if with_type:
            reading["data_type"] = data_type
        append(reading)
    return out


_FLOATS = frozenset({DataType.FLOAT32, DataType.FLOAT64})


async def resolve_tag(request: web.Request, tag: str, agent: str | None) -> list[TagInfo]:
    """The versions (one per data type it has had) of the tag `<device>/<tag>` on `agent`."""
    device, _, name = tag.partition("/")
    matches = await request.app[STORE].find_tags(device, name, agent)
    if not matches:
        raise ProblemError(
            404,
            "Unknown tag",
            f"no tag {tag!r}" + (f" on agent {agent!r}" if agent else ""),
            [InvalidParam("tag", "no such tag")],
        )
    agents = sorted({version.agent_id for version in matches})
    if len(agents) > 1:
        raise bad_param(
            "agent", f"tag {tag!r} exists on several agents ({', '.join(agents)}); name one"
        )
    return matches


@API.operation(
    "GET",
    "/api/v1/readings",
    summary="Readings of one tag over a time range",
    tag="readings",
    role=Role.VIEWER,
    params=ReadingsQuery,
    response=ReadingsPage,
    errors=(404,),
)
async def get_readings(request: web.Request, query: ReadingsQuery) -> ReadingsPage:
    """Readings of one tag with from <= ts < to, oldest first.

    `data_type` is the tag's current type; when the range holds readings written under
    another type, every reading carries its own `data_type`.
    """
    maximum = request.app[SETTINGS].http.max_readings
    end = query.end or datetime.now(UTC)
    start = query.start or max(end, _EARLIEST + timedelta(hours=1)) - timedelta(hours=1)
    if start >= end:
        raise bad_param("from", "must be earlier than `to`")
    if query.limit is not None and query.limit > maximum:
        raise bad_param("limit", f"at most {maximum}")
    limit = query.limit or maximum
    after = position(query.cursor)
    versions = await resolve_tag(request, query.tag, query.agent)
    store = request.app[STORE]
    tag = await store.latest(versions)
    rows = await store.readings(versions, start, end, limit + 1, after)
    kept = rows[:limit]
    last = (kept[-1][0], kept[-1][6]) if len(rows) > limit else None
    # The same range and page size, even where this request left them to their defaults.
    following = next_link(
        request, last, **{"from": format_ts(start), "to": format_ts(end), "limit": str(limit)}
    )
    types = {version.tag_id: version.data_type for version in versions}
    mixed = len({types[row[5]] for row in kept} | {tag.data_type}) > 1
    # Constructed, not validated: every part comes from the database or was validated above.
    return ReadingsPage.model_construct(
        agent=tag.agent_id,
        device=tag.device,
        tag=tag.name,
        data_type=tag.data_type,
        start=start,
        end=end,
        count=len(kept),
        truncated=len(rows) > limit,
        readings=readings_out(kept, types, mixed),
        next=following,
    )
