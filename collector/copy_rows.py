"""PostgreSQL binary COPY rows: the readings table's built column-wise with numpy, and fields."""

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import product

import numpy as np
from numpy.typing import NDArray

from collector.batches import Batch
from shared.blocks import NO_SERVER_TS, ValueKind

COLUMNS = ("tag_id", "ts", "value", "value_text", "quality", "seq", "server_ts")
COPY_SQL = f"COPY readings ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

# PostgreSQL timestamps count microseconds from 2000-01-01.
_PG_EPOCH_US = 946_684_800_000_000
_NULL = -1
_INT4_OID = 23
_NULL_FIELD = struct.pack(">i", _NULL)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_WIDTHS = {"tag_id": 4, "ts": 8, "value": 8, "quality": 2, "seq": 8, "server_ts": 8}
_TYPES = {
    "tag_id": ">i4",
    "ts": ">i8",
    "value": ">f8",
    "quality": ">i2",
    "seq": ">i8",
    "server_ts": ">i8",
}


def _row_dtype(present: frozenset[str]) -> np.dtype[np.void]:
    """A packed record matching one binary COPY row whose non-null fields are `present`."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for name in COLUMNS:
        fields.append((f"len_{name}", ">i4"))
        if name in present:
            fields.append((name, _TYPES[name]))
    return np.dtype(fields)


# Every fixed-width row shape: the value and server timestamp may each be null.
_SHAPES = {
    (has_value, has_sts): _row_dtype(
        frozenset({"tag_id", "ts", "quality", "seq"})
        | ({"value"} if has_value else set())
        | ({"server_ts"} if has_sts else set())
    )
    for has_value, has_sts in product((True, False), repeat=2)
}


def encode_rows(batch: Batch, tag_ids: NDArray[np.int32]) -> bytes:
    """The batch's readings as binary COPY rows (no header or trailer); `tag_ids` by tag index."""
    ids = tag_ids[batch.t]
    ts = batch.ts - _PG_EPOCH_US
    sts = None if batch.server_ts is None else batch.server_ts - _PG_EPOCH_US
    has_sts = (
        np.zeros(len(batch), np.bool_)
        if batch.server_ts is None
        else batch.server_ts != NO_SERVER_TS
    )
    kinds = batch.kinds
    parts: list[bytes] = []
    for (has_value, with_sts), dtype in _SHAPES.items():
        kind = ValueKind.NUMBER if has_value else ValueKind.NONE
        rows = np.flatnonzero((kinds == kind) & (has_sts == with_sts))
        if len(rows) == 0:
            continue
        out = np.empty(len(rows), dtype)
        out["count"] = len(COLUMNS)
        for name in COLUMNS:
            out[f"len_{name}"] = _WIDTHS[name] if name in (dtype.names or ()) else _NULL
        out["tag_id"] = ids[rows]
        out["ts"] = ts[rows]
        out["quality"] = batch.qualities[rows]
        out["seq"] = batch.seqs[rows]
        if has_value:
            out["value"] = batch.values[rows]
        if with_sts and sts is not None:
            out["server_ts"] = sts[rows]
        parts.append(out.tobytes())
    parts.extend(_text_rows(batch, ids, ts))
    return b"".join(parts)


def _text_rows(batch: Batch, ids: NDArray[np.int32], ts: NDArray[np.int64]) -> list[bytes]:
    """Rows whose value is text: few, and of varying width, so built one at a time."""
    rows = np.flatnonzero(batch.kinds == ValueKind.TEXT).tolist()
    out = []
    for i, text in zip(rows, batch.texts, strict=True):
        encoded = text.encode()
        row = struct.pack(
            f">hiiiqii{len(encoded)}sihiq",
            len(COLUMNS),
            4,
            int(ids[i]),
            8,
            int(ts[i]),
            _NULL,
            len(encoded),
            encoded,
            2,
            int(batch.qualities[i]),
            8,
            int(batch.seqs[i]),
        )
        server = NO_SERVER_TS if batch.server_ts is None else int(batch.server_ts[i])
        if server == NO_SERVER_TS:
            out.append(row + struct.pack(">i", _NULL))
        else:
            out.append(row + struct.pack(">iq", 8, server - _PG_EPOCH_US))
    return out


PG_TYPES = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "timestamptz": ">i8"}
"""Binary COPY encodings of the fixed-width types `binary_rows` writes."""


def binary_rows(fields: Sequence[tuple[str, NDArray[np.generic] | None]], count: int) -> bytes:
    """`count` binary COPY rows (no header or trailer) of fixed-width fields, column-wise.

    Each field is its PostgreSQL type (a key of PG_TYPES) and its column, or None for NULL in
    every row; timestamptz columns are microseconds since the Unix epoch.
    """
    layout: list[tuple[str, str]] = [("count", ">i2")]
    for number, (pg_type, column) in enumerate(fields):
        layout.append((f"len{number}", ">i4"))
        if column is not None:
            layout.append((f"f{number}", PG_TYPES[pg_type]))
    out = np.empty(count, np.dtype(layout))
    out["count"] = len(fields)
    for number, (pg_type, column) in enumerate(fields):
        if column is None:
            out[f"len{number}"] = _NULL
            continue
        out[f"len{number}"] = np.dtype(PG_TYPES[pg_type]).itemsize
        out[f"f{number}"] = column - _PG_EPOCH_US if pg_type == "timestamptz" else column
    return out.tobytes()


def int4_array(values: NDArray[np.int32]) -> bytes:
    """A one-dimensional int4[] (no NULLs, at least one element) in binary COPY form."""
    header = struct.pack(">iiiii", 1, 0, _INT4_OID, len(values), 1)
    items = np.empty(len(values), [("length", ">i4"), ("value", ">i4")])
    items["length"] = 4
    items["value"] = values
    return header + items.tobytes()


def int4_values(raw: bytes) -> NDArray[np.int32]:
    """The elements of a one-dimensional int4[] without NULLs in binary form (array_send's
    output), without making a Python int of each."""
    dimensions = struct.unpack_from(">i", raw)[0]
    if not dimensions:
        return np.empty(0, np.int32)
    items = np.frombuffer(raw, [("length", ">i4"), ("value", ">i4")], offset=20)
    return items["value"].astype(np.int32)


def binary_row(fields: Sequence[bytes | None]) -> bytes:
    """One binary COPY row of these fields, each already in binary form (None: NULL)."""
    parts = [struct.pack(">h", len(fields))]
    for field in fields:
        if field is None:
            parts.append(_NULL_FIELD)
            continue
        parts.append(struct.pack(">i", len(field)))
        parts.append(field)
    return b"".join(parts)


def timestamp_field(us: int) -> bytes:
    """A timestamptz field from microseconds since the Unix epoch."""
    return struct.pack(">q", us - _PG_EPOCH_US)


def datetime_field(moment: datetime) -> bytes:
    """A timestamptz field from an aware datetime (exact to the microsecond)."""
    return timestamp_field((moment - _UNIX_EPOCH) // _MICROSECOND)


def float8_field(value: float) -> bytes:
    """A float8 field."""
    return struct.pack(">d", value)


def jsonb_field(text: str) -> bytes:
    """A jsonb field from its JSON text."""
    return b"\x01" + text.encode()
