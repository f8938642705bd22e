"""/api/v1/tags: the tags the collector has stored readings of, a page at a time."""

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from collector.api.operations import API, Params, Role
from collector.api.pages import next_link, position
from collector.api.params import AgentName, Timestamp
from collector.pagination import CURSOR_PATTERN
from collector.state import STORE
from shared.readings import DataType

MAX_LIMIT = 1000


class TagQuery(Params):
    """Which tags, and which page."""

    agent: AgentName | None = Field(default=None, description="Only this agent's tags.")
    device: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="Only this device's tags.",
    )
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class TagOut(TypedDict):
    """A tag (one row per data type it has had); a typed dict: a page holds many."""

    tag: Annotated[str, Field(description="<device>/<tag>, as /api/v1/readings takes it.")]
    agent: str
    device: str
    name: str
    data_type: Annotated[
        str,
        Field(
            description="The PLC-side type of its readings.",
            json_schema_extra={"enum": [data_type.value for data_type in DataType]},
        ),
    ]
    first_seen: Timestamp


class TagPage(BaseModel):
    """A page of tags, in the order they were first seen."""

    items: list[TagOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


@API.operation(
    "GET",
    "/api/v1/tags",
    summary="Tags, a page at a time",
    tag="readings",
    role=Role.VIEWER,
    params=TagQuery,
    response=TagPage,
)
async def list_tags(request: web.Request, query: TagQuery) -> TagPage:
    """Every tag readings were stored for, filtered by agent and device; paginated."""
    after = position(query.cursor)
    after_id = after[1] if after else 0
    rows = await request.app[STORE].list_tags(query.agent, query.device, after_id, query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    last = (rows[-1][5], rows[-1][0]) if more else None
    items: list[TagOut] = [
        {
            "tag": f"{device}/{name}",
            "agent": agent,
            "device": device,
            "name": name,
            "data_type": data_type,
            "first_seen": first_seen,
        }
        for _, agent, device, name, data_type, first_seen in rows
    ]
    # Constructed, not validated: the rows come from our own database.
    return TagPage.model_construct(items=items, next=next_link(request, last))
