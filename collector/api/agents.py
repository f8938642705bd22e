"""/api/v1/agents: every agent the collector has heard of, and one agent."""

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from collector.agents import AgentRecord
from collector.api.operations import API, Params, Role
from collector.api.pages import key_position, next_link
from collector.api.params import AgentName, Timestamp
from collector.api.problems import InvalidParam, ProblemError
from collector.pagination import CURSOR_PATTERN
from collector.state import AGENTS

MAX_LIMIT = 1000


class AgentOut(BaseModel):
    """An agent: its status, identity and last heartbeat."""

    agent: str
    status: str = Field(description="online or offline.")
    status_since: Timestamp
    first_seen: Timestamp
    last_seen: Timestamp
    version: str | None
    config_hash: str | None
    devices: list[str] | None
    epoch: int | None = Field(description="Its buffer's epoch.")
    last_heartbeat: dict[str, Any] | None = Field(
        description="The agent's last heartbeat: devices, buffer, drops (docs/protocol.md)."
    )
    last_heartbeat_at: Timestamp | None


class AgentList(BaseModel):
    """A page of agents, by id."""

    agents: list[AgentOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class AgentQuery(Params):
    """Which page of agents."""

    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class AgentPath(Params):
    """Which agent."""

    agent_id: AgentName


def _agent(record: AgentRecord) -> AgentOut:
    # Constructed, not validated: the record comes from our own database.
    return AgentOut.model_construct(
        agent=record.agent_id,
        status=record.status,
        status_since=record.status_since,
        first_seen=record.first_seen,
        last_seen=record.last_seen,
        version=record.version,
        config_hash=record.config_hash,
        devices=record.devices,
        epoch=record.epoch,
        last_heartbeat=record.last_heartbeat,
        last_heartbeat_at=record.last_heartbeat_at,
    )


@API.operation(
    "GET",
    "/api/v1/agents",
    summary="Agents, a page at a time",
    tag="agents",
    role=Role.VIEWER,
    params=AgentQuery,
    response=AgentList,
)
async def list_agents(request: web.Request, query: AgentQuery) -> AgentList:
    """Every agent the collector has heard of, with its status and last heartbeat; paginated."""
    after = key_position(query.cursor)
    records = await request.app[AGENTS].list(after=after, limit=query.limit + 1)
    last = records[query.limit - 1].agent_id if len(records) > query.limit else None
    return AgentList.model_construct(
        agents=[_agent(record) for record in records[: query.limit]],
        next=next_link(request, last),
    )


@API.operation(
    "GET",
    "/api/v1/agents/{agent_id}",
    summary="One agent",
    tag="agents",
    role=Role.VIEWER,
    params=AgentPath,
    response=AgentOut,
    errors=(404,),
)
async def get_agent(request: web.Request, path: AgentPath) -> AgentOut:
    """One agent, with its status and last heartbeat."""
    records = await request.app[AGENTS].list(path.agent_id)
    if not records:
        raise ProblemError(
            404,
            "Unknown agent",
            f"no agent {path.agent_id!r}",
            [InvalidParam("agent_id", "no such agent")],
        )
    return _agent(records[0])
