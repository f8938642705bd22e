"""Decoding and validating binary batches into numpy columns, with every check per batch."""

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shared.errors import WireError
from shared.readings import INTEGER_RANGES, DataType, Quality, Reading, Value
from shared.wire import (
    INT_EXACT,
    MAX_TS_US,
    MIN_TS_US,
    NO_SERVER_TS,
    BatchHeader,
    TagDictionary,
    TagRef,
    ValueKind,
    columns_of,
    parse_dictionary,
    split_payload,
)

_DECIMAL = re.compile(r"-?[0-9]{1,20}")
_FLOATS = (DataType.FLOAT32, DataType.FLOAT64)
_WIDE = (DataType.INT64, DataType.UINT64)

# Per data type (by position in DataType): the numeric range a NUMBER value must lie in, and
# the type's class. Integers a double cannot hold exactly travel as text instead.
_TYPE_CODE = {data_type: code for code, data_type in enumerate(DataType)}
_LOW = np.array(
    [max(INTEGER_RANGES.get(x, (0, 1))[0], -float(INT_EXACT)) for x in DataType], np.float64
)
_HIGH = np.array(
    [min(INTEGER_RANGES.get(x, (0, 1))[1], float(INT_EXACT)) for x in DataType], np.float64
)
_IS_FLOAT = np.array([x in _FLOATS for x in DataType])
_IS_STRING = np.array([x is DataType.STRING for x in DataType])
_IS_WIDE = np.array([x in _WIDE for x in DataType])


@dataclass(frozen=True, slots=True, eq=False)
class TagTable:
    """A parsed tag dictionary with per-tag lookup tables for checking values column-wise."""

    raw: bytes
    refs: tuple[TagRef, ...]
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    is_float: NDArray[np.bool_]
    is_string: NDArray[np.bool_]
    is_wide: NDArray[np.bool_]
    all_float: bool

    @classmethod
    def parse(cls, raw: bytes) -> "TagTable":
        """Parse a dictionary section and build its tables."""
        return cls.build(raw, parse_dictionary(raw))

    @classmethod
    def build(cls, raw: bytes, dictionary: TagDictionary) -> "TagTable":
        """Build the tables of a parsed dictionary; `raw` is its cache key."""
        codes = np.fromiter(map(_TYPE_CODE.__getitem__, dictionary.type), np.uint8)
        return cls(
            raw,
            tuple(dictionary.refs),
            _LOW[codes],
            _HIGH[codes],
            _IS_FLOAT[codes],
            _IS_STRING[codes],
            _IS_WIDE[codes],
            bool(_IS_FLOAT[codes].all()),
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded, validated batch, kept in columns: entry i of each column is reading i."""

    agent: str
    epoch: int
    batch_id: int
    tags: TagTable
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
            ref = self.tags.refs[int(self.t[i])]
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


class BatchDecoder:
    """Decodes batches, parsing each distinct tag dictionary once (agents resend the same one)."""

    def __init__(self, cache_size: int = 512) -> None:
        self._tables: OrderedDict[bytes, TagTable] = OrderedDict()
        self._cache_size = cache_size

    def decode(self, raw: bytes, topic_agent: str) -> Batch:
        """Parse and validate a batch payload; raise WireError saying what is wrong."""
        sections = split_payload(raw)
        header = sections.header
        if header.agent != topic_agent:
            raise WireError(
                f"payload agent {header.agent!r} differs from topic agent {topic_agent!r}",
                reason="agent_mismatch",
            )
        tags = self._table(sections.dictionary)
        batch = _columns(header, tags, sections.body)
        check_batch(batch)
        return batch

    def _table(self, raw: bytes) -> TagTable:
        table = self._tables.get(raw)
        if table is None:
            table = self._tables[raw] = TagTable.parse(raw)
            if len(self._tables) > self._cache_size:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(raw)
        return table


def decode_batch(raw: bytes, topic_agent: str) -> Batch:
    """Decode one payload without a dictionary cache (tests, tools)."""
    return BatchDecoder(cache_size=0).decode(raw, topic_agent)


def _columns(header: BatchHeader, tags: TagTable, body: memoryview) -> Batch:
    """Views of the body's columns, after checking its length."""
    n = header.n
    columns = columns_of(header)
    expected = n * sum(c.size for c in columns)
    if len(body) != expected:
        raise WireError(
            f"body has {len(body)} bytes; {n} readings of these columns need {expected}",
            reason="schema",
        )
    arrays: dict[str, NDArray[np.generic]] = {}
    offset = 0
    for column in columns:
        dtype = np.dtype(column.code).newbyteorder("<")
        arrays[column.name] = np.frombuffer(body, dtype, n, offset)
        offset += n * column.size
    return Batch(
        header.agent,
        header.epoch,
        header.batch,
        tags,
        arrays["t"].astype(np.uint32, copy=False),
        arrays["seq"].astype(np.int64, copy=False),
        arrays["ts"].astype(np.int64, copy=False),
        arrays["val"].astype(np.float64, copy=False),
        arrays["kind"].astype(np.uint8, copy=False),
        arrays["q"].astype(np.uint8, copy=False),
        header.texts,
        arrays["sts"].astype(np.int64, copy=False) if header.sts else None,
    )


def check_batch(batch: Batch) -> None:
    """Raise WireError unless every column and value of a batch is valid."""
    _check_columns(batch)
    _check_values(batch)


def _check_columns(batch: Batch) -> None:
    """Sequence, tag index, timestamp, quality and kind checks over whole columns."""
    seqs, ts, qualities, kinds = batch.seqs, batch.ts, batch.qualities, batch.kinds
    if seqs[0] != batch.batch_id:
        raise WireError("batch id must equal the first sequence number", reason="schema")
    _first_failure(seqs[1:] <= seqs[:-1], "sequence numbers must increase within a batch", "schema")
    _first_failure(batch.t >= len(batch.tags.refs), "tag index outside the dictionary", "reading")
    outside = (ts < MIN_TS_US) | (ts >= MAX_TS_US)
    _first_failure(outside, "timestamp outside 2000..2100", "timestamp")
    if batch.server_ts is not None:
        sts = batch.server_ts
        outside = (sts != NO_SERVER_TS) & ((sts < MIN_TS_US) | (sts >= MAX_TS_US))
        _first_failure(outside, "server timestamp outside 2000..2100", "timestamp")
    _first_failure(qualities > Quality.BAD, "quality is not 0, 1 or 2", "schema")
    _first_failure(kinds > ValueKind.TEXT, "value kind is not 0, 1 or 2", "schema")
    _first_failure(
        (kinds == ValueKind.NONE) & (qualities != Quality.BAD),
        "a missing value needs quality bad",
        "reading",
    )


def _check_values(batch: Batch) -> None:
    """Check every value against its tag's type, by table lookups over whole columns."""
    tags, t, values, kinds = batch.tags, batch.t, batch.values, batch.kinds
    if not tags.all_float:  # any number is a valid float: most batches stop here
        with np.errstate(invalid="ignore"):
            whole = (values >= tags.low[t]) & (values <= tags.high[t])
            whole &= np.floor(values) == values
        fits = np.where(tags.is_float[t], True, whole & ~tags.is_string[t])
        bad = (kinds == ValueKind.NUMBER) & ~fits
        _first_failure(bad, "value is not valid for its tag's data type", "reading")
    text = np.flatnonzero(kinds == ValueKind.TEXT)
    if len(text) != len(batch.texts):
        raise WireError(
            f"{len(text)} readings say their value is text but the header has"
            f" {len(batch.texts)} texts",
            reason="schema",
        )
    for i, value in zip(text.tolist(), batch.texts, strict=True):
        ref = tags.refs[int(t[i])]
        if ref.type is DataType.STRING:
            continue
        if ref.type in _WIDE:
            low, high = INTEGER_RANGES[ref.type]
            if _DECIMAL.fullmatch(value) and low <= int(value) <= high:
                continue
        raise WireError(
            f"reading {i}: value {value!r} is not a valid {ref.type.value}", reason="reading"
        )


def _first_failure(bad: NDArray[np.bool_], message: str, reason: str) -> None:
    """Raise for the first reading where `bad` holds, naming it."""
    if bad.any():
        raise WireError(f"reading {int(np.argmax(bad))}: {message}", reason=reason)
