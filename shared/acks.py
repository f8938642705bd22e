"""The collector's acknowledgement to an agent: which batches are committed, which rejected.

An agent deletes a batch from its buffer only on this acknowledgement, never on the broker's
PUBACK, which does not mean the data is stored anywhere durable.
"""

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import WireError


class Rejection(BaseModel):
    """A batch the collector quarantined instead of storing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(description="Batch id.")
    error: str = Field(description="Why it was not stored (it is kept in dead_letters).")


class AckPayload(BaseModel):
    """Version 1 acknowledgement, published on <prefix>/v1/<agent>/ack at QoS 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(description="Format version.")
    epoch: int = Field(description="The agent's buffer epoch the batch ids belong to.")
    stored: list[int] = Field(default_factory=list, description="Committed batch ids.")
    rejected: list[Rejection] = Field(default_factory=list, description="Quarantined batches.")


def encode_ack(epoch: int, stored: list[int], rejected: list[Rejection] | None = None) -> bytes:
    """Serialise an acknowledgement."""
    payload = AckPayload(v=1, epoch=epoch, stored=stored, rejected=rejected or [])
    return payload.model_dump_json().encode()


def decode_ack(raw: bytes) -> AckPayload:
    """Parse an acknowledgement or raise WireError."""
    try:
        return AckPayload.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise WireError(f"invalid acknowledgement: {exc}", reason="ack") from exc
