"""The collector's acknowledgement to an agent: which batches are committed, which rejected.

An agent deletes a batch from its buffer only on this acknowledgement, never on the broker's
PUBACK, which does not mean the data is stored anywhere durable. Version 2 adds the readings
refused from batches that were otherwise stored; agents accept both versions. Version 2 may
also list batches left unstored because they named a tag dictionary the collector lacks
(`dictionary`); it is sent only when that list is not empty, so other acks keep their bytes.
"""

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import WireError

AckVersion = Literal[1, 2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rejection(_Strict):
    """A batch the collector quarantined whole instead of storing."""

    batch: int = Field(description="Batch id.")
    error: str = Field(description="Why it was not stored (it is kept in dead_letters).")
    reason: str | None = Field(
        default=None, description="Short reason label, as in the collector's metrics (v2)."
    )


class Refusal(_Strict):
    """Readings refused from a batch whose other readings were stored (v2)."""

    batch: int = Field(description="Batch id; the batch is also listed in `stored`.")
    readings: dict[str, int] = Field(
        description="Refused readings by reason label (kept in dead_letters)."
    )


class AckPayload(_Strict):
    """Acknowledgement, published on <prefix>/v1/<agent>/ack at QoS 1."""

    v: AckVersion = Field(description="Format version: 1, or 2 with reasons and refusals.")
    epoch: int = Field(description="The agent's buffer epoch the batch ids belong to.")
    stored: list[int] = Field(default_factory=list, description="Committed batch ids.")
    rejected: list[Rejection] = Field(default_factory=list, description="Quarantined batches.")
    refused: list[Refusal] = Field(
        default_factory=list, description="Readings refused from stored batches (v2)."
    )
    dictionary: list[int] = Field(
        default_factory=list,
        description=(
            "Batch ids not stored because their tag dictionary is unknown; send them again"
            " with the dictionary (v2, only when not empty)."
        ),
    )


def encode_ack(
    epoch: int,
    stored: list[int],
    rejected: list[Rejection] | None = None,
    refused: list[Refusal] | None = None,
    *,
    dictionary: list[int] | None = None,
    version: AckVersion = 2,
) -> bytes:
    """Serialise an acknowledgement; version 1 leaves out what only version 2 can say."""
    rejected = rejected or []
    if version == 1:
        rejected = [Rejection(batch=r.batch, error=r.error) for r in rejected]
        payload = AckPayload(v=1, epoch=epoch, stored=stored, rejected=rejected)
        return payload.model_dump_json(
            exclude={"refused", "dictionary"}, exclude_none=True
        ).encode()
    payload = AckPayload(
        v=2,
        epoch=epoch,
        stored=stored,
        rejected=rejected,
        refused=refused or [],
        dictionary=dictionary or [],
    )
    leave_out = set() if dictionary else {"dictionary"}
    return payload.model_dump_json(exclude=leave_out, exclude_none=True).encode()


def decode_ack(raw: bytes) -> AckPayload:
    """Parse an acknowledgement of either version or raise WireError."""
    try:
        ack = AckPayload.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise WireError(f"invalid acknowledgement: {exc}", reason="ack") from exc
    if ack.v == 1 and (
        ack.refused or ack.dictionary or any(r.reason is not None for r in ack.rejected)
    ):
        raise WireError(
            "invalid acknowledgement: v1 carries no refusals, reasons or dictionary requests",
            reason="ack",
        )
    return ack
