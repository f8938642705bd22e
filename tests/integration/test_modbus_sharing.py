"""Modbus devices behind one endpoint share its connections, against the simulator's server
answering several unit ids on one port, as a gateway does."""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from agent.poller import DevicePoller
from agent.sources import build_sources
from protocols.base import DeviceState, DeviceUnreachable
from protocols.modbus.config import ModbusDevice
from protocols.modbus.pool import ModbusPool
from protocols.modbus.source import ModbusSource
from protocols.simulator.runner import Simulator
from shared.clock import SystemClock
from shared.readings import Quality, Reading
from tests.harness import by_tag, eventually, modbus_device, running_simulator
from tests.servers import free_port

UNITS = (1, 2, 3, 4)


def unit_device(port: int, unit: int, **extra: Any) -> ModbusDevice:
    """A device reading every simulator tag from one unit id behind the simulator's port."""
    return ModbusDevice.model_validate(
        {**modbus_device(port, name=f"unit{unit}"), "unit": unit, "timeout": "300ms", **extra}
    )


def mark_units(sim: Simulator) -> None:
    """Give each unit's machine values that say which unit answered."""
    for unit, machine in sim.unit_machines.items():
        machine.paused = True
        machine.set(sim.clock.time_us(), speed_setpoint=1000 * unit, program=f"UNIT-{unit}")


def assert_answered_by(unit: int, readings: Sequence[Reading]) -> None:
    values = by_tag(readings)
    assert values["speed_setpoint"].value == 1000 * unit
    assert values["program"].value == f"UNIT-{unit}"
    assert {reading.quality for reading in readings} == {Quality.GOOD}


@contextlib.asynccontextmanager
async def connected(
    pool: ModbusPool, configs: Sequence[ModbusDevice]
) -> AsyncIterator[list[ModbusSource]]:
    sources = [ModbusSource(config, SystemClock(), pool) for config in configs]
    try:
        for source in sources:
            await source.connect()
        yield sources
    finally:
        for source in sources:
            await source.close()


async def test_devices_on_one_endpoint_share_one_connection() -> None:
    async with running_simulator(opcua=False, modbus_units=UNITS) as sim:
        mark_units(sim)
        configs = [unit_device(sim.modbus_port or 0, unit) for unit in UNITS]
        async with connected(ModbusPool(SystemClock()), configs) as sources:
            for _ in range(3):
                polls = await asyncio.gather(*(source.read() for source in sources))
                for unit, readings in zip(UNITS, polls, strict=True):
                    assert_answered_by(unit, readings)
            assert sim.modbus_connections() == 1
            assert sim.modbus_units.connections_accepted == 1
            per_poll = len(sources[0].requests)
            assert {unit: sim.modbus_units.requests[unit] for unit in UNITS} == dict.fromkeys(
                UNITS, 3 * per_poll
            )

        async def closed() -> bool:
            return sim.modbus_connections() == 0

        await eventually(closed, timeout=5, what="the last device out to close the connection")


async def test_the_agent_builds_its_modbus_devices_on_one_pool() -> None:
    async with running_simulator(opcua=False, modbus_units=UNITS) as sim:
        mark_units(sim)
        sources = build_sources(
            [unit_device(sim.modbus_port or 0, unit) for unit in UNITS], SystemClock()
        )
        try:
            for source in sources:
                await source.connect()
            for unit, source in zip(UNITS, sources, strict=True):
                assert_answered_by(unit, await source.read())
            assert sim.modbus_units.connections_accepted == 1
        finally:
            for source in sources:
                await source.close()


async def test_max_connections_bounds_the_connections_to_an_endpoint() -> None:
    async with running_simulator(opcua=False, modbus_units=UNITS) as sim:
        mark_units(sim)
        port = sim.modbus_port or 0
        configs = [unit_device(port, 1, max_connections=2)]
        configs += [unit_device(port, unit) for unit in UNITS[1:]]
        configs.append(unit_device(port, 9))  # not one of UNITS: the main machine answers
        async with connected(ModbusPool(SystemClock()), configs) as sources:
            polls = await asyncio.gather(*(source.read() for source in sources[:-1]))
            for unit, readings in zip(UNITS, polls, strict=True):
                assert_answered_by(unit, readings)
            assert by_tag(await sources[-1].read())["program"].value == "P-1001"
            assert sim.modbus_connections() == 2
            assert sim.modbus_units.connections_accepted == 2


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("silent", r"read at 0 x\d+ failed: no answer from unit 2 on"),
        ("gateway_failure", r"gateway target device failed to respond \(exception 11\)"),
    ],
)
async def test_a_unit_that_does_not_answer_is_unreachable_alone(failure: str, message: str) -> None:
    async with running_simulator(opcua=False, modbus_units=UNITS) as sim:
        mark_units(sim)
        configs = [unit_device(sim.modbus_port or 0, unit) for unit in UNITS]
        async with connected(ModbusPool(SystemClock()), configs) as sources:
            dead = sim.modbus_units.images[2]
            setattr(dead, failure, True)
            polls = await asyncio.gather(
                *(source.read() for source in sources), return_exceptions=True
            )
            assert isinstance(polls[1], DeviceUnreachable)
            assert str(polls[1]).startswith("unit2: ")
            assert re.search(message, str(polls[1])), str(polls[1])
            for unit, readings in zip(UNITS, polls, strict=True):
                if unit != 2:
                    assert isinstance(readings, list)
                    assert_answered_by(unit, readings)
            states = [source.state for source in sources]
            assert (
                states
                == [DeviceState.CONNECTED, DeviceState.DISCONNECTED] + [DeviceState.CONNECTED] * 2
            )

            # Reconnecting asks the unit first, on the same connection.
            await sources[1].close()
            with pytest.raises(DeviceUnreachable, match=message):
                await sources[1].connect()
            assert sources[1].state is DeviceState.DISCONNECTED
            assert_answered_by(3, await sources[2].read())
            setattr(dead, failure, False)
            await sources[1].connect()
            assert_answered_by(2, await sources[1].read())
            assert sim.modbus_units.connections_accepted == 1
            assert sim.modbus_connections() == 1


async def test_a_dead_unit_is_logged_once_while_the_others_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_simulator(opcua=False, modbus_units=UNITS) as sim:
        mark_units(sim)
        pool = ModbusPool(SystemClock())
        sources = [
            ModbusSource(unit_device(sim.modbus_port or 0, unit), SystemClock(), pool)
            for unit in UNITS
        ]
        sim.modbus_units.images[2].silent = True
        async with polling(sources) as pollers:
            with caplog.at_level(logging.INFO, logger="agent.poller"):

                async def probed_again() -> bool:
                    return sim.modbus_units.requests[2] >= 4

                await eventually(probed_again, timeout=20, what="three reconnects of unit 2")
                polls_before = [poller.polls for poller in pollers]

                async def others_poll() -> bool:
                    return all(
                        poller.polls > before + 2
                        for poller, before in zip(pollers, polls_before, strict=True)
                        if poller is not pollers[1]
                    )

                await eventually(others_poll, timeout=10, what="the other units to keep polling")
                assert pollers[1].polls == 0
                lines = [r.getMessage() for r in caplog.records if "unit2" in r.getMessage()]
                assert len(lines) == 1, lines
                assert lines[0].startswith("device unit2 unreachable: ")

                sim.modbus_units.images[2].silent = False

                async def unit_2_back() -> bool:
                    return pollers[1].polls > 0

                await eventually(unit_2_back, timeout=40, what="unit 2 to be polled again")
                lines = [r.getMessage() for r in caplog.records if "unit2" in r.getMessage()]
                assert len(lines) == 2, lines
                assert lines[1].startswith("device unit2 reachable again after")
            assert sim.modbus_units.connections_accepted == 1


async def test_a_restarted_server_is_reconnected_once_for_every_device() -> None:
    port = free_port()

    def simulator() -> Simulator:
        return Simulator(opcua_port=None, modbus_port=port, modbus_units=UNITS)

    sim = simulator()
    await sim.start()
    try:
        pool = ModbusPool(SystemClock())
        sources = [ModbusSource(unit_device(port, unit), SystemClock(), pool) for unit in UNITS]
        async with polling(sources) as pollers:
            await eventually(lambda: all_polled(pollers, 1), timeout=10, what="first polls")
            assert sim.modbus_units.connections_accepted == 1
            await sim.stop()

            async def all_down() -> bool:
                return all(source.state is not DeviceState.CONNECTED for source in sources)

            await eventually(all_down, timeout=10, what="every device to see the connection go")
            sim = simulator()
            await sim.start()
            polls = [poller.polls for poller in pollers]

            async def all_back() -> bool:
                return all(
                    poller.polls > before for poller, before in zip(pollers, polls, strict=True)
                )

            await eventually(all_back, timeout=40, what="every device to poll again")
            assert sim.modbus_units.connections_accepted == 1
            assert sim.modbus_connections() == 1
    finally:
        await sim.stop()


async def all_polled(pollers: Sequence[DevicePoller], polls: int) -> bool:
    return all(poller.polls >= polls for poller in pollers)


@contextlib.asynccontextmanager
async def polling(sources: Sequence[ModbusSource]) -> AsyncIterator[list[DevicePoller]]:
    """Poll each source every 200 ms as the agent does, readings going nowhere."""

    async def discard(readings: Sequence[Reading]) -> int:
        return 0

    pollers = [
        DevicePoller(source, discard, interval=0.2, clock=SystemClock()) for source in sources
    ]
    tasks = [asyncio.create_task(poller.run()) for poller in pollers]
    try:
        yield pollers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
