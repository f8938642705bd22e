"""Decoding and validating binary batches into numpy columns, with every check per batch."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shared.errors import WireError
from shared.readings import INTEGER_RANGES, DataType, Quality, Reading, Value
from shared.wire import (
    MAX_TS_US,
    MIN_TS_US,
    NO_SERVER_TS,
    BatchHeader,
    TagRef,
    ValueKind,
    columns_of,
    split_payload,
)

_INT_EXACT = float(2**53)
_DECIMAL = re.compile(r"-?[0-9]{1,20}")
_FLOATS = (DataType.FLOAT32, DataType.FLOAT64)


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded, validated batch, kept in columns: entry i of each column is reading i."""

    agent: str
    epoch: int
    batch_id: int
    tags: Sequence[TagRef]
    t: NDArray[np.uint32]
    seqs: NDArray[np.int64]
    ts: NDArray[np.int64]
    values: NDArray[np.float64]
    kinds: NDArray[np.uint8]
    qualities: NDArray[np.uint8]
    texts: Sequence[str]
    server_ts: NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def last_seq(self) -> int:
        """Sequence number of the batch's last reading."""
        return int(self.seqs[-1])

    @property
    def readings(self) -> list[Reading]:
        """The batch as Reading objects (the columns are far cheaper where they will do)."""
        texts = iter(self.texts)
        out = []
        for i in range(len(self)):
            ref = self.tags[int(self.t[i])]
            kind = self.kinds[i]
            value: Value | None = None
            if kind == ValueKind.TEXT:
                text = next(texts)
                value = text if ref.type is DataType.STRING else int(text)
            elif kind == ValueKind.NUMBER:
                value = typed_value(ref.type, float(self.values[i]))
            sts = None if self.server_ts is None else int(self.server_ts[i])
            out.append(
                Reading(
                    ref.device,
                    ref.tag,
                    ref.type,
                    int(self.ts[i]),
                    value,
                    Quality(int(self.qualities[i])),
                    None if sts == NO_SERVER_TS else sts,
                )
            )
        return out


def typed_value(data_type: DataType, number: float) -> Value:
    """A number from the value column as its tag's Python type."""
    if data_type is DataType.BOOL:
        return number != 0.0
    if data_type in _FLOATS:
        return number
    return int(number)


def decode_batch(raw: bytes, topic_agent: str) -> Batch:
    """Parse and validate a batch payload; raise WireError saying what is wrong."""
    header, body = split_payload(raw)
    if header.agent != topic_agent:
        raise WireError(
            f"payload agent {header.agent!r} differs from topic agent {topic_agent!r}",
            reason="agent_mismatch",
        )
    n = header.n
    columns = columns_of(header)
    if len(body) != n * sum(c.size for c in columns):
        raise WireError(
            f"body has {len(body)} bytes; {n} readings of these columns need"
            f" {n * sum(c.size for c in columns)}",
            reason="schema",
        )
    arrays: dict[str, NDArray[np.generic]] = {}
    offset = 0
    for column in columns:
        arrays[column.name] = np.frombuffer(
            body, np.dtype(column.code).newbyteorder("<"), n, offset
        )
        offset += n * column.size
    seqs = arrays["seq"].astype(np.int64, copy=False)
    t = arrays["t"].astype(np.uint32, copy=False)
    ts = arrays["ts"].astype(np.int64, copy=False)
    values = arrays["val"].astype(np.float64, copy=False)
    qualities = arrays["q"].astype(np.uint8, copy=False)
    kinds = arrays["kind"].astype(np.uint8, copy=False)
    server_ts = arrays["sts"].astype(np.int64, copy=False) if header.sts else None

    if seqs[0] != header.batch:
        raise WireError("batch id must equal the first sequence number", reason="schema")
    _first_failure(seqs[1:] <= seqs[:-1], "sequence numbers must increase within a batch", "schema")
    _first_failure(t >= len(header.tags), "tag index outside the dictionary", "reading")
    _first_failure(
        (ts < MIN_TS_US) | (ts >= MAX_TS_US), "timestamp outside 2000..2100", "timestamp"
    )
    if server_ts is not None:
        outside = (server_ts != NO_SERVER_TS) & ((server_ts < MIN_TS_US) | (server_ts >= MAX_TS_US))
        _first_failure(outside, "server timestamp outside 2000..2100", "timestamp")
    _first_failure(qualities > Quality.BAD, "quality is not 0, 1 or 2", "schema")
    _first_failure(kinds > ValueKind.TEXT, "value kind is not 0, 1 or 2", "schema")
    _first_failure(
        (kinds == ValueKind.NONE) & (qualities != Quality.BAD),
        "a missing value needs quality bad",
        "reading",
    )
    _check_values(header, t, values, kinds)
    return Batch(
        header.agent,
        header.epoch,
        header.batch,
        header.tags,
        t,
        seqs,
        ts,
        values,
        kinds,
        qualities,
        header.texts,
        server_ts,
    )


def _check_values(
    header: BatchHeader,
    t: NDArray[np.uint32],
    values: NDArray[np.float64],
    kinds: NDArray[np.uint8],
) -> None:
    """Check every value against its tag's type, by table lookups over whole columns."""
    types = [ref.type for ref in header.tags]
    low = np.array([INTEGER_RANGES.get(x, (0, 0))[0] for x in types], np.float64)
    high = np.array([INTEGER_RANGES.get(x, (0, 0))[1] for x in types], np.float64)
    is_float = np.array([x in _FLOATS for x in types])
    is_bool = np.array([x is DataType.BOOL for x in types])
    is_string = np.array([x is DataType.STRING for x in types])
    is_wide = np.array([x in (DataType.INT64, DataType.UINT64) for x in types])
    low[is_bool], high[is_bool] = 0.0, 1.0
    low[is_wide] = np.maximum(low[is_wide], -_INT_EXACT)
    high[is_wide] = np.minimum(high[is_wide], _INT_EXACT)

    number = kinds == ValueKind.NUMBER
    with np.errstate(invalid="ignore"):
        whole = (values >= low[t]) & (values <= high[t]) & (np.floor(values) == values)
    fits = np.where(is_float[t], True, whole & ~is_string[t])
    _first_failure(number & ~fits, "value is not valid for its tag's data type", "reading")

    text = np.flatnonzero(kinds == ValueKind.TEXT)
    if len(text) != len(header.texts):
        raise WireError(
            f"{len(text)} readings say their value is text but the header has"
            f" {len(header.texts)} texts",
            reason="schema",
        )
    for i, value in zip(text.tolist(), header.texts, strict=True):
        data_type = types[int(t[i])]
        if data_type is DataType.STRING:
            continue
        if data_type in INTEGER_RANGES and is_wide[int(t[i])]:
            lo, hi = INTEGER_RANGES[data_type]
            if _DECIMAL.fullmatch(value) and lo <= int(value) <= hi:
                continue
        raise WireError(
            f"reading {i}: value {value!r} is not a valid {data_type.value}", reason="reading"
        )


def _first_failure(bad: NDArray[np.bool_], message: str, reason: str) -> None:
    """Raise for the first reading where `bad` holds, naming it."""
    if bad.any():
        raise WireError(f"reading {int(np.argmax(bad))}: {message}", reason=reason)
