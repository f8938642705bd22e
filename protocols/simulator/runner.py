"""Running the simulated machine and both of its servers together."""

import asyncio
import contextlib
import logging

from protocols.modbus.codec import ByteOrder
from protocols.simulator.machine import TAGS, Machine
from protocols.simulator.modbus_server import ModbusImage, build_server
from protocols.simulator.opcua_server import OpcUaMachineServer
from shared.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class Simulator:
    """One machine, served over OPC UA and Modbus TCP, advancing every `tick_s` seconds."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        opcua_port: int | None = 4840,
        modbus_port: int | None = 5020,
        tick_s: float = 0.1,
        seed: int = 1,
        byte_order: ByteOrder = "ABCD",
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.modbus_port = modbus_port
        self.machine = Machine(seed=seed, start_us=self.clock.time_us())
        self.tick_s = tick_s
        self.modbus_image = ModbusImage(self.machine, TAGS, byte_order)
        self._modbus = (
            build_server(self.modbus_image, host, modbus_port) if modbus_port is not None else None
        )
        self.opcua = (
            OpcUaMachineServer(self.machine, TAGS, host, opcua_port)
            if opcua_port is not None
            else None
        )
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start both servers and the machine's clock."""
        if self._modbus is not None:
            await self._modbus.serve_forever(background=True)
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
        """Stop the clock and both servers."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.opcua is not None:
            await self.opcua.stop()
        if self._modbus is not None:
            await self._modbus.shutdown()  # type: ignore[no-untyped-call]
