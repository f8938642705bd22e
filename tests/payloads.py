"""Building well-formed and deliberately broken binary batches for tests."""

import json
from array import array

from shared.wire import COLUMNS, MAGIC, PREAMBLE, WIRE_VERSION

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
