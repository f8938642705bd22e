"""The Modbus and OPC UA drivers against the simulator's real servers."""

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from agent.poller import DevicePoller
from protocols.base import DeviceState, DeviceUnreachable
from protocols.modbus.codec import ByteOrder
from protocols.modbus.config import ModbusDevice
from protocols.modbus.source import ModbusSource
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaSource
from protocols.simulator.machine import TAGS
from protocols.simulator.runner import Simulator
from shared.clock import SystemClock
from shared.readings import DataType, Quality, Reading
from tests.harness import eventually, modbus_device, opcua_device, running_simulator
from tests.servers import free_port

VALUES = {
    "running": True,
    "door_closed": False,
    "state": 2,
    "reason_code": 5,
    "good_count": 123_456_789,
    "scrap_count": 3,
    "spindle_speed": -32_000,
    "axis_offset": 499,
    "temperature": -12.5,
    "pressure": 1.0e-3,
    "program": "RECIPE42",
    "speed_setpoint": 9000,
    "enable": False,
}


def by_name(readings: Sequence[Reading]) -> dict[str, Reading]:
    return {reading.tag: reading for reading in readings}


@pytest.mark.parametrize("order", ["ABCD", "BADC", "CDAB", "DCBA"])
async def test_modbus_reads_every_type_in_every_byte_order(order: ByteOrder) -> None:
    async with running_simulator(opcua=False, byte_order=order) as sim:
        sim.machine.paused = True
        sim.machine.set(sim.clock.time_us(), **VALUES)
        config = ModbusDevice.model_validate(
            {**modbus_device(sim.modbus_port), "byte_order": order}
        )
        source = ModbusSource(config, SystemClock())
        await source.connect()
        assert source.state is DeviceState.CONNECTED
        readings = by_name(await source.read())
        await source.close()
    assert {name: r.value for name, r in readings.items()} == VALUES
    for tag in TAGS:
        assert readings[tag.name].data_type is tag.data_type
        assert type(readings[tag.name].value) is tag.data_type.python_type
    assert len(source.requests) == 4, "one request per table for the simulator's layout"
    assert sim.modbus_image.requests_served == 4


async def test_modbus_one_based_addressing() -> None:
    async with running_simulator(opcua=False) as sim:
        device = modbus_device(sim.modbus_port)
        for tag in device["tags"]:
            tag["address"] += 1
        config = ModbusDevice.model_validate({**device, "zero_based": False})
        source = ModbusSource(config, SystemClock())
        await source.connect()
        readings = by_name(await source.read())
        await source.close()
    assert readings["program"].value == "P-1001"


async def test_modbus_read_outside_the_map_is_a_device_error() -> None:
    async with running_simulator(opcua=False) as sim:
        config = ModbusDevice.model_validate(
            {
                "type": "modbus",
                "name": "m",
                "host": "127.0.0.1",
                "port": sim.modbus_port,
                "tags": [{"name": "far", "table": "holding_register", "address": 5000}],
            }
        )
        source = ModbusSource(config, SystemClock())
        await source.connect()
        with pytest.raises(DeviceUnreachable, match="refused"):
            await source.read()
        assert source.state is DeviceState.DISCONNECTED
        await source.close()


async def test_modbus_unreachable_device() -> None:
    config = ModbusDevice.model_validate(
        {
            "type": "modbus",
            "name": "m",
            "host": "127.0.0.1",
            "port": free_port(),
            "timeout": "1s",
            "tags": [{"name": "t", "table": "holding_register", "address": 0}],
        }
    )
    source = ModbusSource(config, SystemClock())
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await source.connect()
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await source.read()
    [bad] = source.unreachable_readings(5)
    assert (bad.quality, bad.value, bad.data_type) == (Quality.BAD, None, DataType.UINT16)


async def test_opcua_reads_values_types_quality_and_source_timestamps(simulator: Simulator) -> None:
    simulator.machine.paused = True
    unchanged = {name for name, value in VALUES.items() if simulator.machine.values[name] == value}
    stamp = simulator.clock.time_us()
    simulator.machine.set(stamp, **VALUES)
    assert simulator.opcua is not None
    await simulator.opcua.publish()
    config = OpcUaDevice.model_validate(opcua_device(simulator.opcua.endpoint))
    source = OpcUaSource(config, SystemClock())
    await source.connect()
    readings = by_name(await source.read())
    await source.close()
    await source.close()
    assert {name: r.value for name, r in readings.items()} == VALUES
    for tag in TAGS:
        reading = readings[tag.name]
        assert reading.data_type is tag.data_type
        assert reading.server_ts_us is not None
        if tag.name in unchanged:
            assert reading.ts_us < stamp, "the source timestamp is when the value last changed"
        else:
            assert reading.ts_us == stamp
        assert reading.quality is Quality.GOOD


async def test_opcua_batches_reads_and_flags_mismatched_types(simulator: Simulator) -> None:
    assert simulator.opcua is not None
    device = opcua_device(simulator.opcua.endpoint)
    device["max_nodes_per_read"] = 3
    device["tags"][0]["type"] = "int16"  # Running is a Boolean on the server
    device["tags"].append({"name": "missing", "node": "nsu=urn:plantwire:simulator;s=Nope"})
    source = OpcUaSource(OpcUaDevice.model_validate(device), SystemClock())
    await source.connect()
    readings = by_name(await source.read())
    await source.close()
    assert readings["running"].quality is Quality.BAD
    assert readings["running"].value is None
    assert readings["missing"].quality is Quality.BAD
    assert readings["state"].quality is Quality.GOOD
    bad = by_name(source.unreachable_readings(1))
    assert bad["state"].data_type is DataType.UINT16, "learnt from the server"


async def test_opcua_unknown_namespace_and_unreachable_server(simulator: Simulator) -> None:
    assert simulator.opcua is not None
    device = opcua_device(simulator.opcua.endpoint)
    device["tags"][0]["node"] = "nsu=urn:nobody;s=X"
    source = OpcUaSource(OpcUaDevice.model_validate(device), SystemClock())
    with pytest.raises(DeviceUnreachable, match="urn:nobody"):
        await source.connect()
    device = opcua_device(f"opc.tcp://127.0.0.1:{free_port()}/x")
    device["timeout"] = "1s"
    source = OpcUaSource(OpcUaDevice.model_validate(device), SystemClock())
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await source.connect()
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await source.read()


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
async def test_poller_reports_a_vanished_plc_as_bad_and_recovers_without_restart(
    protocol: str,
) -> None:
    opcua_port, modbus_port = free_port(), free_port()
    sim = Simulator(opcua_port=opcua_port, modbus_port=modbus_port)
    await sim.start()
    received: list[Reading] = []

    async def sink(readings: Sequence[Reading]) -> int:
        received.extend(readings)
        return 0

    if protocol == "modbus":
        source: ModbusSource | OpcUaSource = ModbusSource(
            ModbusDevice.model_validate(modbus_device(modbus_port, interval="100ms")),
            SystemClock(),
        )
    else:
        assert sim.opcua is not None
        source = OpcUaSource(
            OpcUaDevice.model_validate({**opcua_device(sim.opcua.endpoint), "timeout": "1s"}),
            SystemClock(),
        )
    poller = DevicePoller(source, sink, interval=0.1, clock=SystemClock())
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: _has(received, Quality.GOOD), what="good readings")
        await sim.stop()
        await eventually(lambda: _has(received, Quality.BAD), what="bad readings", timeout=20)
        assert poller.state is not DeviceState.CONNECTED
        bad_count = sum(r.quality is Quality.BAD for r in received)
        assert bad_count == len(TAGS), "one bad reading per tag, not one per poll"
        sim = Simulator(opcua_port=opcua_port, modbus_port=modbus_port)
        await sim.start()
        seen = len(received)
        await eventually(lambda: _has(received[seen:], Quality.GOOD), what="recovery", timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.stop()


async def _has(readings: Sequence[Reading], quality: Quality) -> bool:
    return any(reading.quality is quality for reading in readings)
