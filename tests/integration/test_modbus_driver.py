"""The Modbus driver against the simulator's real pymodbus servers (TCP, RTU over TCP, serial)."""

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main as agent_main
from protocols.base import DeviceState, DeviceUnreachable, WriteFailed, WriteRefused
from protocols.modbus.codec import ByteOrder
from protocols.modbus.config import ModbusDevice
from protocols.modbus.pool import ModbusPool
from protocols.modbus.source import ModbusSource
from protocols.simulator.machine import TAGS
from protocols.simulator.runner import Simulator
from shared.clock import SystemClock
from shared.readings import DataType, Quality
from tests.harness import DISTINCT_VALUES, by_tag, modbus_device, running_simulator
from tests.servers import free_port


@contextlib.asynccontextmanager
async def connected(config: dict[str, Any]) -> AsyncIterator[ModbusSource]:
    source = ModbusSource(ModbusDevice.model_validate(config), SystemClock())
    await source.connect()
    try:
        yield source
    finally:
        await source.close()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with running_simulator(opcua=False) as simulator:
        yield simulator


def device(sim: Simulator, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "modbus",
        "name": "m",
        "host": "127.0.0.1",
        "port": sim.modbus_port,
        "tags": tags,
        **extra,
    }


@pytest.mark.parametrize("order", ["ABCD", "BADC", "CDAB", "DCBA"])
async def test_every_type_in_every_byte_order(order: ByteOrder) -> None:
    async with running_simulator(opcua=False, byte_order=order) as sim:
        sim.machine.paused = True
        sim.machine.set(sim.clock.time_us(), **DISTINCT_VALUES)
        async with connected({**modbus_device(sim.modbus_port), "byte_order": order}) as source:
            assert source.state is DeviceState.CONNECTED
            readings = by_tag(await source.read())
    assert {name: r.value for name, r in readings.items()} == DISTINCT_VALUES
    for tag in TAGS:
        assert readings[tag.name].data_type is tag.data_type
        assert type(readings[tag.name].value) is tag.data_type.python_type


async def test_requests_are_coalesced_and_counted(sim: Simulator) -> None:
    async with connected(modbus_device(sim.modbus_port)) as source:
        before = sim.modbus_image.requests_served
        await source.read()
        assert sim.modbus_image.requests_served - before == len(source.requests) == 4
    spread = [
        {"name": "state", "table": "holding_register", "address": 0},
        {"name": "setpoint", "table": "holding_register", "address": 20},
    ]
    async with connected(device(sim, spread, max_gap=18)) as source:
        assert len(source.requests) == 2, "a gap of 19 registers is not read over"
    async with connected(device(sim, spread, max_gap=19)) as source:
        before = sim.modbus_image.requests_served
        values = by_tag(await source.read())
        assert sim.modbus_image.requests_served - before == 1
        assert values["setpoint"].value == 12000


async def test_one_based_addressing(sim: Simulator) -> None:
    config = modbus_device(sim.modbus_port)
    for tag in config["tags"]:
        tag["address"] += 1
    async with connected({**config, "zero_based": False}) as source:
        assert by_tag(await source.read())["program"].value == "P-1001"


async def test_bits_and_scaling(sim: Simulator) -> None:
    sim.machine.paused = True
    sim.machine.set(sim.clock.time_us(), state=0b101, axis_offset=-250)
    tags = [
        {"name": "bit0", "table": "holding_register", "address": 0, "type": "bool", "bit": 0},
        {"name": "bit1", "table": "holding_register", "address": 0, "type": "bool", "bit": 1},
        {"name": "bit2", "table": "holding_register", "address": 0, "type": "bool", "bit": 2},
        {
            "name": "mm",
            "table": "holding_register",
            "address": 8,
            "type": "int16",
            "scale": 0.1,
            "offset": 100.0,
        },
    ]
    async with connected(device(sim, tags)) as source:
        readings = by_tag(await source.read())
    assert [readings[f"bit{i}"].value for i in range(3)] == [True, False, True]
    assert readings["mm"].value == pytest.approx(75.0)
    assert readings["mm"].data_type is DataType.FLOAT64


async def test_busy_device_is_retried_then_given_up(sim: Simulator) -> None:
    tags = [{"name": "state", "table": "holding_register", "address": 0}]
    async with connected(device(sim, tags, busy_retries=3, busy_retry_delay="10ms")) as source:
        sim.modbus_image.busy_answers = 3
        assert by_tag(await source.read())["state"].quality is Quality.GOOD
        sim.modbus_image.busy_answers = 4
        with pytest.raises(
            DeviceUnreachable, match=r"refused .*: server device busy \(exception 6\)$"
        ):
            await source.read()
        assert source.state is DeviceState.DISCONNECTED


async def test_read_outside_the_map_is_refused(sim: Simulator) -> None:
    tags = [{"name": "far", "table": "holding_register", "address": 5000}]
    async with connected(device(sim, tags)) as source:
        with pytest.raises(DeviceUnreachable) as refused:
            await source.read()
    assert str(refused.value) == (
        "m: device refused holding_register read at 5000 x1: illegal data address (exception 2)"
    )


async def test_unreachable_device() -> None:
    config = {
        "type": "modbus",
        "name": "m",
        "host": "127.0.0.1",
        "port": free_port(),
        "timeout": "1s",
        "tags": [{"name": "t", "table": "holding_register", "address": 0}],
    }
    source = ModbusSource(ModbusDevice.model_validate(config), SystemClock())
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await source.connect()
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await source.read()
    [bad] = source.unreachable_readings(5)
    assert (bad.quality, bad.value, bad.data_type) == (Quality.BAD, None, DataType.UINT16)


async def test_rtu_framing_over_tcp() -> None:
    async with running_simulator(opcua=False, rtu_over_tcp=True) as sim:
        config = {**modbus_device(sim.modbus_port), "transport": "rtu_over_tcp"}
        async with connected(config) as source:
            assert by_tag(await source.read())["program"].value == "P-1001"


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two connected pseudo-terminals, a null-modem cable in software."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is needed for the serial line test: install Debian's socat")
    a, b = tmp_path / "plc", tmp_path / "agent"
    process = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if a.exists() and b.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield a, b
    finally:
        process.terminate()
        process.wait()


def rtu_device(agent_end: Path, unit: int = 7) -> dict[str, Any]:
    """An RTU device on the agent's end of the line, reading every simulator tag."""
    tags = [
        {
            "name": tag.name,
            "table": tag.modbus_table,
            "address": tag.modbus_address,
            "type": tag.data_type.value,
            "length": tag.string_length,
        }
        for tag in TAGS
    ]
    return {
        "type": "modbus",
        "name": f"rtu{unit}",
        "transport": "rtu",
        "unit": unit,
        "serial": {"port": str(agent_end), "baudrate": 115200, "parity": "N"},
        "tags": tags,
    }


def open_handles(path: Path) -> int:
    """How many file descriptors of this process are open on a device (through its link)."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count


async def test_rtu_on_a_serial_line(serial_pair: tuple[Path, Path]) -> None:
    plc_end, agent_end = serial_pair
    sim = Simulator(opcua_port=None, modbus_port=None, serial_port=str(plc_end), baudrate=115200)
    await sim.start()
    try:
        async with connected(rtu_device(agent_end)) as source:
            readings = by_tag(await source.read())
        assert readings["program"].value == "P-1001"
        assert readings["speed_setpoint"].value == 12000
    finally:
        await sim.stop()


async def test_rtu_devices_on_one_serial_line_share_the_port(
    serial_pair: tuple[Path, Path],
) -> None:
    plc_end, agent_end = serial_pair
    units = (7, 8)
    sim = Simulator(
        opcua_port=None,
        modbus_port=None,
        serial_port=str(plc_end),
        baudrate=115200,
        modbus_units=units,
    )
    await sim.start()
    try:
        for unit, machine in sim.unit_machines.items():
            machine.paused = True
            machine.set(sim.clock.time_us(), speed_setpoint=1000 * unit)
        pool = ModbusPool(SystemClock())
        sources = [
            ModbusSource(
                ModbusDevice.model_validate(rtu_device(agent_end, unit)), SystemClock(), pool
            )
            for unit in units
        ]
        try:
            for source in sources:
                await source.connect()
            assert open_handles(agent_end) == 1
            for _ in range(3):
                polls = await asyncio.gather(*(source.read() for source in sources))
                assert [by_tag(poll)["speed_setpoint"].value for poll in polls] == [7000, 8000]
            requests = 3 * len(sources[0].requests)
            assert [sim.modbus_units.requests[unit] for unit in units] == [requests, requests]
        finally:
            for source in sources:
                await source.close()
        assert open_handles(agent_end) == 0
    finally:
        await sim.stop()


WRITABLE = [
    {
        "name": "speed_setpoint",
        "table": "holding_register",
        "address": 20,
        "writable": True,
        "min": 0,
        "max": 15000,
    },
    {"name": "enable", "table": "coil", "address": 1, "type": "bool", "writable": True},
    {"name": "state", "table": "holding_register", "address": 0},
    {
        "name": "counter",
        "table": "holding_register",
        "address": 2,
        "type": "uint32",
        "writable": True,
    },
]


@pytest.mark.parametrize("functions", ["single", "multiple"])
async def test_writes_reach_the_device(sim: Simulator, functions: str) -> None:
    async with connected(device(sim, WRITABLE, write_functions=functions)) as source:
        await source.write("speed_setpoint", 9000)
        await source.write("enable", False)
        assert sim.machine.values["speed_setpoint"] == 9000
        assert sim.machine.values["enable"] is False
        readings = by_tag(await source.read())
        assert readings["speed_setpoint"].value == 9000
        assert readings["enable"].value is False
    assert sim.modbus_image.writes_served == 2


async def test_writes_outside_the_allow_list_are_refused(sim: Simulator) -> None:
    async with connected(device(sim, WRITABLE)) as source:
        refused = [
            ("state", 1, "read-only"),
            ("ghost", 1, "no such tag"),
            ("speed_setpoint", 20000, "above the configured maximum"),
            ("speed_setpoint", -1, "not a valid uint16"),
            ("speed_setpoint", "fast", "not a valid uint16"),
            ("enable", 1, "not a valid bool"),
        ]
        for tag, value, message in refused:
            with pytest.raises(WriteRefused, match=message):
                await source.write(tag, value)
        with pytest.raises(WriteFailed, match=r"refused the write: illegal .* \(exception \d\)$"):
            await source.write("counter", 5)  # writable here, not on the device
    assert sim.modbus_image.writes_served == 0
    assert sim.machine.values["speed_setpoint"] == 12000


async def test_scaled_writes_undo_the_scaling(sim: Simulator) -> None:
    tags = [
        {
            "name": "rpm_k",
            "table": "holding_register",
            "address": 20,
            "writable": True,
            "scale": 0.001,
            "max": 15.0,
        }
    ]
    async with connected(device(sim, tags)) as source:
        await source.write("rpm_k", 9.5)
        assert sim.machine.values["speed_setpoint"] == 9500
        with pytest.raises(WriteRefused, match="not reachable"):
            await source.write("rpm_k", 9.0005)
        with pytest.raises(WriteRefused, match="above the configured maximum"):
            await source.write("rpm_k", 16)


async def test_write_command(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "w", "http_port": 0},
                "buffer": {"path": str(tmp_path / "b.sqlite")},
                "mqtt": {"url": "mqtt://127.0.0.1"},
                "devices": [device(sim, WRITABLE)],
            }
        )
    )
    assert (
        await asyncio.to_thread(
            agent_main, ["write", "--config", str(path), "m", "speed_setpoint", "7000"]
        )
        == 0
    )
    assert "m/speed_setpoint = 7000" in capsys.readouterr().out
    assert sim.machine.values["speed_setpoint"] == 7000
    for args, message in [
        (["m", "state", "1"], "read-only"),
        (["nope", "state", "1"], "no device 'nope'"),
        (["m", "speed_setpoint", "fast"], "is not JSON"),
    ]:
        assert await asyncio.to_thread(agent_main, ["write", "--config", str(path), *args]) == 1
        assert message in capsys.readouterr().err
