"""Modbus tag ranges: a block of registers configured as one entry, expanded into tags."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig, load_agent_config
from protocols.modbus.config import ModbusDevice
from protocols.modbus.planner import plan_reads
from shared.readings import DataType


def device(*tags: dict[str, Any], **keys: Any) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {"type": "modbus", "name": "m", "host": "h", "tags": list(tags), **keys}
    )


def block(name: str, start: int, count: int, **keys: Any) -> dict[str, Any]:
    rng = {"start": start, "count": count}
    if "step" in keys:
        rng["step"] = keys.pop("step")
    return {"name": name, "table": "holding_register", "range": rng, **keys}


def test_a_range_expands_into_ordinary_tags() -> None:
    config = device(
        block("reg_{address}", 0, 3),
        block("flow_{index:02d}", 10, 3, type="float32", scale=0.1),
        {"name": "alarm", "table": "holding_register", "address": 1, "type": "bool", "bit": 3},
        {"name": "run{number}", "table": "coil", "range": {"start": 5, "count": 2}, "type": "bool"},
    )
    assert [(t.name, t.table, t.address, t.type) for t in config.tags] == [
        ("reg_0", "holding_register", 0, DataType.UINT16),
        ("reg_1", "holding_register", 1, DataType.UINT16),
        ("reg_2", "holding_register", 2, DataType.UINT16),
        ("flow_00", "holding_register", 10, DataType.FLOAT32),
        ("flow_01", "holding_register", 12, DataType.FLOAT32),  # steps by the type's width
        ("flow_02", "holding_register", 14, DataType.FLOAT32),
        ("alarm", "holding_register", 1, DataType.BOOL),  # a bit inside a range is fine
        ("run1", "coil", 5, DataType.BOOL),
        ("run2", "coil", 6, DataType.BOOL),
    ]
    assert all(t.range is None for t in config.tags)
    assert {t.scale for t in config.tags if t.name.startswith("flow")} == {0.1}


def test_a_range_reads_like_the_same_tags_written_one_by_one() -> None:
    ranged = device(block("r{address}", 0, 100), block("s{index}", 200, 10, type="uint32"))
    single = device(
        *[
            {"name": f"r{a}", "table": "holding_register", "address": a, "type": "uint16"}
            for a in range(100)
        ],
        *[
            {"name": f"s{i}", "table": "holding_register", "address": 200 + 2 * i, "type": "uint32"}
            for i in range(10)
        ],
    )
    assert ranged.tags == single.tags
    assert plan_reads(ranged.tags, max_gap=16) == plan_reads(single.tags, max_gap=16)


def test_interleaved_ranges_with_a_step_do_not_overlap() -> None:
    config = device(
        block("speed{index}", 0, 4, step=10),
        block("current{index}", 1, 4, step=10),
        {"name": "mode", "table": "holding_register", "address": 5},  # in the gaps
    )
    assert sorted(t.address for t in config.tags) == [0, 1, 5, 10, 11, 20, 21, 30, 31]


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ([block("same", 0, 5)], "needs a placeholder"),
        ([block("r{unit}", 0, 5)], r"unknown placeholder \{unit\}"),
        ([block("r{address.real}", 0, 5)], "unknown placeholder"),
        ([block("r{index:s}", 0, 5)], "cannot format the name"),
        ([block("r{index", 0, 5)], "cannot read the name pattern"),
        ([block("r{index}", 0, 5, type="uint32", step=1)], "less than the 2 registers"),
        ([block("r{index:0>200}", 0, 2)], "tag names must be 1 to 200 characters: 'r0000"),
        ([block("r{index}", 65530, 4, type="uint16", step=2)], "ends past address 65535"),
        ([{**block("r{index}", 0, 5), "address": 3}], "either `address` or `range`"),
        ([{"name": "r", "table": "holding_register"}], "needs `address`"),
        ([block("r{index}", 0, 5, type="string")], "needs `length`"),
        (
            [block("a{index}", 0, 10), block("b{index}", 9, 10)],
            r"tags 0 \('a\{index\}'\) and 1 \('b\{index\}'\) both cover holding_register 9",
        ),
        (
            [block("a{index}", 0, 10), {"name": "x", "table": "holding_register", "address": 4}],
            "both cover holding_register 4",
        ),
        (
            [
                {"name": "x", "table": "holding_register", "address": 9, "type": "uint32"},
                block("a{index}", 10, 10),
            ],
            "both cover holding_register 10",
        ),
        (
            [
                block("a{index}", 0, 10, step=10),
                {"name": "x", "table": "holding_register", "address": 5},
                block("b{index}", 90, 2),
            ],
            "tags 0 .* and 2 .* both cover holding_register 90",
        ),
        ([block("r{index}", 0, 3), block("r{index}", 10, 3)], "repeated: r0, r1, r2"),
        (
            [block("r{index}", 0, 3), {"name": "r1", "table": "input_register", "address": 0}],
            "repeated: r1",
        ),
    ],
)
def test_range_rules(tags: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        device(*tags)


def test_single_tags_may_still_overlap_each_other() -> None:
    config = device(
        {"name": "word", "table": "holding_register", "address": 0},
        {"name": "dword", "table": "holding_register", "address": 0, "type": "uint32"},
    )
    assert len(config.tags) == 2


def test_ranges_follow_one_based_addressing() -> None:
    with pytest.raises(ValidationError, match="addresses start at 1"):
        device(block("r{address}", 0, 5), zero_based=False)
    assert device(block("r{address}", 1, 5), zero_based=False).tags[0].name == "r1"


def test_a_hundred_thousand_tags_from_a_thousand_ranges() -> None:
    devices = [
        {
            "type": "modbus",
            "name": f"press-{n}",
            "host": "gateway",
            "unit": n % 250 + 1,
            "tags": [block("hr{address:03d}", 0, 100)],
        }
        for n in range(1000)
    ]
    config = AgentConfig.model_validate(
        {
            "agent": {"id": "a1"},
            "buffer": {"path": "b.sqlite"},
            "mqtt": {"url": "mqtt://h"},
            "devices": devices,
        }
    )
    assert sum(len(d.tags) for d in config.devices) == 100_000
    last = config.devices[-1].tags[-1]
    assert (last.name, last.address) == ("hr099", 99)


def test_the_modbus_sample_configures_a_range() -> None:
    sample = Path(__file__).resolve().parents[2] / "protocols" / "modbus" / "sample.yaml"
    tags = load_agent_config(sample).devices[0].tags
    nozzles = [(t.name, t.address) for t in tags if t.name.startswith("nozzle_")]
    assert nozzles[0] == ("nozzle_01_temp", 11)
    assert nozzles[-1] == ("nozzle_12_temp", 33)
    assert len(nozzles) == 12
