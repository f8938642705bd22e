"""Building well-formed and deliberately broken binary batches for tests."""

import json
import struct
from array import array

from shared.wire import COLUMNS, MAGIC, WIRE_VERSION

_PREAMBLE = struct.Struct("<3sBI")


def split(raw: bytes) -> tuple[dict[str, object], dict[str, list[int] | list[float]]]:
    """A payload's header as a dict and its columns as lists."""
    _, _, length = _PREAMBLE.unpack_from(raw)
    header = json.loads(raw[_PREAMBLE.size : _PREAMBLE.size + length])
    offset = _PREAMBLE.size + length
    n = header["n"]
    columns: dict[str, list[int] | list[float]] = {}
    for column in COLUMNS:
        if column.name == "sts" and not header["sts"]:
            continue
        data = array(column.code)
        data.frombytes(raw[offset : offset + n * column.size])
        columns[column.name] = data.tolist()
        offset += n * column.size
    return header, columns


def join(
    header: dict[str, object],
    columns: dict[str, list[int] | list[float]],
    *,
    version: int = WIRE_VERSION,
    magic: bytes = MAGIC,
) -> bytes:
    """A payload from a header dict and column lists, with no checks at all."""
    encoded = json.dumps(header).encode()
    body = b"".join(array(c.code, columns[c.name]).tobytes() for c in COLUMNS if c.name in columns)
    return _PREAMBLE.pack(magic, version, len(encoded)) + encoded + body


def mutate(raw: bytes, **changes: object) -> bytes:
    """A copy of a payload with header fields or whole columns replaced by name."""
    header, columns = split(raw)
    for key, value in changes.items():
        if key in columns or key in {c.name for c in COLUMNS}:
            columns[key] = value  # type: ignore[assignment]
        else:
            header[key] = value
    return join(header, columns)
