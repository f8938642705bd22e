"""The MQTT wire format between agents and collectors: topics and the versioned batch payload.

docs/protocol.md is the prose version of this module; keep them in step.
"""

import json
import re
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.errors import WireError
from shared.readings import DataType, Reading

WIRE_VERSION = 2
MAGIC = b"PWB"
_PREAMBLE = struct.Struct("<3sBI")  # magic, version, header length
_INT_EXACT = 2**53  # integers beyond this travel as text: a double cannot hold them
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_AGENT_ID = re.compile(AGENT_ID_PATTERN)

# Plausible source timestamps: from 2000-01-01 to 2100-01-01, in microseconds.
MIN_TS_US = 946_684_800_000_000
MAX_TS_US = 4_102_444_800_000_000

AgentId = Annotated[str, StringConstraints(pattern=AGENT_ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix; the agent id is always the third level."""

    prefix: str = "plantwire"

    def batch(self, agent_id: str) -> str:
        """Topic an agent publishes reading batches on."""
        return f"{self.prefix}/v1/{agent_id}/batch"

    def ack(self, agent_id: str) -> str:
        """Topic the collector acknowledges an agent's stored batches on."""
        return f"{self.prefix}/v1/{agent_id}/ack"

    def state(self, agent_id: str) -> str:
        """Retained topic of an agent's birth and death messages."""
        return f"{self.prefix}/v1/{agent_id}/state"

    def heartbeat(self, agent_id: str) -> str:
        """Topic of an agent's periodic health report."""
        return f"{self.prefix}/v1/{agent_id}/heartbeat"

    def all_batches(self) -> str:
        """Subscription filter matching every agent's batch topic."""
        return f"{self.prefix}/v1/+/batch"

    def all_of(self, kind: str) -> str:
        """Subscription filter for one kind of topic (batch, state, heartbeat) of all agents."""
        return f"{self.prefix}/v1/+/{kind}"

    def kind_of(self, topic: str) -> str:
        """The last level of a topic: batch, ack, state or heartbeat."""
        return topic.rsplit("/", 1)[-1]

    def agent_of(self, topic: str) -> str:
        """Return the agent id a topic belongs to, or raise WireError."""
        parts = topic.split("/")
        prefix_parts = self.prefix.split("/")
        if (
            len(parts) != len(prefix_parts) + 3
            or parts[: len(prefix_parts)] != prefix_parts
            or parts[len(prefix_parts)] != "v1"
        ):
            raise WireError(
                f"topic {topic!r} is not under {self.prefix}/v1/<agent>/...", reason="topic"
            )
        agent = parts[len(prefix_parts) + 1]
        if not _AGENT_ID.match(agent):
            raise WireError(f"topic {topic!r} names an invalid agent id", reason="topic")
        return agent


class TagRef(BaseModel):
    """One entry of a batch's tag dictionary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Name
    tag: Name
    type: DataType


class ValueKind(IntEnum):
    """Where a reading's value is: in the `val` column, nowhere, or in the header's `texts`."""

    NUMBER = 0
    NONE = 1
    TEXT = 2


class BatchHeader(BaseModel):
    """The JSON header of a batch: identity, tag dictionary and what the columns hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: AgentId = Field(description="Agent id; must equal the topic's agent level.")
    epoch: int = Field(ge=1, description="Buffer epoch: changes only when the buffer is new.")
    batch: int = Field(ge=1, description="Batch id: the sequence number of its first reading.")
    n: int = Field(ge=1, description="Number of readings, the length of every column.")
    tags: list[TagRef] = Field(min_length=1, description="Tag dictionary referenced by `t`.")
    sts: bool = Field(default=False, description="Whether the server timestamp column is sent.")
    texts: list[str] = Field(
        default_factory=list, description="Values of kind text (strings, huge integers), in order."
    )


@dataclass(frozen=True, slots=True)
class Column:
    """One fixed-width column of the batch body, little-endian."""

    name: str
    code: str  # array / numpy type letter
    size: int


# Body order: the 8-byte columns first, so every column of an aligned body stays aligned.
COLUMNS = (
    Column("ts", "q", 8),
    Column("seq", "q", 8),
    Column("val", "d", 8),
    Column("sts", "q", 8),
    Column("t", "I", 4),
    Column("q", "B", 1),
    Column("kind", "B", 1),
)
NO_SERVER_TS = 0
"""`sts` entry of a reading that has no server timestamp."""


def columns_of(header: BatchHeader) -> tuple[Column, ...]:
    """The columns a batch with this header carries, in body order."""
    return tuple(c for c in COLUMNS if c.name != "sts" or header.sts)


def encode_batch(agent: str, epoch: int, seqs: Sequence[int], readings: Sequence[Reading]) -> bytes:
    """Encode readings and their sequence numbers as a version 2 binary batch."""
    index: dict[tuple[str, str, DataType], int] = {}
    tags: list[dict[str, str]] = []
    column_t = array("I")
    values = array("d")
    kinds = bytearray()
    texts: list[str] = []
    for reading in readings:
        key = (reading.device, reading.tag, reading.data_type)
        position = index.get(key)
        if position is None:
            position = index[key] = len(tags)
            tags.append({"device": reading.device, "tag": reading.tag, "type": reading.data_type})
        column_t.append(position)
        value = reading.value
        if value is None:
            values.append(0.0)
            kinds.append(ValueKind.NONE)
        elif isinstance(value, str) or (type(value) is int and abs(value) > _INT_EXACT):
            values.append(0.0)
            kinds.append(ValueKind.TEXT)
            texts.append(str(value))
        else:
            values.append(value)
            kinds.append(ValueKind.NUMBER)
    has_sts = any(r.server_ts_us is not None for r in readings)
    header: dict[str, object] = {
        "agent": agent,
        "epoch": epoch,
        "batch": seqs[0],
        "n": len(readings),
        "tags": tags,
        "sts": has_sts,
    }
    if texts:
        header["texts"] = texts
    encoded = json.dumps(header, separators=(",", ":")).encode()
    # Pad the header with JSON whitespace so the body starts 8-byte aligned.
    encoded += b" " * (-(_PREAMBLE.size + len(encoded)) % 8)
    body: dict[str, array[int] | array[float]] = {
        "ts": array("q", [r.ts_us for r in readings]),
        "seq": array("q", seqs),
        "val": values,
        "sts": array("q", [r.server_ts_us or NO_SERVER_TS for r in readings]),
        "t": column_t,
        "q": array("B", [r.quality for r in readings]),
        "kind": array("B", kinds),
    }
    parts = [_PREAMBLE.pack(MAGIC, WIRE_VERSION, len(encoded)), encoded]
    for column in COLUMNS:
        if column.name == "sts" and not has_sts:
            continue
        data = body[column.name]
        if sys.byteorder == "big":
            data.byteswap()
        parts.append(data.tobytes())
    return b"".join(parts)


def split_payload(raw: bytes) -> tuple[BatchHeader, memoryview]:
    """Check a batch's preamble and header; return the header and the column body."""
    if len(raw) < _PREAMBLE.size or raw[:3] != MAGIC:
        raise WireError("payload is not a Plantwire batch (bad magic bytes)", reason="malformed")
    _, version, length = _PREAMBLE.unpack_from(raw)
    if version != WIRE_VERSION:
        raise WireError(
            f"unsupported wire version {version}; expected {WIRE_VERSION}", reason="version"
        )
    end = _PREAMBLE.size + length
    if end > len(raw):
        raise WireError("header runs past the end of the payload", reason="malformed")
    try:
        header = BatchHeader.model_validate_json(raw[_PREAMBLE.size : end])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "header"
        raise WireError(f"header field {where}: {first['msg']}", reason="schema") from exc
    return header, memoryview(raw)[end:]


def batch_identity(raw: bytes) -> tuple[str, int, int] | None:
    """(agent, epoch, batch id) of a payload whose header parses, else None."""
    try:
        header, _ = split_payload(raw)
    except WireError:
        return None
    return header.agent, header.epoch, header.batch
