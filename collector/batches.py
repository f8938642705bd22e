"""Decoding and validating binary batches into numpy columns, with every check per batch."""

import re
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from collector.batches_v3 import expand_v3
from shared.blocks import INT_EXACT, NO_SERVER_TS, ValueKind, typed_value
from shared.errors import WireError
from shared.readings import INTEGER_RANGES, DataType, Quality, Reading, Value
from shared.wire import (
    MAX_TS_US,
    MIN_TS_US,
    BatchHeader,
    TagDictionary,
    TagRef,
    columns_of,
    parse_dictionary,
    payload_version,
    split_payload,
)
from shared.wire_v3 import WIRE_V3, SectionsV3, dictionary_hash, split_v3

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
class Refused:
    """Readings of a batch refused one by one (the batch keeps its raw payload for them)."""

    idx: list[int]
    seqs: list[int]
    reasons: list[str]
    errors: list[str]

    def counts(self) -> dict[str, int]:
        """Refused readings by reason."""
        return dict(Counter(self.reasons))


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded, validated batch, kept in columns: entry i of each column is reading i.

    When some readings were refused, the columns hold only the others, and `refused` says
    which were refused and why.
    """

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
    last_seq: int = 0
    refused: Refused | None = None
    topic: str = ""
    raw: bytes = b""
    dictionary: str = ""
    """Hash of the tag dictionary a version 3 batch names (empty for version 2)."""

    def __len__(self) -> int:
        return len(self.seqs)

    def select(self, keep: NDArray[np.bool_], refused: Refused | None) -> "Batch":
        """The batch with only the readings where `keep` holds."""
        text_at = np.flatnonzero(self.kinds == ValueKind.TEXT)
        texts = [text for i, text in zip(text_at.tolist(), self.texts, strict=True) if keep[i]]
        return replace(
            self,
            t=self.t[keep],
            seqs=self.seqs[keep],
            ts=self.ts[keep],
            values=self.values[keep],
            kinds=self.kinds[keep],
            qualities=self.qualities[keep],
            texts=texts,
            server_ts=None if self.server_ts is None else self.server_ts[keep],
            refused=refused,
        )

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


Found = list[tuple[int, str, str]]
"""Refused readings: (index, reason, error)."""


def check_size(payload: bytes, limit: int) -> None:
    """Raise WireError (too_large) for a payload longer than `limit` bytes."""
    if len(payload) > limit:
        raise WireError(f"payload of {len(payload)} bytes exceeds {limit}", reason="too_large")


class UnknownDictionary(WireError):
    """A version 3 batch names a tag dictionary this collector has not seen (and was not sent)."""

    def __init__(self, agent: str, dict_hash: str, epoch: int, batch_id: int) -> None:
        super().__init__(
            f"batch {batch_id} names tag dictionary {dict_hash}, which is unknown here",
            reason="dictionary",
        )
        self.agent = agent
        self.hash = dict_hash
        self.epoch = epoch
        self.batch_id = batch_id


DictionaryLoader = Callable[[str, str], Awaitable[bytes | None]]
"""Looks up an agent's tag dictionary by its hash elsewhere (PostgreSQL); None if unknown."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Source and server timestamps a reading may carry, in microseconds since the epoch."""

    oldest_us: int = MIN_TS_US
    newest_us: int = MAX_TS_US

    def describe(self) -> str:
        """The window as text, for error messages."""
        return f"{_iso(self.oldest_us)}..{_iso(self.newest_us)}"


class BatchDecoder:
    """Decodes batches, parsing each distinct tag dictionary once (agents resend the same one)."""

    def __init__(
        self,
        cache_size: int = 512,
        window: TimeWindow | None = None,
        max_inflated_bytes: int | None = None,
    ) -> None:
        """`max_inflated_bytes` bounds a version 3 batch's dictionary and body once inflated."""
        self._tables: OrderedDict[bytes, TagTable] = OrderedDict()
        # Version 3 dictionaries by (agent, hash): batches name them without sending them.
        self._dictionaries: OrderedDict[tuple[str, str], TagTable] = OrderedDict()
        self._cache_size = cache_size
        self._window = window or TimeWindow()
        self._max_inflated = max_inflated_bytes

    def decode(self, raw: bytes, topic_agent: str, topic: str = "") -> Batch:
        """Parse and validate a batch payload.

        A payload that cannot be read as a batch raises WireError saying what is wrong;
        readings that fail their own checks are left out of the columns and listed in
        `refused`, with the raw payload, so they cost only themselves.
        """
        batch, bad, found = self.decode_all(raw, topic_agent, topic)
        if not found:
            return batch
        found.sort()
        refused = Refused(
            [i for i, _, _ in found],
            [int(batch.seqs[i]) for i, _, _ in found],
            [reason for _, reason, _ in found],
            [error for _, _, error in found],
        )
        return batch.select(~bad, refused)

    def decode_all(
        self, raw: bytes, topic_agent: str, topic: str = ""
    ) -> tuple[Batch, NDArray[np.bool_], Found]:
        """The whole batch, which readings fail their checks, and why (for replaying them)."""
        if payload_version(raw) == WIRE_V3:
            batch = self._decode_v3(split_v3(raw, self._max_inflated), topic_agent)
        else:
            sections = split_payload(raw)
            _check_agent(sections.header.agent, topic_agent)
            batch = _columns(sections.header, self._table(sections.dictionary), sections.body)
        batch = replace(batch, topic=topic, raw=raw)
        bad, found = check_batch(batch, self._window)
        return batch, bad, found

    def _decode_v3(self, sections: SectionsV3, topic_agent: str) -> Batch:
        header = sections.header
        _check_agent(header.agent, topic_agent)
        if sections.dictionary:
            tags = self._learn(header.agent, header.tags, sections.dictionary.rstrip(b" "))
        else:
            known = self._dictionaries.get((header.agent, header.tags))
            if known is None:
                raise UnknownDictionary(header.agent, header.tags, header.epoch, header.batch)
            self._dictionaries.move_to_end((header.agent, header.tags))
            tags = known
        columns = expand_v3(header, sections.body)
        return Batch(
            header.agent,
            header.epoch,
            header.batch,
            tags,
            columns.t,
            columns.seqs,
            columns.ts,
            columns.values,
            columns.kinds,
            columns.qualities,
            header.texts,
            columns.server_ts,
            last_seq=int(columns.seqs[-1]),
            dictionary=header.tags,
        )

    def knows(self, agent: str, dict_hash: str) -> bool:
        """Whether an agent's dictionary of this hash is at hand."""
        return (agent, dict_hash) in self._dictionaries

    def learn(self, agent: str, dict_hash: str, raw: bytes) -> None:
        """Keep an agent's dictionary found elsewhere (PostgreSQL), after checking its hash."""
        raw = raw.rstrip(b" ")
        if dictionary_hash(raw) != dict_hash:
            raise WireError(f"the dictionary kept as {dict_hash} has another hash", reason="schema")
        self._learn(agent, dict_hash, raw)

    async def resolve(self, missing: UnknownDictionary, load: DictionaryLoader) -> bool:
        """Learn the dictionary a batch named through `load`; False if it is unknown there too."""
        raw = await load(missing.agent, missing.hash)
        if raw is None:
            return False
        self.learn(missing.agent, missing.hash, raw)
        return True

    def _learn(self, agent: str, dict_hash: str, raw: bytes) -> TagTable:
        table = self._table(raw)
        self._dictionaries[(agent, dict_hash)] = table
        self._dictionaries.move_to_end((agent, dict_hash))
        if len(self._dictionaries) > self._cache_size:
            self._dictionaries.popitem(last=False)
        return table

    def _table(self, raw: bytes) -> TagTable:
        table = self._tables.get(raw)
        if table is None:
            table = self._tables[raw] = TagTable.parse(raw)
            if len(self._tables) > self._cache_size:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(raw)
        return table


def _check_agent(payload_agent: str, topic_agent: str) -> None:
    if payload_agent != topic_agent:
        raise WireError(
            f"payload agent {payload_agent!r} differs from topic agent {topic_agent!r}",
            reason="agent_mismatch",
        )


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
    seqs = arrays["seq"].astype(np.int64, copy=False)
    return Batch(
        header.agent,
        header.epoch,
        header.batch,
        tags,
        arrays["t"].astype(np.uint32, copy=False),
        seqs,
        arrays["ts"].astype(np.int64, copy=False),
        arrays["val"].astype(np.float64, copy=False),
        arrays["kind"].astype(np.uint8, copy=False),
        arrays["q"].astype(np.uint8, copy=False),
        header.texts,
        arrays["sts"].astype(np.int64, copy=False) if header.sts else None,
        last_seq=int(seqs[-1]),
    )


class _Refusals:
    """Collects readings that fail a check; each reading is refused for its first failure."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, np.bool_)
        self.found: Found = []

    def mark(self, failing: NDArray[np.bool_], reason: str, error: Callable[[int], str]) -> None:
        fresh = failing & ~self.bad
        if fresh.any():
            self.bad |= fresh
            self.found.extend((i, reason, error(i)) for i in np.flatnonzero(fresh).tolist())


def check_batch(batch: Batch, window: TimeWindow | None = None) -> tuple[NDArray[np.bool_], Found]:
    """Check a batch: raise WireError if it is not one; return the readings to refuse."""
    seqs = batch.seqs
    if seqs[0] != batch.batch_id:
        raise WireError("batch id must equal the first sequence number", reason="schema")
    decreasing = seqs[1:] <= seqs[:-1]
    if decreasing.any():
        raise WireError(
            f"reading {int(np.argmax(decreasing))}: sequence numbers must increase within a batch",
            reason="schema",
        )
    text = np.flatnonzero(batch.kinds == ValueKind.TEXT)
    if len(text) != len(batch.texts):
        raise WireError(
            f"{len(text)} readings say their value is text but the header has"
            f" {len(batch.texts)} texts",
            reason="schema",
        )
    refusals = _Refusals(len(batch))
    _check_columns(batch, window or TimeWindow(), refusals)
    _check_values(batch, refusals)
    return refusals.bad, refusals.found


def _check_columns(batch: Batch, window: TimeWindow, refusals: _Refusals) -> None:
    """Tag index, timestamp, quality and kind checks over whole columns."""
    ts, qualities, kinds = batch.ts, batch.qualities, batch.kinds
    refusals.mark(
        batch.t >= len(batch.tags.refs),
        "reading",
        lambda i: f"reading {i}: tag index {int(batch.t[i])} outside the dictionary",
    )
    outside = (ts < window.oldest_us) | (ts >= window.newest_us)
    refusals.mark(
        outside,
        "timestamp",
        lambda i: f"reading {i}: timestamp {_iso(int(ts[i]))} outside {window.describe()}",
    )
    if batch.server_ts is not None:
        sts = batch.server_ts
        outside = (sts != NO_SERVER_TS) & ((sts < window.oldest_us) | (sts >= window.newest_us))
        refusals.mark(
            outside,
            "timestamp",
            lambda i: (
                f"reading {i}: server timestamp {_iso(int(sts[i]))} outside {window.describe()}"
            ),
        )
    refusals.mark(
        qualities > Quality.BAD,
        "reading",
        lambda i: f"reading {i}: quality {int(qualities[i])} is not 0, 1 or 2",
    )
    refusals.mark(
        kinds > ValueKind.TEXT,
        "reading",
        lambda i: f"reading {i}: value kind {int(kinds[i])} is not 0, 1 or 2",
    )
    refusals.mark(
        (kinds == ValueKind.NONE) & (qualities != Quality.BAD),
        "reading",
        lambda i: f"reading {i}: a missing value needs quality bad",
    )


def _check_values(batch: Batch, refusals: _Refusals) -> None:
    """Check every value against its tag's type, by table lookups over whole columns."""
    tags, values, kinds = batch.tags, batch.values, batch.kinds
    # Readings with a tag index outside the dictionary are refused already; look them up as 0.
    t = np.where(batch.t < len(tags.refs), batch.t, 0)
    if not tags.all_float:  # any number is a valid float: most batches stop here
        with np.errstate(invalid="ignore"):
            whole = (values >= tags.low[t]) & (values <= tags.high[t])
            whole &= np.floor(values) == values
        fits = np.where(tags.is_float[t], True, whole & ~tags.is_string[t])
        refusals.mark(
            (kinds == ValueKind.NUMBER) & ~fits,
            "reading",
            lambda i: (
                f"reading {i}: value {float(values[i])!r} is not valid for a"
                f" {tags.refs[int(t[i])].type.value} tag"
            ),
        )
    text = np.flatnonzero(kinds == ValueKind.TEXT).tolist()
    invalid = np.zeros(len(batch), np.bool_)
    for i, value in zip(text, batch.texts, strict=True):
        data_type = tags.refs[int(t[i])].type
        if data_type is DataType.STRING:
            invalid[i] = "\x00" in value  # PostgreSQL text cannot hold NUL
            continue
        if data_type in _WIDE:
            low, high = INTEGER_RANGES[data_type]
            if _DECIMAL.fullmatch(value) and low <= int(value) <= high:
                continue
        invalid[i] = True
    texts = dict(zip(text, batch.texts, strict=True))
    refusals.mark(
        invalid,
        "reading",
        lambda i: (
            f"reading {i}: value {texts[i]!r} is not a valid {tags.refs[int(t[i])].type.value}"
        ),
    )


def _iso(ts_us: int) -> str:
    """A microsecond timestamp as RFC 3339 text, also far outside datetime's range."""
    try:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    except OverflowError:
        return f"{ts_us} µs since 1970"
    return moment.isoformat().replace("+00:00", "Z")
