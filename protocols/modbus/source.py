"""Polling a Modbus TCP device: planned block reads, decoded into readings."""

from collections.abc import Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from protocols.base import DeviceState, DeviceUnreachable
from protocols.modbus.codec import decode
from protocols.modbus.config import BIT_TABLES, ModbusDevice
from protocols.modbus.planner import ReadRequest, plan_reads, tag_span
from shared.clock import Clock
from shared.readings import Quality, Reading


class ModbusSource:
    """A Modbus TCP device, read with as few requests as its tag layout allows."""

    def __init__(self, config: ModbusDevice, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._requests = plan_reads(
            config.tags, max_gap=config.max_gap, address_shift=0 if config.zero_based else 1
        )
        self._client: AsyncModbusTcpClient | None = None
        self._state = DeviceState.DISCONNECTED

    @property
    def name(self) -> str:
        """The device's name."""
        return self._config.name

    @property
    def state(self) -> DeviceState:
        """Current connection state."""
        return self._state

    @property
    def requests(self) -> Sequence[ReadRequest]:
        """The read requests one poll sends."""
        return self._requests

    async def connect(self) -> None:
        """Open the TCP connection."""
        self._state = DeviceState.CONNECTING
        client = AsyncModbusTcpClient(
            self._config.host,
            port=self._config.port,
            timeout=self._config.timeout,
            retries=0,
            reconnect_delay=0,
        )
        try:
            connected = await client.connect()
        except (ModbusException, OSError) as exc:  # pragma: no cover - pymodbus reports via bool
            connected = False
            reason = str(exc)
        else:
            reason = "connection refused or timed out"
        if not connected:
            client.close()
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(
                f"{self.name}: cannot connect to {self._config.host}:{self._config.port}: {reason}"
            )
        self._client = client
        self._state = DeviceState.CONNECTED

    async def read(self) -> list[Reading]:
        """Read every tag once."""
        if self._client is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        readings: list[Reading] = []
        for request in self._requests:
            words = await self._send(self._client, request)
            ts_us = self._clock.time_us()
            readings.extend(self._decode(request, words, ts_us))
        return readings

    async def _send(self, client: AsyncModbusTcpClient, request: ReadRequest) -> list[int]:
        unit = self._config.unit
        calls = {
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
            "holding_register": client.read_holding_registers,
            "input_register": client.read_input_registers,
        }
        try:
            response = await calls[request.table](
                request.address, count=request.count, device_id=unit
            )
        except (TimeoutError, ModbusException, OSError) as exc:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: {request.table} read failed: {exc}") from exc
        if response.isError():
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(
                f"{self.name}: device refused {request.table} read at {request.address}"
                f" x{request.count}: {response}"
            )
        if request.table in BIT_TABLES:
            return [1 if bit else 0 for bit in response.bits[: request.count]]
        return list(response.registers)

    def _decode(self, request: ReadRequest, words: list[int], ts_us: int) -> list[Reading]:
        shift = 0 if self._config.zero_based else 1
        readings = []
        for tag in request.tags:
            offset = tag.address - shift - request.address
            span = words[offset : offset + tag_span(tag)]
            order = tag.byte_order or self._config.byte_order
            value = decode(span, tag.type, order)
            readings.append(Reading(self.name, tag.name, tag.type, ts_us, value, Quality.GOOD))
        return readings

    def unreachable_readings(self, ts_us: int) -> list[Reading]:
        """One bad reading per tag."""
        return [
            Reading(self.name, tag.name, tag.type, ts_us, None, Quality.BAD)
            for tag in self._config.tags
        ]

    async def close(self) -> None:
        """Close the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._state = DeviceState.DISCONNECTED
