"""Serving the simulated machine over Modbus TCP (or RTU framing) with pymodbus's server."""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from protocols.modbus.codec import ByteOrder, decode, encode, register_count
from protocols.simulator.machine import Machine, SimTag
from shared.invariants import required
from shared.readings import Value

_TABLE_OF_FUNCTION = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete_input",
    3: "holding_register",
    6: "holding_register",
    16: "holding_register",
    4: "input_register",
}
_BIT_TABLES = ("coil", "discrete_input")
_BLOCK_ORDER = ("coil", "discrete_input", "holding_register", "input_register")
_UNSET = object()


def _span(tag: SimTag) -> int:
    return (
        1 if tag.modbus_table in _BIT_TABLES else register_count(tag.data_type, tag.string_length)
    )


def _block_size(tags: Sequence[SimTag], table: str) -> int:
    """Registers the table needs (bits are packed 16 to a register)."""
    ends = [tag.modbus_address + _span(tag) for tag in tags if tag.modbus_table == table]
    size = max(ends, default=0)
    if table in _BIT_TABLES:
        return size // 16 + 1
    return max(size, 1)


class ModbusImage:
    """The machine's values laid out as the four Modbus tables.

    The tables are pymodbus's own register blocks (adopted on first access), updated in place
    only where a value changed, so a large image costs nothing per request.
    """

    def __init__(
        self,
        machine: Machine,
        tags: Sequence[SimTag],
        byte_order: ByteOrder,
        now_us: Callable[[], int],
    ) -> None:
        self._machine = machine
        self._tags = [tag for tag in tags if tag.modbus_table is not None]
        self._byte_order = byte_order
        self._now_us = now_us
        self.sizes = {table: _block_size(self._tags, table) for table in _BLOCK_ORDER}
        self._tables: dict[str, list[int]] = {name: [0] * size for name, size in self.sizes.items()}
        self._encoded: dict[str, object] = {}
        self._built_version = -1
        self._writable = {(t.modbus_table, t.modbus_address): t for t in self._tags if t.writable}
        self.requests_served = 0
        self.writes_served = 0
        self.busy_answers = 0  # answer this many requests "device busy" first (tests)
        self.gateway_failure = False  # answer as a gateway whose target is gone (exception 11)
        self.silent = False  # answer nothing, as a unit that is switched off behind a gateway

    def table(self, name: str) -> list[int]:
        """The current registers of one table."""
        self._refresh()
        return self._tables[name]

    def _refresh(self) -> None:
        if self._built_version == self._machine.version:
            return
        values = self._machine.values
        encoded = self._encoded
        for tag in self._tags:
            value = values[tag.name]
            if encoded.get(tag.name, _UNSET) == value:
                continue
            encoded[tag.name] = value
            table = required(tag.modbus_table, "the tag's Modbus table")
            registers = self._tables[table]
            if table in _BIT_TABLES:
                word, bit = divmod(tag.modbus_address, 16)
                registers[word] = (
                    (registers[word] | 1 << bit) if value else (registers[word] & ~(1 << bit))
                )
                continue
            words = encode(value, tag.data_type, self._byte_order, tag.string_length)
            registers[tag.modbus_address : tag.modbus_address + len(words)] = words
        self._built_version = self._machine.version

    async def on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook: serve reads from the image; apply writes to writable tags only."""
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if self.gateway_failure:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if self.busy_answers > 0:
            self.busy_answers -= 1
            return ExcCodes.DEVICE_BUSY
        if registers is not self._tables[table]:
            self._refresh()
            registers[:] = self._tables[table]
            self._tables[table] = registers
        if values is not None:
            return self._write(table, address, values)
        self.requests_served += 1
        self._refresh()
        return None

    def _write(self, table: str, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        changes: dict[str, Value] = {}
        position = address
        while position < address + len(values):
            tag = self._writable.get((table, position))
            if tag is None:
                return ExcCodes.ILLEGAL_ADDRESS
            span = _span(tag)
            chunk = [int(v) for v in values[position - address : position - address + span]]
            if len(chunk) != span:
                return ExcCodes.ILLEGAL_ADDRESS  # a write must cover whole tags
            changes[tag.name] = (
                bool(chunk[0])
                if table in _BIT_TABLES
                else decode(chunk, tag.data_type, self._byte_order)
            )
            position += span
        self._machine.set(self._now_us(), **changes)
        self.writes_served += 1
        return None


def build_device(image: ModbusImage, unit: int = 0) -> SimDevice:
    """A pymodbus device answering from the image, for one unit id (0: any unit id not listed)."""
    bits = [
        [SimData(0, count=image.sizes[table] * 16, values=False, datatype=SimType.BITS)]
        for table in _BIT_TABLES
    ]
    registers = [
        [SimData(0, count=image.sizes[table], values=0, datatype=SimType.REGISTERS)]
        for table in ("holding_register", "input_register")
    ]
    return SimDevice(
        unit, simdata=(bits[0], bits[1], registers[0], registers[1]), action=image.on_access
    )


class ModbusUnits:
    """What a Modbus server answers, by unit id, like a gateway in front of several devices.

    `images[0]` answers every unit id not listed. Counts requests by unit id and connections
    accepted (on a serial line: the port opened), so tests can see which unit was asked and
    how many connections clients opened.
    """

    def __init__(self, images: Mapping[int, ModbusImage]) -> None:
        if 0 not in images:
            raise ValueError("unit 0 (every unit id not listed) needs an image")
        self.images = dict(images)
        self.requests: Counter[int] = Counter()
        self.connections_accepted = 0

    def image(self, unit: int) -> ModbusImage:
        """The image that answers a unit id."""
        return self.images.get(unit, self.images[0])

    def devices(self) -> list[SimDevice]:
        """One pymodbus device per listed unit id."""
        return [build_device(image, unit) for unit, image in self.images.items()]

    def on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """pymodbus trace hook: count each request; a silent unit's requests go unanswered."""
        if sending:
            return pdu
        self.requests[pdu.dev_id] += 1
        if self.image(pdu.dev_id).silent:
            # pymodbus's request handler answers only when this hook returns a request.
            return cast(ModbusPDU, None)
        return pdu

    def on_connect(self, connected: bool) -> None:
        """pymodbus trace hook: count the connections clients open."""
        if connected:
            self.connections_accepted += 1


def build_server(
    units: ModbusUnits, host: str, port: int, *, rtu_framing: bool = False
) -> ModbusTcpServer:
    """A Modbus server on TCP, with Modbus TCP framing or RTU framing over TCP."""
    return ModbusTcpServer(
        units.devices(),
        address=(host, port),
        framer=FramerType.RTU if rtu_framing else FramerType.SOCKET,
        trace_pdu=units.on_pdu,
        trace_connect=units.on_connect,
    )


def build_serial_server(units: ModbusUnits, port: str, baudrate: int) -> ModbusSerialServer:
    """A Modbus RTU server on a serial line (or a pseudo-terminal)."""
    return ModbusSerialServer(
        units.devices(),
        framer=FramerType.RTU,
        port=port,
        baudrate=baudrate,
        trace_pdu=units.on_pdu,
        trace_connect=units.on_connect,
    )
