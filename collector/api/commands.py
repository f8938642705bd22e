"""/api/v1/commands: ask an agent to write a value to a tag, follow it, and read the audit."""

from typing import Annotated
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field, StrictFloat

from collector.api.auth import PRINCIPAL
from collector.api.operations import API, Body, Params, Role
from collector.api.pages import next_link, position
from collector.api.params import AgentName, QueryTime, Timestamp
from collector.api.problems import InvalidParam, ProblemError, bad_param
from collector.commands import Command, CommandFilter, CommandStatus
from collector.pagination import CURSOR_PATTERN
from collector.state import COMMANDS, SETTINGS
from shared.commands import CommandValue
from shared.readings import Value
from shared.wire import Name

TAG = "commands"
MAX_LIMIT = 1000
MAX_EXPIRY_S = 7 * 86400.0


class CommandOut(BaseModel):
    """A command: what was asked, by whom, and how it ended."""

    id: UUID
    agent: str
    device: str
    tag: str
    value: Value = Field(description="The value asked to be written.")
    status: CommandStatus = Field(
        description="pending (not yet taken by the broker), sent, applied, refused, expired"
        " (arrived too late), unreachable (the device did not answer) or timed_out (no result"
        " by its expiry and the grace)."
    )
    reason: str | None = Field(description="Why it was not applied, in the agent's words.")
    value_before: Value | None = Field(description="The tag's value read before the write.")
    value_after: Value | None = Field(description="The tag's value read back after the write.")
    requested_by: str = Field(description="The prefix of the API key that asked.")
    requested_by_name: str = Field(description="That key's name.")
    requested_at: Timestamp
    expires_at: Timestamp = Field(description="Never applied from this moment on.")
    sent_at: Timestamp | None = Field(description="When the broker took it (null: not yet).")
    finished_at: Timestamp | None = Field(description="When it ended (null: still open).")


class CommandPage(BaseModel):
    """A page of the audit, newest first."""

    items: list[CommandOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class NewCommand(Body):
    """A value to write to one tag of one device of an agent."""

    agent: AgentName
    device: Name = Field(description="Device name in the agent's configuration.")
    tag: Name = Field(description="Tag name of that device.")
    value: CommandValue = Field(description="A JSON boolean, integer, finite number or text.")
    expires_in: Annotated[StrictFloat, Field(gt=0, le=MAX_EXPIRY_S, allow_inf_nan=False)] | None = (
        Field(
            default=None,
            description="Seconds from now after which it is never applied (default"
            " commands.default_expiry; at most commands.max_expiry).",
        )
    )


class CommandPath(Params):
    """Which command."""

    id: UUID = Field(description="The command's id.")


class CommandQuery(Params):
    """Which commands, and which page."""

    agent: AgentName | None = None
    device: Name | None = Field(default=None, description="Device name.")
    tag: Name | None = Field(default=None, description="Tag name.")
    status: CommandStatus | None = None
    requested_by: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9]{8}$",
        description="API key prefix, as in pwk_<prefix>_...",
    )
    since: QueryTime | None = Field(default=None, description="Asked for at or after.")
    until: QueryTime | None = Field(default=None, description="Asked for before.")
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


def _out(command: Command) -> CommandOut:
    return CommandOut(
        id=command.id,
        agent=command.agent,
        device=command.device,
        tag=command.tag,
        value=command.value,
        status=command.status,
        reason=command.reason,
        value_before=command.value_before,
        value_after=command.value_after,
        requested_by=command.requested_by,
        requested_by_name=command.requested_by_name,
        requested_at=command.requested_at,
        expires_at=command.expires_at,
        sent_at=command.sent_at,
        finished_at=command.finished_at,
    )


@API.operation(
    "POST",
    "/api/v1/commands",
    summary="Ask an agent to write a value to a tag",
    tag=TAG,
    role=Role.OPERATOR,
    body=NewCommand,
    response=CommandOut,
    status=202,
)
async def create_command(request: web.Request, _: Params, body: NewCommand) -> CommandOut:
    """Accepted, not yet applied: the agent applies it only if its own configuration allows
    that tag and value; follow it with GET /api/v1/commands/{id}. It is sent at once (status
    sent), or again until it expires if the broker cannot take it now (status pending)."""
    settings = request.app[SETTINGS].commands
    expires_in = settings.default_expiry if body.expires_in is None else body.expires_in
    if expires_in > settings.max_expiry:
        raise bad_param(
            "expires_in", f"at most commands.max_expiry, {settings.max_expiry:g} seconds"
        )
    key = request[PRINCIPAL]
    made = await request.app[COMMANDS].create(
        body.agent, body.device, body.tag, body.value, expires_in, (key.prefix, key.name)
    )
    return _out(made)


@API.operation(
    "GET",
    "/api/v1/commands/{id}",
    summary="A command and how it ended",
    tag=TAG,
    role=Role.OPERATOR,
    params=CommandPath,
    response=CommandOut,
    errors=(404,),
)
async def get_command(request: web.Request, path: CommandPath) -> CommandOut:
    """Its status, the agent's reason, and the tag's value before and after the write."""
    found = await request.app[COMMANDS].get(path.id)
    if found is None:
        raise ProblemError(
            404, "Unknown command", f"no command {path.id}", [InvalidParam("id", "no such command")]
        )
    return _out(found)


@API.operation(
    "GET",
    "/api/v1/commands",
    summary="The audit of commands, newest first",
    tag=TAG,
    role=Role.OPERATOR,
    params=CommandQuery,
    response=CommandPage,
)
async def list_commands(request: web.Request, query: CommandQuery) -> CommandPage:
    """Who asked what of which tag, when, and how it ended; filtered by agent, device, tag,
    status, key and time asked; paginated."""
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise bad_param("since", "must be earlier than `until`")
    after = position(query.cursor)
    where = CommandFilter(
        agent=query.agent,
        device=query.device,
        tag=query.tag,
        status=query.status,
        requested_by=query.requested_by,
        since=query.since,
        until=query.until,
    )
    found = await request.app[COMMANDS].listing(where, after[1] if after else None, query.limit + 1)
    last = found[query.limit - 1] if len(found) > query.limit else None
    return CommandPage(
        items=[_out(c) for c in found[: query.limit]],
        next=next_link(request, None if last is None else (last.requested_at, last.seq)),
    )
