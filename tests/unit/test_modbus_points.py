"""The compact ModbusPoint a source keeps per tag: the tag's settings and derived values."""

import pytest

from protocols.base import WriteRefused
from protocols.modbus.config import ModbusDevice, ModbusTag
from protocols.modbus.decoder import RequestDecoder
from protocols.modbus.planner import plan_reads
from protocols.modbus.points import ModbusPoint
from protocols.writes import check_write
from shared.readings import DataType

TAGS = [
    {"name": "count", "table": "holding_register", "address": 3},
    {
        "name": "temp",
        "table": "input_register",
        "address": 10,
        "type": "float32",
        "byte_order": "CDAB",
        "scale": 0.1,
        "offset": -5,
    },
    {"name": "total", "table": "holding_register", "address": 20, "type": "uint64"},
    {"name": "label", "table": "holding_register", "address": 30, "type": "string", "length": 6},
    {"name": "alarm", "table": "holding_register", "address": 40, "type": "bool", "bit": 7},
    {"name": "run", "table": "coil", "address": 5, "type": "bool", "writable": True},
    {
        "name": "setpoint",
        "table": "holding_register",
        "address": 50,
        "type": "int16",
        "scale": 0.5,
        "writable": True,
        "min": -10,
        "max": 10,
    },
]


@pytest.mark.parametrize("raw", TAGS, ids=[t["name"] for t in TAGS])
def test_point_keeps_the_tags_settings_and_derived_values(raw: dict[str, object]) -> None:
    tag = ModbusTag.model_validate(raw)
    point = ModbusPoint.of(tag)
    for field in ModbusPoint.__dataclass_fields__:
        assert getattr(point, field) == getattr(tag, field), field


def test_points_of_a_range_follow_its_expanded_tags() -> None:
    device = ModbusDevice.model_validate(
        {
            "type": "modbus",
            "name": "d",
            "host": "h",
            "tags": [
                {
                    "name": "v{number}",
                    "table": "holding_register",
                    "type": "float64",
                    "range": {"start": 100, "count": 3},
                }
            ],
        }
    )
    points = [ModbusPoint.of(tag) for tag in device.tags]
    assert [(p.name, p.address, p.span) for p in points] == [
        ("v1", 100, 4),
        ("v2", 104, 4),
        ("v3", 108, 4),
    ]


def test_points_plan_and_decode_as_their_tags() -> None:
    tags = [ModbusTag.model_validate(raw) for raw in TAGS]
    points = [ModbusPoint.of(tag) for tag in tags]
    by_tags, by_points = plan_reads(tags, max_gap=16), plan_reads(points, max_gap=16)
    assert [(r.table, r.address, r.count) for r in by_points] == [
        (r.table, r.address, r.count) for r in by_tags
    ]
    for of_tags, of_points in zip(by_tags, by_points, strict=True):
        words = [(0x1234 + 7 * i) & 0xFFFF for i in range(of_tags.count)]
        if of_tags.table == "coil":
            words = [i % 2 for i in range(of_tags.count)]
        assert RequestDecoder(of_points, "ABCD", 0).decode(words) == RequestDecoder(
            of_tags, "ABCD", 0
        ).decode(words)


def test_a_point_is_checked_for_writes_as_its_tag() -> None:
    point = ModbusPoint.of(ModbusTag.model_validate(TAGS[-1]))
    check_write("d", point, "setpoint", DataType.FLOAT64, 9.5)
    with pytest.raises(WriteRefused, match="above the configured maximum 10"):
        check_write("d", point, "setpoint", DataType.FLOAT64, 10.5)
    readonly = ModbusPoint.of(ModbusTag.model_validate(TAGS[0]))
    with pytest.raises(WriteRefused, match="read-only"):
        check_write("d", readonly, "count", DataType.UINT16, 1)
