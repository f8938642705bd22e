"""Decoding one read response into tag values with as few struct calls as possible.

Numeric tags of one byte order are decoded by a single precompiled struct per request: big-
or little-endian over the raw bytes, or over the bytes swapped within each register:
ABCD = big-endian, DCBA = little-endian, BADC = big-endian of swapped, CDAB = little-endian of
swapped. Strings, bits and overlapping tags take the general path.
"""

import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.modbus.codec import ByteOrder, decode
from protocols.modbus.config import BIT_TABLES
from protocols.modbus.planner import ReadRequest, tag_span
from shared.readings import DataType, Value

_CODES = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
_LITTLE = ("DCBA", "CDAB")
_SWAPPED = ("BADC", "CDAB")


@dataclass(frozen=True, slots=True)
class _Group:
    layout: struct.Struct
    swapped: bool
    positions: tuple[int, ...]


class RequestDecoder:
    """Turns the words of one ReadRequest into values, in the order of `request.tags`."""

    def __init__(self, request: ReadRequest, default_order: ByteOrder, shift: int) -> None:
        self.request = request
        self._bits = request.table in BIT_TABLES
        self._offsets = [tag.address - shift - request.address for tag in request.tags]
        self._orders: list[ByteOrder] = [tag.byte_order or default_order for tag in request.tags]
        self._groups: list[_Group] = []
        self._general: list[int] = []
        if not self._bits:
            self._plan()
        self._scaled = [
            (i, tag.scale, tag.offset) for i, tag in enumerate(request.tags) if tag.scaled
        ]

    def _plan(self) -> None:
        by_order: dict[ByteOrder, list[int]] = {}
        end = -1
        for i, tag in enumerate(self.request.tags):
            offset = self._offsets[i]
            if tag.type not in _CODES or tag.bit is not None or offset < end:
                self._general.append(i)
                continue
            by_order.setdefault(self._orders[i], []).append(i)
            end = offset + tag_span(tag)
        for order, positions in by_order.items():
            fmt = "<" if order in _LITTLE else ">"
            cursor = 0
            for i in positions:
                offset = self._offsets[i]
                fmt += "x" * (2 * (offset - cursor)) + _CODES[self.request.tags[i].type]
                cursor = offset + tag_span(self.request.tags[i])
            self._groups.append(_Group(struct.Struct(fmt), order in _SWAPPED, tuple(positions)))

    def decode(self, words: Sequence[int]) -> list[Value]:
        """Values of the request's tags, scaled where configured."""
        tags = self.request.tags
        values: list[Value] = [0] * len(tags)
        if self._bits:
            for i, offset in enumerate(self._offsets):
                values[i] = bool(words[offset])
            return values
        raw = array("H", words)
        swapped = array("H", words)
        if array("H", [1]).tobytes() == b"\x01\x00":  # host is little-endian
            raw.byteswap()
        else:  # pragma: no cover - big-endian hosts
            swapped.byteswap()
        raw_bytes, swapped_bytes = raw.tobytes(), swapped.tobytes()
        for group in self._groups:
            unpacked = group.layout.unpack_from(swapped_bytes if group.swapped else raw_bytes)
            for i, value in zip(group.positions, unpacked, strict=True):
                values[i] = value
        for i in self._general:
            tag = tags[i]
            offset = self._offsets[i]
            if tag.bit is not None:
                values[i] = bool(words[offset] >> tag.bit & 1)
            else:
                values[i] = decode(
                    list(words[offset : offset + tag_span(tag)]), tag.type, self._orders[i]
                )
        for i, scale, shift in self._scaled:
            values[i] = float(values[i]) * scale + shift
        return values
