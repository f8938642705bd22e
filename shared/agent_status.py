"""Agent health on the wire: birth and death (retained, on the state topic) and heartbeats."""

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import WireError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatePayload(_Strict):
    """Birth (online, sent on every connect) or death (offline: the last will, or a clean stop)."""

    v: Literal[1] = Field(description="Format version.")
    status: Literal["online", "offline"] = Field(description="Whether the agent is running.")
    version: str = Field(description="Agent software version.")
    config_hash: str = Field(description="SHA-256 of the agent's configuration file.")
    devices: list[str] = Field(description="Configured device names.")
    epoch: int = Field(description="Buffer epoch.")


class BufferHealth(_Strict):
    """The buffer part of a heartbeat."""

    readings: int = Field(description="Readings held.")
    oldest_age_s: float | None = Field(description="Age of the oldest unconfirmed reading.")
    in_flight: int = Field(description="Batches sent and not yet confirmed.")
    dropped_oldest: int = Field(description="Readings dropped by drop_oldest, ever.")
    dropped_newest: int = Field(description="Readings refused by drop_newest, ever.")
    used_bytes: int = Field(description="Bytes of buffer pages in use.")
    state: Literal["ok", "failing"] = Field(
        default="ok", description="failing while the buffer file cannot be written."
    )
    error: str | None = Field(default=None, description="Why it is failing, if it is.")


class HeartbeatPayload(_Strict):
    """Periodic health report."""

    v: Literal[1] = Field(description="Format version.")
    ts: int = Field(description="Time of the report, microseconds since the Unix epoch.")
    buffer: BufferHealth
    devices: dict[str, str] = Field(description="Connection state per device.")
    readings_acknowledged: int = Field(description="Readings confirmed by a collector, this run.")
    failing_tasks: list[str] = Field(
        default_factory=list, description="The agent's tasks that crashed and keep failing."
    )


def decode_state(raw: bytes) -> StatePayload:
    """Parse a birth or death message or raise WireError."""
    try:
        return StatePayload.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise WireError(f"invalid state message: {exc}", reason="state") from exc


def decode_heartbeat(raw: bytes) -> HeartbeatPayload:
    """Parse a heartbeat or raise WireError."""
    try:
        return HeartbeatPayload.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise WireError(f"invalid heartbeat: {exc}", reason="heartbeat") from exc
