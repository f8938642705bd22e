"""Polling a Modbus device: planned block reads decoded into readings, and guarded writes."""

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from protocols.base import DeviceState, DeviceUnreachable, WriteFailed, WriteRefused
from protocols.modbus.codec import encode
from protocols.modbus.config import BIT_TABLES, INTEGER_TYPES, ModbusDevice, ModbusTag
from protocols.modbus.decoder import RequestDecoder
from protocols.modbus.planner import ReadRequest, plan_reads
from protocols.writes import check_write
from shared.clock import Clock
from shared.readings import DataType, Quality, Reading, Value

log = logging.getLogger(__name__)
_TRANSPORT_ERRORS = (ModbusException, OSError, asyncio.TimeoutError)

ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient

# The names the Modbus Application Protocol specification (section 7) gives exception codes.
EXCEPTION_NAMES: dict[int, str] = {
    ExcCodes.ILLEGAL_FUNCTION: "illegal function",
    ExcCodes.ILLEGAL_ADDRESS: "illegal data address",
    ExcCodes.ILLEGAL_VALUE: "illegal data value",
    ExcCodes.DEVICE_FAILURE: "server device failure",
    ExcCodes.ACKNOWLEDGE: "acknowledge (busy with a long command)",
    ExcCodes.DEVICE_BUSY: "server device busy",
    ExcCodes.NEGATIVE_ACKNOWLEDGE: "negative acknowledge",
    ExcCodes.MEMORY_PARITY_ERROR: "memory parity error",
    ExcCodes.GATEWAY_PATH_UNAVIABLE: "gateway path unavailable",
    ExcCodes.GATEWAY_NO_RESPONSE: "gateway target device failed to respond",
}


def describe_error(response: ModbusPDU) -> str:
    """An error response in words, e.g. 'illegal data address (exception 2)'."""
    code = getattr(response, "exception_code", None)
    if not isinstance(code, int):
        return str(response)
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    return f"{name} (exception {code})"


class ModbusSource:
    """A Modbus device, read with as few requests as its tag layout allows."""

    def __init__(self, config: ModbusDevice, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        shift = 0 if config.zero_based else 1
        self._shift = shift
        requests = plan_reads(config.tags, max_gap=config.max_gap, address_shift=shift)
        self._decoders = [RequestDecoder(r, config.byte_order, shift) for r in requests]
        self._tags = {tag.name: tag for tag in config.tags}
        self._client: ModbusClient | None = None
        self._state = DeviceState.DISCONNECTED
        self._lock = asyncio.Lock()  # one request at a time on the line

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
        return [decoder.request for decoder in self._decoders]

    def _new_client(self) -> ModbusClient:
        config = self._config
        # Retries and reconnects are ours (busy retries, backoff in the poller), not pymodbus's.
        if config.transport == "rtu":
            assert config.serial is not None
            serial = config.serial
            return AsyncModbusSerialClient(
                str(serial.port),
                framer=FramerType.RTU,
                baudrate=serial.baudrate,
                bytesize=serial.bytesize,
                parity=serial.parity,
                stopbits=serial.stopbits,
                timeout=config.timeout,
                retries=0,
                reconnect_delay=0,
            )
        framer = FramerType.RTU if config.transport == "rtu_over_tcp" else FramerType.SOCKET
        assert config.host is not None
        return AsyncModbusTcpClient(
            config.host,
            port=config.port,
            framer=framer,
            timeout=config.timeout,
            retries=0,
            reconnect_delay=0,
        )

    def _where(self) -> str:
        config = self._config
        if config.transport == "rtu":
            assert config.serial is not None
            return str(config.serial.port)
        return f"{config.host}:{config.port}"

    async def connect(self) -> None:
        """Open the connection (TCP socket or serial port)."""
        self._state = DeviceState.CONNECTING
        client = self._new_client()
        if not await client.connect():
            client.close()
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: cannot connect to {self._where()}")
        self._client = client
        self._state = DeviceState.CONNECTED

    async def read(self) -> list[Reading]:
        """Read every tag once."""
        client = self._connected_client()
        readings: list[Reading] = []
        name = self.name
        for decoder in self._decoders:
            request = decoder.request
            words = await self._read_block(client, request)
            ts_us = self._clock.time_us()
            values = decoder.decode(words)
            readings.extend(
                Reading(name, tag.name, tag.reported_type, ts_us, value, Quality.GOOD)
                for tag, value in zip(request.tags, values, strict=True)
            )
        return readings

    def _connected_client(self) -> ModbusClient:
        if self._client is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        return self._client

    async def _read_block(self, client: ModbusClient, request: ReadRequest) -> list[int]:
        calls = {
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
            "holding_register": client.read_holding_registers,
            "input_register": client.read_input_registers,
        }
        call = calls[request.table]
        what = f"{request.table} read at {request.address} x{request.count}"
        response = await self._execute(
            lambda: call(request.address, count=request.count, device_id=self._config.unit), what
        )
        if response.isError():
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(
                f"{self.name}: device refused {what}: {describe_error(response)}"
            )
        if request.table in BIT_TABLES:
            return [1 if bit else 0 for bit in response.bits[: request.count]]
        return list(response.registers)

    async def _execute(self, send: Callable[[], Awaitable[ModbusPDU]], what: str) -> ModbusPDU:
        """Send a request, retrying while the device answers 'busy'."""
        attempts = self._config.busy_retries + 1
        async with self._lock:
            for attempt in range(attempts):
                try:
                    response = await send()
                except _TRANSPORT_ERRORS as exc:
                    self._state = DeviceState.DISCONNECTED
                    raise DeviceUnreachable(f"{self.name}: {what} failed: {exc}") from exc
                busy = response.isError() and getattr(response, "exception_code", None) in (
                    ExcCodes.DEVICE_BUSY,
                    ExcCodes.ACKNOWLEDGE,
                )
                if not busy or attempt == attempts - 1:
                    return response
                await self._clock.sleep(self._config.busy_retry_delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(self, tag_name: str, value: Value) -> None:
        """Write one tag: FC 5/6 or 15/16, only if configured writable and within bounds."""
        tag = self._tags.get(tag_name)
        check_write(self.name, tag, tag_name, tag.reported_type if tag else DataType.FLOAT64, value)
        assert tag is not None
        client = self._connected_client()
        address = tag.address - self._shift
        unit = self._config.unit
        multiple = self._config.write_functions == "multiple"
        send: Callable[[], Awaitable[ModbusPDU]]
        if tag.table == "coil":
            if multiple:
                send = lambda: client.write_coils(address, [bool(value)], device_id=unit)  # noqa: E731
            else:
                send = lambda: client.write_coil(address, bool(value), device_id=unit)  # noqa: E731
        else:
            words = encode(
                _raw_value(tag, value),
                tag.type,
                tag.byte_order or self._config.byte_order,
                tag.length,
            )
            if len(words) == 1 and not multiple:
                send = lambda: client.write_register(address, words[0], device_id=unit)  # noqa: E731
            else:
                send = lambda: client.write_registers(address, words, device_id=unit)  # noqa: E731
        response = await self._execute(send, f"write of {tag_name}")
        if response.isError():
            raise WriteFailed(
                f"{self.name}/{tag_name}: device refused the write: {describe_error(response)}"
            )
        log.info("%s/%s written: %r", self.name, tag_name, value)

    def unreachable_readings(self, ts_us: int) -> list[Reading]:
        """One bad reading per tag."""
        return [
            Reading(self.name, tag.name, tag.reported_type, ts_us, None, Quality.BAD)
            for tag in self._config.tags
        ]

    async def close(self) -> None:
        """Close the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._state = DeviceState.DISCONNECTED


def _raw_value(tag: ModbusTag, value: Value) -> Value:
    """The register value for an engineering value (undoing scale and offset)."""
    if not tag.scaled:
        return value
    raw = (float(value) - tag.offset) / tag.scale
    if tag.type in INTEGER_TYPES:
        rounded = round(raw)
        if not math.isclose(rounded, raw, abs_tol=1e-9 * max(1.0, abs(raw))):
            raise WriteRefused(
                f"{tag.name}: {value!r} is not reachable with scale {tag.scale:g},"
                f" offset {tag.offset:g}"
            )
        return rounded
    return raw
