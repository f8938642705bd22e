"""Building well-formed and deliberately broken binary batches for tests."""

import json
import zlib
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from shared.blocks import encode_block
from shared.readings import Reading
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
