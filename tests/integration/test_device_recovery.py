"""A PLC that vanishes and returns: bad quality while away, recovery without a restart."""

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from agent.poller import DevicePoller
from protocols.base import DeviceState
from protocols.modbus.config import ModbusDevice
from protocols.modbus.source import ModbusSource
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaSource
from protocols.simulator.runner import Simulator
from shared.clock import SystemClock
from shared.readings import Quality, Reading
from tests.harness import eventually, modbus_device, opcua_device
from tests.servers import free_port


@pytest.mark.parametrize("driver", ["modbus", "opcua-poll", "opcua-subscribe"])
async def test_vanished_plc_reads_bad_then_recovers_and_resubscribes(driver: str) -> None:
    opcua_port, modbus_port = free_port(), free_port()
    sim = Simulator(opcua_port=opcua_port, modbus_port=modbus_port)
    await sim.start()
    received: list[Reading] = []

    async def sink(readings: Sequence[Reading]) -> int:
        received.extend(readings)
        return 0

    source: ModbusSource | OpcUaSource
    if driver == "modbus":
        source = ModbusSource(
            ModbusDevice.model_validate(modbus_device(modbus_port, interval="100ms")),
            SystemClock(),
        )
    else:
        assert sim.opcua is not None
        config = {
            **opcua_device(sim.opcua.endpoint),
            "timeout": "1s",
            "mode": driver.removeprefix("opcua-"),
            "publishing_interval": "100ms",
        }
        source = OpcUaSource(OpcUaDevice.model_validate(config), SystemClock())
    poller = DevicePoller(source, sink, interval=0.1, clock=SystemClock())
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: _has(received, Quality.GOOD), what="good readings")
        await sim.stop()
        await eventually(lambda: _has(received, Quality.BAD), what="bad readings", timeout=20)
        assert poller.state is not DeviceState.CONNECTED
        bad = [r for r in received if r.quality is Quality.BAD]
        assert len(bad) == len({r.tag for r in bad}), "one bad reading per tag, not per poll"
        sim = Simulator(opcua_port=opcua_port, modbus_port=modbus_port)
        await sim.start()
        seen = len(received)
        await eventually(lambda: _has(received[seen:], Quality.GOOD), what="recovery", timeout=30)
        sim.machine.paused = True
        sim.machine.set(sim.clock.time_us(), good_count=4242)
        await eventually(
            lambda: _value(received, "good_count", 4242), what="fresh data", timeout=15
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.stop()


async def _has(readings: Sequence[Reading], quality: Quality) -> bool:
    return any(reading.quality is quality for reading in readings)


async def _value(readings: Sequence[Reading], tag: str, value: object) -> bool:
    return any(r.tag == tag and r.value == value for r in readings)
