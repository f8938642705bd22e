"""Version 3 batches on the collector: the block table checked, blocks expanded into columns.

The columns come out exactly as a version 2 batch's, so every per-reading check and the COPY
path stay the same for both versions (collector/batches.py).
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from shared.errors import WireError
from shared.wire import PREAMBLE, payload_version
from shared.wire_v3 import WIRE_V3, BatchHeaderV3

_INT64_MAX = np.iinfo(np.int64).max
_LE = {code: np.dtype(code).newbyteorder("<") for code in ("q", "d", "I", "B")}


@dataclass(frozen=True, slots=True)
class ColumnsV3:
    """A version 3 body as one entry per reading in every column."""

    seqs: NDArray[np.int64]
    ts: NDArray[np.int64]
    values: NDArray[np.float64]
    server_ts: NDArray[np.int64] | None
    t: NDArray[np.uint32]
    qualities: NDArray[np.uint8]
    kinds: NDArray[np.uint8]


class _Cursor:
    """Reads consecutive little-endian columns out of a body."""

    def __init__(self, body: memoryview) -> None:
        self._body = body
        self._at = 0

    def take(self, code: str, count: int) -> NDArray[np.generic]:
        column = np.frombuffer(self._body, _LE[code], count, self._at)
        self._at += count * column.itemsize
        return column


def expand_v3(header: BatchHeaderV3, body: memoryview) -> ColumnsV3:
    """Check a body's block table against its header; return its columns, one entry per reading.

    The body's length was checked against the header already (`split_v3`).
    """
    cursor = _Cursor(body)
    first_seq = cursor.take("q", header.blocks).astype(np.int64, copy=False)
    block_ts = cursor.take("q", header.blocks).astype(np.int64, copy=False)
    counts = cursor.take("I", header.blocks).astype(np.int64)
    check_block_table(header, first_seq, counts)
    n = header.n
    values = cursor.take("d", n).astype(np.float64, copy=False)
    if header.rts:
        ts = cursor.take("q", n).astype(np.int64, copy=False)
    else:
        ts = np.repeat(block_ts, counts)
    server_ts = cursor.take("q", n).astype(np.int64, copy=False) if header.sts else None
    t = cursor.take("I", n).astype(np.uint32, copy=False)
    qualities = cursor.take("B", n).astype(np.uint8, copy=False)
    kinds = cursor.take("B", n).astype(np.uint8, copy=False)
    # Reading i of block b has sequence number first_seq[b] + (i - start of b).
    starts = np.cumsum(counts) - counts
    seqs = np.arange(n, dtype=np.int64) + np.repeat(first_seq - starts, counts)
    return ColumnsV3(seqs, ts, values, server_ts, t, qualities, kinds)


def check_block_table(
    header: BatchHeaderV3, first_seq: NDArray[np.int64], counts: NDArray[np.int64]
) -> None:
    """Raise WireError unless the blocks hold `n` readings in increasing sequence ranges."""
    if (counts < 1).any():
        block = int(np.argmax(counts < 1))
        raise WireError(f"block {block} holds no readings", reason="schema")
    if int(counts.sum()) != header.n:
        raise WireError(
            f"the blocks hold {int(counts.sum())} readings; the header says {header.n}",
            reason="schema",
        )
    if int(first_seq[0]) != header.batch:
        raise WireError(
            "batch id must equal the first block's first sequence number", reason="schema"
        )
    if (first_seq < 1).any():
        raise WireError("sequence numbers start at 1", reason="schema")
    # Both sides stay far inside int64: first_seq >= 1 and counts < 2**32.
    overlapping = first_seq[1:] - counts[:-1] < first_seq[:-1]
    if overlapping.any():
        block = int(np.argmax(overlapping)) + 1
        raise WireError(
            f"block {block} starts inside the sequence range of the block before it",
            reason="schema",
        )
    if int(first_seq[-1]) > _INT64_MAX - int(counts[-1]) + 1:
        raise WireError("sequence numbers run past 2**63 - 1", reason="schema")


def named_dictionary(payload: bytes) -> tuple[str, str] | None:
    """(agent, dictionary hash) of a version 3 payload that names its dictionary without it."""
    try:
        if payload_version(payload) != WIRE_V3:
            return None
        _, _, header_length, dictionary_length = PREAMBLE.unpack_from(payload)
        header = BatchHeaderV3.model_validate_json(
            payload[PREAMBLE.size : PREAMBLE.size + header_length]
        )
    except (WireError, ValidationError):
        return None
    return None if dictionary_length else (header.agent, header.tags)
