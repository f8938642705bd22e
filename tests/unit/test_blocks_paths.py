"""Blocks on a host of the other byte order: the wire stays little-endian, reading swaps back."""

import sys
from array import array

import pytest

from shared.blocks import decode_block, encode_block
from shared.readings import DataType, Quality, Reading

TS = 1_790_000_000_000_000
TAGS = [("d", "f", DataType.FLOAT64), ("d", "n", DataType.INT32)]


def index(reading: Reading) -> int:
    return TAGS.index((reading.device, reading.tag, reading.data_type))


def test_the_other_byte_order_swaps_every_column_and_reads_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poll = [
        Reading("d", "f", DataType.FLOAT64, TS + 1, 0.5, Quality.GOOD, TS + 11),
        Reading("d", "n", DataType.INT32, TS + 2, -7, Quality.UNCERTAIN, TS + 12),
    ]
    here = encode_block(1, poll, index)
    assert decode_block(here, TAGS) == poll
    monkeypatch.setattr(sys, "byteorder", "big" if sys.byteorder == "little" else "little")
    there = encode_block(1, poll, index)
    for column, code in (("val", "d"), ("ts", "q"), ("sts", "q"), ("t", "I")):
        items = array(code)
        items.frombytes(here.column(column))
        items.byteswap()
        assert bytes(there.column(column)) == items.tobytes(), column
    assert bytes(there.column("q")) == bytes(here.column("q")), "bytes need no swapping"
    assert decode_block(there, TAGS) == poll
