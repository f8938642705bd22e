"""The MQTT wire format between agents and collectors: topics and the versioned batch payload.

docs/protocol.md is the prose version of this module; keep them in step.
"""

import json
import re
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shared.blocks import NO_SERVER_TS, little_endian, value_columns
from shared.errors import WireError
from shared.readings import DataType, Reading

WIRE_VERSION = 2
WIRE_VERSIONS = (2, 3)  # what collectors accept; agents send 3 unless told to send 2
MAGIC = b"PWB"
PREAMBLE = struct.Struct("<3sBII")  # magic, version, header length, dictionary length
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_AGENT_ID = re.compile(AGENT_ID_PATTERN)

# Plausible source timestamps: from 2000-01-01 to 2100-01-01, in microseconds.
MIN_TS_US = 946_684_800_000_000
MAX_TS_US = 4_102_444_800_000_000

AgentId = Annotated[str, StringConstraints(pattern=AGENT_ID_PATTERN)]
# No control characters: names end up in PostgreSQL text (no NUL), logs and file names.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


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

    def command(self, agent_id: str, command_id: str) -> str:
        """Topic a collector sends one command to an agent on."""
        return f"{self.prefix}/v1/{agent_id}/cmd/{command_id}"

    def commands(self, agent_id: str) -> str:
        """Subscription filter matching every command to an agent."""
        return f"{self.prefix}/v1/{agent_id}/cmd/+"

    def result(self, agent_id: str) -> str:
        """Topic an agent publishes the results of commands on."""
        return f"{self.prefix}/v1/{agent_id}/result"

    def all_batches(self) -> str:
        """Subscription filter matching every agent's batch topic."""
        return f"{self.prefix}/v1/+/batch"

    def all_of(self, kind: str) -> str:
        """Subscription filter for one kind of topic (batch, state, heartbeat) of all agents."""
        return f"{self.prefix}/v1/+/{kind}"

    def kind_of(self, topic: str) -> str:
        """The last level of a topic: batch, ack, state, heartbeat or result."""
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


class TagRef(NamedTuple):
    """One entry of a batch's tag dictionary (checked as part of TagDictionary)."""

    device: str
    tag: str
    type: DataType


class TagDictionary(BaseModel):
    """A batch's tag dictionary, columnar: entry i of each list describes tag index i."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: list[Name] = Field(min_length=1, description="Device name per tag.")
    name: list[Name] = Field(min_length=1, description="Tag name per tag.")
    type: list[DataType] = Field(min_length=1, description="Data type per tag.")

    @model_validator(mode="after")
    def _same_lengths(self) -> "TagDictionary":
        if not len(self.device) == len(self.name) == len(self.type):
            raise ValueError("device, name and type differ in length")
        return self

    @property
    def refs(self) -> list[TagRef]:
        """The entries as TagRef objects, by tag index."""
        return list(map(TagRef, self.device, self.name, self.type))


class BatchIdentity(BaseModel):
    """What every version's header says first: whose batch it is, and how many readings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: AgentId = Field(description="Agent id; must equal the topic's agent level.")
    epoch: int = Field(ge=1, description="Buffer epoch: changes only when the buffer is new.")
    batch: int = Field(ge=1, description="Batch id: the sequence number of its first reading.")
    n: int = Field(ge=1, description="Number of readings, the length of every column.")


class BatchHeader(BatchIdentity):
    """The JSON header of a version 2 batch: identity and what the columns hold."""

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


def columns_of(header: BatchHeader) -> tuple[Column, ...]:
    """The columns a batch with this header carries, in body order."""
    return tuple(c for c in COLUMNS if c.name != "sts" or header.sts)


def encode_batch(agent: str, epoch: int, seqs: Sequence[int], readings: Sequence[Reading]) -> bytes:
    """Encode readings and their sequence numbers as a version 2 binary batch."""
    # Sorted, so batches over the same tags carry byte-identical dictionaries a collector
    # parses once.
    keys = sorted({(r.device, r.tag, r.data_type) for r in readings})
    index = {key: i for i, key in enumerate(keys)}
    column_t = array("I", [index[(r.device, r.tag, r.data_type)] for r in readings])
    values, kinds, texts = value_columns(readings)
    has_sts = any(r.server_ts_us is not None for r in readings)
    header: dict[str, object] = {
        "agent": agent,
        "epoch": epoch,
        "batch": seqs[0],
        "n": len(readings),
        "sts": has_sts,
    }
    if texts:
        header["texts"] = texts
    encoded_header = json.dumps(header, separators=(",", ":")).encode()
    dictionary = json.dumps(
        {
            "device": [k[0] for k in keys],
            "name": [k[1] for k in keys],
            "type": [k[2] for k in keys],
        },
        separators=(",", ":"),
    ).encode()
    # Pad with JSON whitespace so the body starts 8-byte aligned.
    dictionary += b" " * (-(PREAMBLE.size + len(encoded_header) + len(dictionary)) % 8)
    body: dict[str, array[int] | array[float]] = {
        "ts": array("q", [r.ts_us for r in readings]),
        "seq": array("q", seqs),
        "val": values,
        "t": column_t,
        "q": array("B", [r.quality for r in readings]),
        "kind": array("B", kinds),
    }
    if has_sts:
        body["sts"] = array("q", [r.server_ts_us or NO_SERVER_TS for r in readings])
    parts = [
        PREAMBLE.pack(MAGIC, WIRE_VERSION, len(encoded_header), len(dictionary)),
        encoded_header,
        dictionary,
    ]
    parts.extend(little_endian(body[c.name]) for c in COLUMNS if c.name in body)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Sections:
    """A payload cut into its parts; the dictionary is still raw JSON, to be parsed once."""

    header: BatchHeader
    dictionary: bytes
    body: memoryview


def payload_version(raw: bytes) -> int:
    """The wire version of a batch payload, after checking its magic bytes."""
    if len(raw) < PREAMBLE.size or raw[:3] != MAGIC:
        raise WireError("payload is not a Plantwire batch (bad magic bytes)", reason="malformed")
    version: int = raw[3]
    if version not in WIRE_VERSIONS:
        versions = " or ".join(map(str, WIRE_VERSIONS))
        raise WireError(
            f"unsupported wire version {version}; expected {versions}", reason="version"
        )
    return version


def split_payload(raw: bytes) -> Sections:
    """Check a version 2 batch's preamble and header; return header, raw dictionary and body."""
    if payload_version(raw) != WIRE_VERSION:
        raise WireError(f"expected wire version {WIRE_VERSION}, not {raw[3]}", reason="version")
    _, _, header_length, dictionary_length = PREAMBLE.unpack_from(raw)
    header_end = PREAMBLE.size + header_length
    body_start = header_end + dictionary_length
    if body_start > len(raw):
        raise WireError("header or dictionary runs past the end", reason="malformed")
    header = read_header(raw, header_end, BatchHeader)
    return Sections(header, raw[header_end:body_start], memoryview(raw)[body_start:])


HeaderT = TypeVar("HeaderT", bound=BaseModel)


def read_header(raw: bytes, header_end: int, model: type[HeaderT]) -> HeaderT:
    """Validate the JSON header that follows the preamble, or raise WireError (schema)."""
    try:
        return model.model_validate_json(raw[PREAMBLE.size : header_end])
    except ValidationError as exc:
        raise schema_error("header", exc) from exc


def parse_dictionary(raw: bytes) -> TagDictionary:
    """Parse and check a batch's tag dictionary section."""
    try:
        return TagDictionary.model_validate_json(raw)
    except ValidationError as exc:
        raise schema_error("dictionary", exc) from exc


def schema_error(section: str, exc: ValidationError) -> WireError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    label = f"{section} field {where}" if where else section
    return WireError(f"{label}: {first['msg']}", reason="schema")


class _Identity(BatchIdentity):
    """Any version's header, read only for its identity."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def batch_identity(raw: bytes) -> tuple[str, int, int, int] | None:
    """(agent, epoch, batch id, readings) of a payload whose header parses, else None."""
    try:
        payload_version(raw)
        _, _, header_length, _ = PREAMBLE.unpack_from(raw)
        header = _Identity.model_validate_json(raw[PREAMBLE.size : PREAMBLE.size + header_length])
    except (WireError, ValidationError):
        return None
    return header.agent, header.epoch, header.batch, header.n
