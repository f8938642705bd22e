"""Building well-formed and deliberately broken binary batches for tests."""

import json
import math
import zlib
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from shared.blocks import encode_block
from shared.readings import DataType, Quality, Reading
from shared.wire import COLUMNS, MAGIC, PREAMBLE, WIRE_VERSION
from shared.wire_v3 import WIRE_V3, dictionary_bytes, dictionary_hash, encode_batch_v3

Columns = dict[str, list[int] | list[float]]


def split(raw: bytes) -> tuple[dict[str, object], dict[str, list[str]], Columns]:
    """A payload's header and tag dictionary as dicts, and its columns as lists."""
    _, _, header_length, dictionary_length = PREAMBLE.unpack_from(raw)
    offset = PREAMBLE.size
    header = json.loads(raw[offset : offset + header_length])
    offset += header_length
    dictionary = json.loads(raw[offset : offset + dictionary_length])
    offset += dictionary_length
    n = header["n"]
    columns: Columns = {}
    for column in COLUMNS:
        if column.name == "sts" and not header["sts"]:
            continue
        data = array(column.code)
        data.frombytes(raw[offset : offset + n * column.size])
        columns[column.name] = data.tolist()
        offset += n * column.size
    return header, dictionary, columns


def join(
    header: dict[str, object],
    dictionary: dict[str, list[str]],
    columns: Columns,
    *,
    version: int = WIRE_VERSION,
) -> bytes:
    """A payload from its parts, with no checks at all."""
    head = json.dumps(header).encode()
    tags = json.dumps(dictionary).encode()
    body = b"".join(array(c.code, columns[c.name]).tobytes() for c in COLUMNS if c.name in columns)
    return PREAMBLE.pack(MAGIC, version, len(head), len(tags)) + head + tags + body


def mutate(raw: bytes, **changes: object) -> bytes:
    """A copy of a payload with header fields, dictionary lists or whole columns replaced."""
    header, dictionary, columns = split(raw)
    names = {c.name for c in COLUMNS}
    for key, value in changes.items():
        if key in names:
            columns[key] = value  # type: ignore[assignment]
        elif key in ("device", "name", "type"):
            dictionary[key] = value  # type: ignore[assignment]
        else:
            header[key] = value
    return join(header, dictionary, columns)


class V3(NamedTuple):
    """A version 3 payload with the dictionary it was encoded against."""

    payload: bytes
    dictionary: bytes
    hash: str


def v3_batch(
    agent: str,
    epoch: int,
    runs: Sequence[tuple[int, Sequence[Reading]]],
    *,
    inline: bool = True,
    compress: bool = True,
) -> V3:
    """A version 3 batch of one block per (first sequence number, readings) run."""
    keys = sorted({(r.device, r.tag, r.data_type.value) for _, rs in runs for r in rs})
    index = {key: i for i, key in enumerate(keys)}
    dictionary = dictionary_bytes(keys)
    dict_hash = dictionary_hash(dictionary)
    blocks = [
        encode_block(first, rs, lambda r: index[(r.device, r.tag, r.data_type.value)])
        for first, rs in runs
    ]
    payload = encode_batch_v3(
        agent,
        epoch,
        blocks,
        dict_hash=dict_hash,
        dictionary=dictionary if inline else None,
        compress=compress,
    )
    return V3(payload, dictionary, dict_hash)


def join_v3(header: dict[str, object], rest: bytes, dictionary_length: int = 0) -> bytes:
    """A version 3 payload from a header and the bytes after it, compressed if it says `z`."""
    head = json.dumps(header).encode()
    if header.get("z"):
        rest = zlib.compress(rest)
    return PREAMBLE.pack(MAGIC, WIRE_V3, len(head), dictionary_length) + head + rest


MIXED_TS = 1_790_000_000_000_000


def mixed_readings() -> list[Reading]:
    """Every data type, texts (huge integers among them), a missing value, server timestamps."""
    return [
        Reading("press", "running", DataType.BOOL, MIXED_TS, True),
        Reading("press", "count", DataType.UINT32, MIXED_TS + 1, 4_000_000_000),
        Reading("press", "temp", DataType.FLOAT32, MIXED_TS + 2, 65.0),
        Reading("press", "temp", DataType.FLOAT32, MIXED_TS + 3, math.nan),
        Reading("press", "program", DataType.STRING, MIXED_TS + 4, "P-1"),
        Reading("press", "huge", DataType.UINT64, MIXED_TS + 5, 2**64 - 1),
        Reading("press", "temp", DataType.FLOAT32, MIXED_TS + 6, None, Quality.BAD),
        Reading(
            "press", "offset", DataType.INT16, MIXED_TS + 7, -5, Quality.UNCERTAIN, MIXED_TS + 8
        ),
        Reading("press", "low", DataType.INT64, MIXED_TS + 9, -(2**63)),
        Reading(
            "press", "text", DataType.STRING, MIXED_TS + 10, "ünïcode", Quality.GOOD, MIXED_TS + 11
        ),
    ]
