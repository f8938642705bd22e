"""Running the simulated machine and its servers together."""

import asyncio
import contextlib
import logging

from pymodbus.server import ModbusBaseServer

from protocols.modbus.codec import ByteOrder
from protocols.simulator.machine import TAGS, Machine, SimTag, bulk_tags
from protocols.simulator.modbus_server import ModbusImage, build_serial_server, build_server
from protocols.simulator.opcua_server import OpcUaMachineServer, OpcUaServerSecurity
from shared.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class Simulator:
    """One machine served over OPC UA and Modbus, advancing every `tick_s` seconds.

    Modbus is served on TCP (`modbus_port`, Modbus TCP framing or, with `rtu_over_tcp`, RTU
    framing) and/or on a serial line (`serial_port`, RTU). `bulk` adds that many synthetic
    tags for load tests.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        opcua_port: int | None = 4840,
        modbus_port: int | None = 5020,
        rtu_over_tcp: bool = False,
        serial_port: str | None = None,
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
        self.machine = Machine(
            seed=seed, start_us=self.clock.time_us(), bulk=self.tags[len(TAGS) :]
        )
        self.tick_s = tick_s
        self.modbus_image = ModbusImage(self.machine, self.tags, byte_order, self.clock.time_us)
        self._modbus: list[ModbusBaseServer] = []
        if modbus_port is not None:
            self._modbus.append(
                build_server(self.modbus_image, host, modbus_port, rtu_framing=rtu_over_tcp)
            )
        if serial_port is not None:
            self._modbus.append(build_serial_server(self.modbus_image, serial_port, baudrate))
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
            self.machine.step(now - last, self.clock.time_us())
            last = now
            if self.opcua is not None:
                await self.opcua.publish()

    async def stop(self) -> None:
        """Stop the clock and the servers."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.opcua is not None:
            await self.opcua.stop()
        for server in self._modbus:
            await server.shutdown()  # type: ignore[no-untyped-call]
