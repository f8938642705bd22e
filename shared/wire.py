"""The MQTT wire format between agents and collectors: topics and the versioned batch payload.

docs/protocol.md is the prose version of this module; keep them in step.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.errors import WireError
from shared.readings import INTEGER_RANGES, DataType, Quality, Reading, Value

WIRE_VERSION = 1
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


class BatchPayload(BaseModel):
    """A batch of readings, columnar: entry i of every column belongs to reading i."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(description="Wire format version.")
    agent: AgentId = Field(description="Agent id; must equal the topic's agent level.")
    epoch: int = Field(ge=1, description="Buffer epoch: changes only when the buffer is new.")
    batch: int = Field(ge=1, description="Batch id: the sequence number of its first reading.")
    tags: list[TagRef] = Field(description="Tag dictionary referenced by column `t`.")
    t: list[int] = Field(description="Index into `tags` per reading.")
    seq: list[int] = Field(description="Per-agent sequence number per reading, increasing.")
    ts: list[int] = Field(description="Source timestamp per reading, microseconds since epoch.")
    val: list[bool | int | float | str | None] = Field(description="Value per reading.")
    q: list[int] = Field(description="Quality per reading: 0 good, 1 uncertain, 2 bad.")
    sts: list[int | None] | None = Field(
        default=None, description="Server timestamp per reading (OPC UA), or absent."
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded, validated batch, kept in columns: entry i of each column is reading i."""

    agent: str
    epoch: int
    batch_id: int
    tags: Sequence[TagRef]
    t: Sequence[int]
    seqs: Sequence[int]
    ts: Sequence[int]
    values: Sequence[Value | None]
    qualities: Sequence[int]
    server_ts: Sequence[int | None] | None = None

    @property
    def readings(self) -> list[Reading]:
        """The batch as Reading objects (the columns are cheaper where they will do)."""
        tags = self.tags
        server_ts = self.server_ts or [None] * len(self.seqs)
        return [
            Reading(tags[t].device, tags[t].tag, tags[t].type, ts, value, Quality(q), sts)
            for t, ts, value, q, sts in zip(
                self.t, self.ts, self.values, self.qualities, server_ts, strict=True
            )
        ]


def encode_batch(agent: str, epoch: int, seqs: Sequence[int], readings: Sequence[Reading]) -> bytes:
    """Encode readings and their sequence numbers as a version 1 JSON batch."""
    index: dict[tuple[str, str, DataType], int] = {}
    tags: list[dict[str, str]] = []
    column_t: list[int] = []
    for reading in readings:
        key = (reading.device, reading.tag, reading.data_type)
        position = index.get(key)
        if position is None:
            position = index[key] = len(tags)
            tags.append({"device": reading.device, "tag": reading.tag, "type": reading.data_type})
        column_t.append(position)
    document: dict[str, object] = {
        "v": WIRE_VERSION,
        "agent": agent,
        "epoch": epoch,
        "batch": seqs[0],
        "tags": tags,
        "t": column_t,
        "seq": list(seqs),
        "ts": [r.ts_us for r in readings],
        "val": [r.value for r in readings],
        "q": [int(r.quality) for r in readings],
    }
    if any(r.server_ts_us is not None for r in readings):
        document["sts"] = [r.server_ts_us for r in readings]
    return json.dumps(document, separators=(",", ":"), allow_nan=True).encode()


_FLOATS = (DataType.FLOAT32, DataType.FLOAT64)


def _check_values(
    tags: Sequence[TagRef], t: Sequence[int], values: list[Value | None], q: Sequence[int]
) -> None:
    """Check every value against its tag's type (in place: JSON's 3 for a float becomes 3.0)."""
    kinds = []
    for tag in tags:
        low, high = INTEGER_RANGES.get(tag.type, (0, 0))
        kinds.append((tag.type.python_type, low, high, tag.type))
    for i, (position, value) in enumerate(zip(t, values, strict=True)):
        if value is None:
            if q[i] != Quality.BAD:
                raise WireError(f"reading {i}: a missing value needs quality bad", reason="reading")
            continue
        expected, low, high, data_type = kinds[position]
        kind = type(value)
        if kind is expected and (expected is not int or low <= value <= high):  # type: ignore[operator]
            continue
        if expected is float and kind is int:
            values[i] = float(value)  # JSON writes 3.0 as 3
            continue
        raise WireError(
            f"reading {i}: value {value!r} is not a valid {data_type.value}", reason="reading"
        )


def _check_range(name: str, column: Sequence[int], low: int, high: int, reason: str) -> None:
    if column and (min(column) < low or max(column) >= high):
        bad = next(i for i, x in enumerate(column) if not low <= x < high)
        raise WireError(
            f"reading {bad}: {name} {column[bad]} is outside {low}..{high - 1}"
            if reason != "timestamp"
            else f"reading {bad}: {name} {column[bad]} is outside 2000..2100",
            reason=reason,
        )


def decode_batch(raw: bytes, topic_agent: str) -> Batch:
    """Parse and validate a batch payload; raise WireError saying what is wrong."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"payload is not JSON: {exc}", reason="not_json") from exc
    if isinstance(document, dict) and document.get("v") != WIRE_VERSION:
        raise WireError(
            f"unsupported wire version {document.get('v')!r}; expected {WIRE_VERSION}",
            reason="version",
        )
    try:
        payload = BatchPayload.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise WireError(f"payload field {where}: {first['msg']}", reason="schema") from exc
    if payload.agent != topic_agent:
        raise WireError(
            f"payload agent {payload.agent!r} differs from topic agent {topic_agent!r}",
            reason="agent_mismatch",
        )
    count = len(payload.seq)
    if count == 0:
        raise WireError("batch has no readings", reason="schema")
    lengths = {len(payload.t), len(payload.ts), len(payload.val), len(payload.q)}
    if payload.sts is not None:
        lengths.add(len(payload.sts))
    if lengths != {count}:
        raise WireError("columns t, seq, ts, val, q and sts differ in length", reason="schema")
    if payload.seq[0] != payload.batch:
        raise WireError("batch id must equal the first sequence number", reason="schema")
    if any(b <= a for a, b in zip(payload.seq, payload.seq[1:], strict=False)):
        raise WireError("sequence numbers must increase within a batch", reason="schema")
    _check_range("tag index", payload.t, 0, len(payload.tags), "reading")
    _check_range("timestamp", payload.ts, MIN_TS_US, MAX_TS_US, "timestamp")
    if payload.sts is not None:
        present = [x for x in payload.sts if x is not None]
        _check_range("server timestamp", present, MIN_TS_US, MAX_TS_US, "timestamp")
    _check_range("quality", payload.q, 0, 3, "schema")
    values = list(payload.val)
    _check_values(payload.tags, payload.t, values, payload.q)
    return Batch(
        payload.agent,
        payload.epoch,
        payload.batch,
        payload.tags,
        payload.t,
        payload.seq,
        payload.ts,
        values,
        payload.q,
        payload.sts,
    )
