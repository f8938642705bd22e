"""Poll blocks: one poll's readings as fixed-width little-endian columns, encoded once.

The agent's buffer keeps one block per poll (one SQLite row instead of one per reading) and
a version 3 batch is built by concatenating the columns of consecutive blocks, so readings
are turned into bytes once, when they are buffered, and never again on the way out.

A block's readings have consecutive sequence numbers from `first_seq`. `ts` is the
timestamp all its readings share, unless the block carries a per-reading `ts` column
(flag `RTS`). Body layout, 8-byte columns first so every column stays aligned:

    val d*n, [ts q*n if RTS], [sts q*n if STS], t I*n, q B*n, kind B*n, [texts JSON if TEXTS]
"""

import json
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from operator import attrgetter

from shared.readings import DataType, Quality, Reading, Value

INT_EXACT = 2**53  # integers beyond this travel as text: a double cannot hold them
NO_SERVER_TS = 0
"""`sts` entry of a reading that has no server timestamp."""
SPLIT_RUNS_UP_TO = 8
"""A poll whose readings fall into at most this many timestamp runs is buffered as one block
per run (a Modbus poll of several requests); beyond it, as one block with a `ts` column."""


class ValueKind(IntEnum):
    """Where a reading's value is: in the `val` column, nowhere, or in the texts."""

    NUMBER = 0
    NONE = 1
    TEXT = 2


class BlockFlags(IntFlag):
    """Which optional columns a block carries."""

    NONE = 0
    RTS = 1  # a source timestamp per reading
    STS = 2  # an OPC UA server timestamp per reading
    TEXTS = 4  # values of kind text, as a JSON list at the end of the body


@dataclass(frozen=True, slots=True)
class Block:
    """One run of readings with consecutive sequence numbers, as encoded columns."""

    first_seq: int
    n: int
    ts: int
    flags: BlockFlags
    body: bytes

    @property
    def last_seq(self) -> int:
        """Sequence number of the block's last reading."""
        return self.first_seq + self.n - 1

    def column(self, name: str) -> memoryview:
        """The bytes of one column (`val`, `ts`, `sts`, `t`, `q`, `kind`); empty if absent."""
        start, end = _offsets(self.n, self.flags)[name]
        return memoryview(self.body)[start:end]

    def texts(self) -> list[str]:
        """The block's text values, in reading order."""
        if not self.flags & BlockFlags.TEXTS:
            return []
        start = _offsets(self.n, self.flags)["texts"][0]
        texts: list[str] = json.loads(self.body[start:])
        return texts


def _offsets(n: int, flags: BlockFlags) -> dict[str, tuple[int, int]]:
    sizes = (
        ("val", 8),
        ("ts", 8 if flags & BlockFlags.RTS else 0),
        ("sts", 8 if flags & BlockFlags.STS else 0),
        ("t", 4),
        ("q", 1),
        ("kind", 1),
    )
    offsets = {}
    at = 0
    for name, size in sizes:
        offsets[name] = (at, at + n * size)
        at += n * size
    offsets["texts"] = (at, -1)
    return offsets


_VALUE = attrgetter("value")
_TS = attrgetter("ts_us")
_QUALITY = attrgetter("quality")
_SERVER_TS = attrgetter("server_ts_us")


def value_columns(readings: Sequence[Reading]) -> tuple["array[float]", bytes, list[str]]:
    """The `val` and `kind` columns of readings, and their text values in order."""
    plain = list(map(_VALUE, readings))
    try:
        # Polls are usually all numbers: let C build the column and check the range.
        values = array("d", plain)
        if not plain or (max(plain) <= INT_EXACT and min(plain) >= -INT_EXACT):
            return values, bytes(len(plain)), []
    except TypeError:  # None or text among them
        pass
    values = array("d")
    kinds = bytearray()
    texts: list[str] = []
    add_value, add_kind = values.append, kinds.append
    for value in plain:
        kind = type(value)
        if kind is float or kind is bool or (kind is int and -INT_EXACT <= value <= INT_EXACT):
            add_value(value)
            add_kind(ValueKind.NUMBER)
        elif value is None:
            add_value(0.0)
            add_kind(ValueKind.NONE)
        else:
            add_value(0.0)
            add_kind(ValueKind.TEXT)
            texts.append(str(value))
    return values, bytes(kinds), texts


def little_endian(data: "array[int] | array[float]") -> bytes:
    """An array's bytes in little-endian order."""
    if sys.byteorder == "big":
        data = array(data.typecode, data)
        data.byteswap()
    return data.tobytes()


def encode_block(
    first_seq: int,
    readings: Sequence[Reading],
    tags: Callable[[Reading], int] | Sequence[int],
) -> Block:
    """Encode readings (one timestamp run, or one poll) as a block.

    `tags` gives each reading's dictionary index: a function of the reading, or the indexes
    already worked out, in reading order.
    """
    n = len(readings)
    times = list(map(_TS, readings))
    ts = times[0]
    flags = BlockFlags.NONE
    if times.count(ts) != n:
        flags |= BlockFlags.RTS
    if any(map(_SERVER_TS, readings)):
        flags |= BlockFlags.STS
    values, kinds, texts = value_columns(readings)
    parts = [little_endian(values)]
    if flags & BlockFlags.RTS:
        parts.append(little_endian(array("q", times)))
    if flags & BlockFlags.STS:
        parts.append(little_endian(array("q", [r.server_ts_us or NO_SERVER_TS for r in readings])))
    indexes = tags if isinstance(tags, Sequence) else list(map(tags, readings))
    parts.append(little_endian(array("I", indexes)))
    parts.append(bytes(map(_QUALITY, readings)))
    parts.append(kinds)
    if texts:
        flags |= BlockFlags.TEXTS
        parts.append(json.dumps(texts, separators=(",", ":")).encode())
    return Block(first_seq, n, ts, flags, b"".join(parts))


def timestamp_runs(readings: Sequence[Reading]) -> list[Sequence[Reading]]:
    """Split a poll into runs of equal timestamps, or keep it whole if the runs are many."""
    times = list(map(_TS, readings))
    if not times or times.count(times[0]) == len(times):
        return [readings]
    runs: list[Sequence[Reading]] = []
    start = 0
    for i in range(1, len(times)):
        if times[i] != times[start]:
            runs.append(readings[start:i])
            start = i
            if len(runs) >= SPLIT_RUNS_UP_TO:
                return [readings]
    runs.append(readings[start:])
    return runs


def decode_block(block: Block, tags: Sequence[tuple[str, str, DataType]]) -> list[Reading]:
    """A block as Reading objects (tools and tests; the hot path keeps the columns)."""
    n = block.n
    values = _floats(block.column("val"))
    ts = _ints("q", block.column("ts")) if block.flags & BlockFlags.RTS else [block.ts] * n
    sts = _ints("q", block.column("sts")) if block.flags & BlockFlags.STS else [0] * n
    t = _ints("I", block.column("t"))
    texts = iter(block.texts())
    out = []
    for i, (quality, kind) in enumerate(zip(block.column("q"), block.column("kind"), strict=True)):
        device, tag, data_type = tags[t[i]]
        value: Value | None = None
        if kind == ValueKind.TEXT:
            text = next(texts)
            value = text if data_type is DataType.STRING else int(text)
        elif kind == ValueKind.NUMBER:
            value = typed_value(data_type, values[i])
        out.append(
            Reading(
                device,
                tag,
                data_type,
                ts[i],
                value,
                Quality(quality),
                None if sts[i] == NO_SERVER_TS else sts[i],
            )
        )
    return out


def typed_value(data_type: DataType, number: float) -> Value:
    """A number from the value column as its tag's Python type."""
    if data_type is DataType.BOOL:
        return number != 0.0
    if data_type in (DataType.FLOAT32, DataType.FLOAT64):
        return number
    return int(number)


def _ints(code: str, data: memoryview) -> "array[int]":
    out = array(code)
    out.frombytes(data)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _floats(data: memoryview) -> "array[float]":
    out = array("d")
    out.frombytes(data)
    if sys.byteorder == "big":
        out.byteswap()
    return out
