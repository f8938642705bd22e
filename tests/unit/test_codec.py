"""Modbus register codec: every type in every byte order round-trips; known wire vectors."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus.codec import ByteOrder, decode, encode, register_count
from shared.readings import INTEGER_RANGES, DataType

ORDERS: list[ByteOrder] = ["ABCD", "BADC", "CDAB", "DCBA"]


@pytest.mark.parametrize("data_type", list(INTEGER_RANGES))
@pytest.mark.parametrize("order", ORDERS)
@given(data=st.data())
def test_integers_round_trip(data: st.DataObject, data_type: DataType, order: ByteOrder) -> None:
    low, high = INTEGER_RANGES[data_type]
    value = data.draw(st.integers(low, high))
    registers = encode(value, data_type, order)
    assert len(registers) == register_count(data_type)
    assert all(0 <= word <= 0xFFFF for word in registers)
    assert decode(registers, data_type, order) == value


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(width=32, allow_nan=False))
def test_float32_round_trips(order: ByteOrder, value: float) -> None:
    assert decode(encode(value, DataType.FLOAT32, order), DataType.FLOAT32, order) == value


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(allow_nan=False))
def test_float64_round_trips(order: ByteOrder, value: float) -> None:
    assert decode(encode(value, DataType.FLOAT64, order), DataType.FLOAT64, order) == value


def test_nan_survives() -> None:
    result = decode(encode(math.nan, DataType.FLOAT32), DataType.FLOAT32)
    assert isinstance(result, float)
    assert math.isnan(result)


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x42F6, 0xE979]),
        ("BADC", [0xF642, 0x79E9]),
        ("CDAB", [0xE979, 0x42F6]),
        ("DCBA", [0x79E9, 0xF642]),
    ],
)
def test_float32_wire_layout(order: ByteOrder, registers: list[int]) -> None:
    assert encode(123.456, DataType.FLOAT32, order) == registers


def test_uint64_word_orders() -> None:
    value = 0x0102030405060708
    assert encode(value, DataType.UINT64, "ABCD") == [0x0102, 0x0304, 0x0506, 0x0708]
    assert encode(value, DataType.UINT64, "CDAB") == [0x0708, 0x0506, 0x0304, 0x0102]
    assert encode(value, DataType.UINT64, "DCBA") == [0x0807, 0x0605, 0x0403, 0x0201]


@pytest.mark.parametrize("order", ORDERS)
@given(text=st.text(st.characters(min_codepoint=1, max_codepoint=0x7E), max_size=16))
def test_strings_round_trip(order: ByteOrder, text: str) -> None:
    registers = encode(text, DataType.STRING, order, length=8)
    assert len(registers) == 8
    assert decode(registers, DataType.STRING, order) == text


def test_string_layout_and_overflow() -> None:
    assert encode("AB", DataType.STRING, "ABCD", length=2) == [0x4142, 0]
    assert encode("AB", DataType.STRING, "BADC", length=1) == [0x4241]
    with pytest.raises(ValueError, match="does not fit"):
        encode("too long", DataType.STRING, "ABCD", length=2)


def test_bool_register() -> None:
    assert encode(True, DataType.BOOL) == [1]
    assert decode([0], DataType.BOOL) is False
    assert decode([7], DataType.BOOL) is True
    assert register_count(DataType.STRING, 5) == 5
    assert register_count(DataType.BOOL) == 1
