"""Driver configuration rules, the write guard, and the fast decoder against the codec."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols.base import WriteRefused
from protocols.common import TagBase
from protocols.modbus.codec import ByteOrder, decode, register_count
from protocols.modbus.config import ModbusDevice, ModbusTag
from protocols.modbus.decoder import RequestDecoder
from protocols.modbus.planner import plan_reads
from protocols.opcua.config import OpcUaDevice, OpcUaIdentity, OpcUaSecurity, OpcUaTag
from protocols.writes import check_write
from shared.readings import INTEGER_RANGES, DataType

REGISTER = {"name": "t", "table": "holding_register", "address": 0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"table": "coil", "type": "uint16"}, "a coil holds one bit: type must be bool"),
        ({"type": "bool"}, "needs `bit`"),
        ({"type": "uint16", "bit": 3}, "only for a bool"),
        ({"table": "coil", "type": "bool", "bit": 1}, "only for a bool"),
        ({"type": "string"}, "needs `length`"),
        ({"type": "string", "length": 2, "scale": 2.0}, "cannot be scaled"),
        ({"scale": 0.0}, "must not be 0"),
        ({"table": "input_register", "writable": True}, "only whole coils and holding"),
        ({"type": "bool", "bit": 0, "writable": True}, "only whole coils and holding"),
        ({"min": 5, "max": 1}, "min must not exceed max"),
    ],
)
def test_modbus_tag_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModbusTag.model_validate({**REGISTER, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transport": "rtu"}, "needs `serial`"),
        ({"host": None}, "needs `host`"),
        ({"zero_based": False}, "addresses start at 1"),
        ({"tags": [REGISTER, REGISTER]}, "tag names must be unique"),
    ],
)
def test_modbus_device_rules(changes: dict[str, Any], message: str) -> None:
    config = {"type": "modbus", "name": "m", "host": "h", "tags": [REGISTER], **changes}
    with pytest.raises(ValidationError, match=message):
        ModbusDevice.model_validate(config)


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"name": "a"}, "exactly one of `node` and `path`"),
        ({"name": "a", "node": "i=1", "path": "X"}, "exactly one of"),
        ({"name": "a", "node": "what"}, "expected a node id"),
        ({"name": "a", "path": "A/{unclosed"}, "bad browse path element"),
    ],
)
def test_opcua_tag_rules(tag: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcUaTag.model_validate(tag)


def test_opcua_device_rules() -> None:
    tags = [{"name": "a", "node": "i=1", "deadband": 2, "deadband_type": "percent"}]
    base = {"type": "opcua", "name": "u", "endpoint": "opc.tcp://h:4840", "tags": tags}
    with pytest.raises(ValidationError, match="percent deadbands need mode: subscribe"):
        OpcUaDevice.model_validate(base)
    assert OpcUaDevice.model_validate({**base, "mode": "subscribe"}).mode == "subscribe"
    with pytest.raises(ValidationError, match="needs certificate, private_key, trust_store"):
        OpcUaSecurity.model_validate({"policy": "Basic256Sha256"})
    with pytest.raises(ValidationError, match="identity username needs password"):
        OpcUaIdentity.model_validate({"type": "username", "username": "u"})
    with pytest.raises(ValidationError, match="needs certificate, private_key"):
        OpcUaIdentity.model_validate({"type": "certificate"})


def test_write_guard() -> None:
    tag = TagBase(name="sp", writable=True, min=0, max=100)
    check_write("d", tag, "sp", DataType.FLOAT64, 50)
    check_write("d", tag, "sp", DataType.UINT16, 100)
    cases = [
        (None, DataType.UINT16, 1, "no such tag"),
        (TagBase(name="sp"), DataType.UINT16, 1, "read-only"),
        (tag, DataType.UINT16, 101, "above the configured maximum"),
        (tag, DataType.FLOAT64, -0.5, "below the configured minimum"),
        (tag, DataType.UINT16, 1.5, "not a valid uint16"),
        (tag, DataType.BOOL, 1, "not a valid bool"),
    ]
    for candidate, data_type, value, message in cases:
        with pytest.raises(WriteRefused, match=message):
            check_write("d", candidate, "sp", data_type, value)


NUMERIC = [t for t in DataType if t not in (DataType.BOOL, DataType.STRING)]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[ModbusTag], list[int], ByteOrder]:
    """Random tags at random addresses (overlaps allowed) over random register contents."""
    order: ByteOrder = draw(st.sampled_from(["ABCD", "BADC", "CDAB", "DCBA"]))
    count = draw(st.integers(1, 12))
    tags = []
    for i in range(count):
        data_type = draw(st.sampled_from([*NUMERIC, DataType.STRING, DataType.BOOL]))
        address = draw(st.integers(0, 40))
        extra: dict[str, Any] = {}
        if data_type is DataType.STRING:
            extra["length"] = draw(st.integers(1, 4))
        if data_type is DataType.BOOL:
            extra["bit"] = draw(st.integers(0, 15))
        if data_type in INTEGER_RANGES and draw(st.booleans()):
            extra["scale"] = 0.5
        own_order = draw(st.sampled_from([None, "ABCD", "CDAB"]))
        tags.append(
            ModbusTag(
                name=f"t{i}",
                table="holding_register",
                address=address,
                type=data_type,
                byte_order=own_order,
                **extra,
            )
        )
    words = draw(st.lists(st.integers(0, 0xFFFF), min_size=48, max_size=48))
    return tags, words, order


@given(layouts())
def test_fast_decoder_agrees_with_the_codec(
    case: tuple[list[ModbusTag], list[int], ByteOrder],
) -> None:
    tags, words, order = case
    for request in plan_reads(tags, max_gap=50):
        values = RequestDecoder(request, order, 0).decode(words[request.address :])
        for tag, value in zip(request.tags, values, strict=True):
            span = words[tag.address : tag.address + register_count(tag.type, tag.length)]
            if tag.bit is not None:
                expected: Any = bool(span[0] >> tag.bit & 1)
            else:
                expected = decode(span, tag.type, tag.byte_order or order)
                if tag.scaled:
                    expected = float(expected) * tag.scale + tag.offset
            if isinstance(expected, float) and expected != expected:
                assert value != value
            else:
                assert value == expected, (tag, span)
