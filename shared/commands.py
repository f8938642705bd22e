"""Commands to equipment on the wire: the request a collector sends, the result an agent sends.

A command travels on `<prefix>/v1/<agent>/cmd/<id>` (collector to agent) and its result on
`<prefix>/v1/<agent>/result` (agent to collector), both JSON at QoS 1. docs/protocol.md
(section "Commands (cmd)") is the prose version of this module.
"""

from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from shared.errors import WireError
from shared.wire import Name

COMMAND_VERSION = 1
MAX_TEXT = 1000
"""Longest text value a command may write, in characters."""

CommandValue = (
    StrictBool
    | Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\x00]*$")]
)
"""What a command may write: a JSON boolean, integer (64-bit), finite number or text."""

ReadValue = StrictBool | StrictInt | StrictFloat | StrictStr | None
"""A value read back from a device (null: none could be read)."""

AgentOutcome = Literal["applied", "refused", "expired", "unreachable"]
"""How an agent finished a command."""

AGENT_OUTCOMES: tuple[AgentOutcome, ...] = ("applied", "refused", "expired", "unreachable")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandPayload(_Strict):
    """A request to write one value to one tag, published on `<prefix>/v1/<agent>/cmd/<id>`."""

    v: Literal[1] = Field(description="Format version.")
    id: UUID = Field(description="The command's id; the same on every delivery.")
    device: Name = Field(description="Device name in the agent's configuration.")
    tag: Name = Field(description="Tag name of that device.")
    value: CommandValue = Field(description="The value to write.")
    requested_at: AwareDatetime = Field(description="When it was asked for (RFC 3339).")
    expires_at: AwareDatetime = Field(
        description="Not applied from this moment on, by the agent's clock (RFC 3339)."
    )
    requested_by: Annotated[str, StringConstraints(max_length=300)] = Field(
        description="Who asked: the API key's prefix and name."
    )


class CommandResult(_Strict):
    """How an agent finished a command, published on `<prefix>/v1/<agent>/result`."""

    v: Literal[1] = Field(description="Format version.")
    id: UUID = Field(description="The command's id.")
    status: AgentOutcome = Field(description="applied, refused, expired or unreachable.")
    reason: str | None = Field(
        default=None, description="Why it was not applied, or what went wrong after the write."
    )
    value_before: ReadValue = Field(default=None, description="The tag's value before the write.")
    value_after: ReadValue = Field(
        default=None, description="The tag's value read back after the write."
    )
    finished_at: AwareDatetime = Field(description="When the agent finished it (RFC 3339).")


def encode_command(command: CommandPayload) -> bytes:
    """The JSON of a command."""
    return command.model_dump_json().encode()


def decode_command(raw: bytes) -> CommandPayload:
    """Parse a command or raise WireError (reason `command`)."""
    try:
        return CommandPayload.model_validate_json(raw)
    except ValidationError as exc:
        raise WireError(f"invalid command: {_first(exc)}", reason="command") from exc


def encode_result(result: CommandResult) -> bytes:
    """The JSON of a result; a value that is not a finite number is sent as null."""
    return result.model_dump_json().encode()


def decode_result(raw: bytes) -> CommandResult:
    """Parse a result or raise WireError (reason `result`)."""
    try:
        return CommandResult.model_validate_json(raw)
    except ValidationError as exc:
        raise WireError(f"invalid command result: {_first(exc)}", reason="result") from exc


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
