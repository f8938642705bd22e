"""Encoding tag values to Modbus registers and back, in any byte and word order."""

import struct
from typing import Literal

from shared.readings import DataType, Value

ByteOrder = Literal["ABCD", "BADC", "CDAB", "DCBA"]
"""Wire order of a 32-bit value's bytes, A most significant; 64-bit values extend it."""

_STRUCT = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


def register_count(data_type: DataType, string_length: int = 0) -> int:
    """Number of 16-bit registers a value of the data type occupies."""
    if data_type is DataType.STRING:
        return string_length
    if data_type is DataType.BOOL:
        return 1
    return struct.calcsize(_STRUCT[data_type]) // 2


def _reorder(raw: bytes, order: ByteOrder) -> bytes:
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [word[::-1] for word in words]
    return b"".join(words)


def _registers(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _bytes(registers: list[int]) -> bytes:
    return b"".join(register.to_bytes(2, "big") for register in registers)


def encode(
    value: Value, data_type: DataType, order: ByteOrder = "ABCD", length: int = 0
) -> list[int]:
    """Encode a value as registers; strings are padded with NUL to `length` registers."""
    if data_type is DataType.BOOL:
        return [1 if value else 0]
    if data_type is DataType.STRING:
        raw = str(value).encode("utf-8")
        if len(raw) > 2 * length:
            raise ValueError(f"string of {len(raw)} bytes does not fit {length} registers")
        raw = raw.ljust(2 * length, b"\0")
        if order in ("BADC", "DCBA"):
            raw = _reorder(raw, "BADC")
        return _registers(raw)
    return _registers(_reorder(struct.pack(_STRUCT[data_type], value), order))


def decode(registers: list[int], data_type: DataType, order: ByteOrder = "ABCD") -> Value:
    """Decode registers into a value of the data type."""
    if data_type is DataType.BOOL:
        return registers[0] != 0
    raw = _bytes(registers)
    if data_type is DataType.STRING:
        if order in ("BADC", "DCBA"):
            raw = _reorder(raw, "BADC")
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")
    value: int | float = struct.unpack(_STRUCT[data_type], _reorder(raw, order))[0]
    return value
