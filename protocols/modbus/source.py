"""Polling a Modbus device: planned block reads decoded into readings, and guarded writes."""

import asyncio
import logging
import math
from collections.abc import Sequence
from itertools import repeat

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU

from protocols.base import (
    DeviceState,
    DeviceUnreachable,
    SourceError,
    WriteFailed,
    WriteRefused,
)
from protocols.modbus.codec import encode
from protocols.modbus.config import BIT_TABLES, INTEGER_TYPES, ModbusDevice
from protocols.modbus.decoder import RequestDecoder
from protocols.modbus.planner import ReadRequest, plan_reads
from protocols.modbus.points import ModbusPoint
from protocols.modbus.pool import ModbusClient, ModbusConnection, ModbusPool, Send, UnitSilent
from protocols.writes import check_write
from shared.clock import Clock
from shared.invariants import required
from shared.readings import DataType, Quality, Reading, Value

log = logging.getLogger(__name__)

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
_BUSY = (ExcCodes.DEVICE_BUSY, ExcCodes.ACKNOWLEDGE)
# A gateway's word for "that unit id did not answer": the unit is down, the connection is not.
_UNIT_ABSENT = (ExcCodes.GATEWAY_NO_RESPONSE, ExcCodes.GATEWAY_PATH_UNAVIABLE)


def describe_error(response: ModbusPDU) -> str:
    """An error response in words, e.g. 'illegal data address (exception 2)'."""
    code = response.exception_code
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    return f"{name} (exception {code})"


class ModbusSource:
    """A Modbus device, read with as few requests as its tag layout allows.

    Its requests go over a connection of `pool` shared with the other devices on the same
    endpoint (a private pool if none is given). The device is unreachable when that connection
    breaks, or alone when its own unit id stops answering; then it is connected again only
    once its unit answers.
    """

    def __init__(self, config: ModbusDevice, clock: Clock, pool: ModbusPool | None = None) -> None:
        # The device's settings without its tag models: those go once the points are made.
        self._config = config.model_copy(update={"tags": []})
        self._clock = clock
        shift = 0 if config.zero_based else 1
        self._shift = shift
        self._points = [ModbusPoint.of(tag) for tag in config.tags]
        requests = plan_reads(self._points, max_gap=config.max_gap, address_shift=shift)
        self._decoders = [RequestDecoder(r, config.byte_order, shift) for r in requests]
        # Per request, what each of its readings is labelled with: worked out once, not per poll.
        self._labels = [
            ([tag.name for tag in r.tags], [tag.reported_type for tag in r.tags]) for r in requests
        ]
        self._tags = {point.name: point for point in self._points}
        self._endpoint = (pool or ModbusPool(clock)).endpoint(self._config)
        self._connection: ModbusConnection | None = None
        self._state = DeviceState.DISCONNECTED
        self._unit_silent = False  # its unit stopped answering: probe it before reconnecting
        self._lock = asyncio.Lock()  # this device's requests in order (a write waits for a poll)

    @property
    def name(self) -> str:
        """The device's name."""
        return self._config.name

    @property
    def state(self) -> DeviceState:
        """Current connection state (disconnected as soon as the shared connection is)."""
        if self._state is DeviceState.CONNECTED and not (
            self._connection is not None and self._connection.open
        ):
            return DeviceState.DISCONNECTED
        return self._state

    @property
    def requests(self) -> Sequence[ReadRequest]:
        """The read requests one poll sends."""
        return [decoder.request for decoder in self._decoders]

    async def connect(self) -> None:
        """Attach to a connection to the endpoint, opening one if needed."""
        self._detach()
        self._state = DeviceState.CONNECTING
        try:
            self._connection = await self._endpoint.attach(self._config.unit, self._config.timeout)
        except DeviceUnreachable as exc:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: {exc}") from exc
        if self._unit_silent:
            # Attaching alone proves nothing about this unit: ask it before reporting it back.
            try:
                await self._read_block(self._decoders[0].request)
            except DeviceUnreachable:
                self._detach()
                raise
        self._state = DeviceState.CONNECTED

    async def read(self) -> list[Reading]:
        """Read every tag once."""
        self._connected()
        readings: list[Reading] = []
        device = repeat(self.name)
        for decoder, (names, types) in zip(self._decoders, self._labels, strict=True):
            words = await self._read_block(decoder.request)
            ts_us = self._clock.time_us()
            values = decoder.decode(words)
            readings.extend(map(Reading, device, names, types, repeat(ts_us), values))
        return readings

    def _connected(self) -> ModbusConnection:
        if self._connection is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        return self._connection

    def _detach(self) -> None:
        if self._connection is not None:
            self._endpoint.detach(self._connection, self._config.unit)
            self._connection = None

    async def _read_block(self, request: ReadRequest) -> list[int]:
        table, address, count = request.table, request.address, request.count
        unit = self._config.unit

        async def send(client: ModbusClient) -> ModbusPDU:
            calls = {
                "coil": client.read_coils,
                "discrete_input": client.read_discrete_inputs,
                "holding_register": client.read_holding_registers,
                "input_register": client.read_input_registers,
            }
            return await calls[table](address, count=count, device_id=unit)

        what = f"{table} read at {address} x{count}"
        response = await self._execute(send, what)
        if response.isError():
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(
                f"{self.name}: device refused {what}: {describe_error(response)}"
            )
        if table in BIT_TABLES:
            return [1 if bit else 0 for bit in response.bits[:count]]
        return list(response.registers)

    async def _execute(self, send: Send, what: str) -> ModbusPDU:
        """Send a request on the shared connection, retrying while the device answers 'busy'."""
        connection = self._connected()
        config = self._config
        attempts = config.busy_retries + 1
        async with self._lock:
            for attempt in range(attempts):
                try:
                    response = await connection.request(config.unit, config.timeout, send)
                except DeviceUnreachable as exc:
                    self._unit_silent = isinstance(exc, UnitSilent)
                    self._state = DeviceState.DISCONNECTED
                    raise DeviceUnreachable(f"{self.name}: {what} failed: {exc}") from exc
                code = response.exception_code if response.isError() else None
                self._unit_silent = code in _UNIT_ABSENT
                if code not in _BUSY or attempt == attempts - 1:
                    return response
                # The connection is free meanwhile: the other devices on it go on.
                await self._clock.sleep(config.busy_retry_delay)
        raise AssertionError("unreachable")  # pragma: no cover - every path above returns or raises

    async def read_tag(self, tag_name: str) -> Value:
        """Read one tag now, with a request of its own (in turn with the polls)."""
        point = self._tags.get(tag_name)
        if point is None:
            raise SourceError(f"{self.name}/{tag_name}: no such tag")
        self._connected()
        request = plan_reads([point], max_gap=0, address_shift=self._shift)[0]
        words = await self._read_block(request)
        return RequestDecoder(request, self._config.byte_order, self._shift).decode(words)[0]

    async def write(self, tag_name: str, value: Value) -> None:
        """Write one tag: FC 5/6 or 15/16, only if configured writable and within bounds."""
        tag = self._tags.get(tag_name)
        check_write(self.name, tag, tag_name, tag.reported_type if tag else DataType.FLOAT64, value)
        tag = required(tag, "a checked tag")
        self._connected()
        address = tag.address - self._shift
        unit = self._config.unit
        multiple = self._config.write_functions == "multiple"
        coil = tag.table == "coil"
        order = tag.byte_order or self._config.byte_order
        words = [] if coil else encode(_raw_value(tag, value), tag.type, order, tag.length)

        async def send(client: ModbusClient) -> ModbusPDU:
            if coil and multiple:
                return await client.write_coils(address, [bool(value)], device_id=unit)
            if coil:
                return await client.write_coil(address, bool(value), device_id=unit)
            if len(words) == 1 and not multiple:
                return await client.write_register(address, words[0], device_id=unit)
            return await client.write_registers(address, words, device_id=unit)

        response = await self._execute(send, f"write of {tag_name}")
        if response.isError():
            raise WriteFailed(
                f"{self.name}/{tag_name}: device refused the write: {describe_error(response)}"
            )
        log.info("%s/%s written: %r", self.name, tag_name, value)

    def unreachable_readings(self, ts_us: int) -> list[Reading]:
        """One bad reading per tag."""
        return [
            Reading(self.name, point.name, point.reported_type, ts_us, None, Quality.BAD)
            for point in self._points
        ]

    async def close(self) -> None:
        """Leave the shared connection (closed when its last device leaves)."""
        self._detach()
        self._state = DeviceState.DISCONNECTED


def _raw_value(tag: ModbusPoint, value: Value) -> Value:
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
