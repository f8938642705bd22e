"""The simulator's parts without a network: its Modbus image, machine, runner and options."""

import pytest
from pymodbus.constants import ExcCodes

from protocols.simulator.cli import build_parser
from protocols.simulator.machine import TAGS, Machine, MachineState, SimTag
from protocols.simulator.modbus_server import ModbusImage, ModbusUnits
from protocols.simulator.runner import Simulator
from shared.readings import DataType

TOTAL = SimTag("total", DataType.UINT32, "holding_register", 30, "Total", writable=True)


def image(machine: Machine, tags: tuple[SimTag, ...] = TAGS) -> ModbusImage:
    return ModbusImage(machine, tags, "ABCD", lambda: 7)


def test_the_image_lays_out_the_machine_values() -> None:
    machine = Machine()
    machine.set(1, state=int(MachineState.DOWN), good_count=0x12345)
    registers = image(machine).table("holding_register")
    assert registers[0] == MachineState.DOWN
    assert registers[2:4] == [0x0001, 0x2345]


async def test_an_unknown_function_is_illegal() -> None:
    answer = await image(Machine()).on_access(0x2B, 0, 0, 1, [0], None)
    assert answer is ExcCodes.ILLEGAL_FUNCTION


async def test_a_write_must_cover_whole_tags() -> None:
    machine = Machine()
    machine.values["total"] = 0  # the tag this test adds to the machine's map
    served = image(machine, (*TAGS, TOTAL))
    registers = served.table("holding_register")
    assert await served.on_access(16, 30, 30, 1, registers, [5]) is ExcCodes.ILLEGAL_ADDRESS
    assert machine.values["total"] == 0
    assert served.writes_served == 0
    assert await served.on_access(16, 30, 30, 2, registers, [1, 2]) is None
    assert machine.values["total"] == 0x10002
    assert machine.updated_us == 7


def test_every_unit_id_needs_a_default_image() -> None:
    with pytest.raises(ValueError, match=r"unit 0 \(every unit id not listed\) needs an image"):
        ModbusUnits({1: image(Machine())})


def test_a_machine_disabled_remotely_idles_until_enabled() -> None:
    machine = Machine()
    machine.set(0, enable=False)
    machine.step(1.0, 1_000_000)
    assert machine.values["state"] == MachineState.IDLE
    assert machine.values["reason_code"] == 6
    assert machine.values["running"] is False
    machine.set(1_000_000, enable=True)
    machine.step(1.0, 2_000_000)
    assert machine.values["reason_code"] != 6


def test_unit_ids_outside_the_modbus_range_are_refused() -> None:
    for units in ([0], [248]):
        with pytest.raises(ValueError, match="modbus_units are unit ids from 1 to 247"):
            Simulator(opcua_port=None, modbus_port=None, modbus_units=units)


async def test_a_simulator_never_started_stops_without_error() -> None:
    simulator = Simulator(opcua_port=None, modbus_port=None)
    await simulator.stop()
    assert simulator.modbus_connections() == 0


def test_unit_ids_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["--modbus-units", "2, 3,"]).modbus_units == (2, 3)
    assert build_parser().parse_args([]).modbus_units == ()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--modbus-units", "2,x"])
    assert "not a list of unit ids: '2,x'" in capsys.readouterr().err
