"""Running the simulated machine and its servers together."""

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from pymodbus.server import ModbusBaseServer, ModbusTcpServer

from protocols.modbus.codec import ByteOrder
from protocols.simulator.machine import TAGS, Machine, SimTag, bulk_tags
from protocols.simulator.modbus_server import (
    ModbusImage,
    ModbusUnits,
    build_serial_server,
    build_server,
)
from protocols.simulator.opcua_server import OpcUaMachineServer, OpcUaServerSecurity
from shared.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class Simulator:
    """One machine served over OPC UA and Modbus, advancing every `tick_s` seconds.

    Modbus is served on TCP (`modbus_port`, Modbus TCP framing or, with `rtu_over_tcp`, RTU
    framing) and/or on a serial line (`serial_port`, RTU). Every unit id reads the one machine,
    except those in `modbus_units`, each a machine of its own (seeded from `seed` and the unit
    id), as behind a gateway. `bulk` adds that many synthetic tags for load tests.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        opcua_port: int | None = 4840,
        modbus_port: int | None = 5020,
        rtu_over_tcp: bool = False,
        serial_port: str | None = None,
        modbus_units: Sequence[int] = (),
        baudrate: int = 19200,
        tick_s: float = 0.1,
        seed: int = 1,
        byte_order: ByteOrder = "ABCD",
        bulk: int = 0,
        opcua_security: OpcUaServerSecurity | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.modbus_port = modbus_port
        self.tags: tuple[SimTag, ...] = TAGS + bulk_tags(bulk)
        bulk_part = self.tags[len(TAGS) :]
        self.machine = Machine(seed=seed, start_us=self.clock.time_us(), bulk=bulk_part)
        self.tick_s = tick_s
        if any(not 1 <= unit <= 247 for unit in modbus_units):
            raise ValueError("modbus_units are unit ids from 1 to 247")
        self.unit_machines = {
            unit: Machine(seed=seed + unit, start_us=self.clock.time_us(), bulk=bulk_part)
            for unit in modbus_units
        }
        self.modbus_image = ModbusImage(self.machine, self.tags, byte_order, self.clock.time_us)
        self.modbus_units = ModbusUnits(
            {
                0: self.modbus_image,
                **{
                    unit: ModbusImage(machine, self.tags, byte_order, self.clock.time_us)
                    for unit, machine in self.unit_machines.items()
                },
            }
        )
        self._modbus: list[ModbusBaseServer] = []
        if modbus_port is not None:
            self._modbus.append(
                build_server(self.modbus_units, host, modbus_port, rtu_framing=rtu_over_tcp)
            )
        if serial_port is not None:
            self._modbus.append(build_serial_server(self.modbus_units, serial_port, baudrate))
        self.opcua = (
            OpcUaMachineServer(self.machine, self.tags, host, opcua_port, opcua_security)
            if opcua_port is not None
            else None
        )
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the servers and the machine's clock."""
        for server in self._modbus:
            await server.serve_forever(background=True)
        if self.opcua is not None:
            await self.opcua.start()
        self._ticker = asyncio.create_task(self._tick(), name="simulator-tick")

    async def _tick(self) -> None:
        last = self.clock.monotonic()
        while True:
            await self.clock.sleep(self.tick_s)
            now = self.clock.monotonic()
            now_us = self.clock.time_us()
            for machine in (self.machine, *self.unit_machines.values()):
                machine.step(now - last, now_us)
            last = now
            if self.opcua is not None:
                await self.opcua.publish()

    def modbus_connections(self) -> int:
        """Modbus TCP connections open now."""
        return sum(
            len(server.active_connections)
            for server in self._modbus
            if isinstance(server, ModbusTcpServer)
        )

    async def stop(self) -> None:
        """Stop the clock and the servers."""
        if self._ticker is not None:
            self._ticker.cancel()
            # Waited for, not awaited: awaiting a cancelled task throws into this coroutine,
            # which on Python 3.11 stops line tracing in its callers (CPython gh-106749).
            await asyncio.wait({self._ticker})
            with contextlib.suppress(asyncio.CancelledError):
                self._ticker.result()
        if self.opcua is not None:
            await self.opcua.stop()
        for server in self._modbus:
            await server.shutdown()  # type: ignore[no-untyped-call]
