"""Serving the simulated machine over Modbus TCP with pymodbus's server."""

from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from protocols.modbus.codec import ByteOrder, encode, register_count
from protocols.simulator.machine import Machine, SimTag

_TABLE_OF_FUNCTION = {1: "coil", 2: "discrete_input", 3: "holding_register", 4: "input_register"}
_BLOCK_ORDER = ("coil", "discrete_input", "holding_register", "input_register")


def _block_size(tags: Sequence[SimTag], table: str) -> int:
    """Registers the table needs (bits are packed 16 to a register)."""
    ends = [
        tag.modbus_address + register_count(tag.data_type, tag.string_length)
        for tag in tags
        if tag.modbus_table == table
    ]
    size = max(ends, default=0)
    if table in ("coil", "discrete_input"):
        return size // 16 + 1
    return max(size, 1)


class ModbusImage:
    """The machine's values laid out as the four Modbus tables, rebuilt when the machine changes."""

    def __init__(self, machine: Machine, tags: Sequence[SimTag], byte_order: ByteOrder) -> None:
        self._machine = machine
        self._tags = [tag for tag in tags if tag.modbus_table is not None]
        self._byte_order = byte_order
        self.sizes = {table: _block_size(self._tags, table) for table in _BLOCK_ORDER}
        self._built_version = -1
        self._tables: dict[str, list[int]] = {}
        self.requests_served = 0

    def table(self, name: str) -> list[int]:
        """The current registers of one table."""
        if self._built_version != self._machine.version:
            self._rebuild()
        return self._tables[name]

    def _rebuild(self) -> None:
        tables = {name: [0] * size for name, size in self.sizes.items()}
        values = self._machine.values
        for tag in self._tags:
            assert tag.modbus_table is not None
            registers = tables[tag.modbus_table]
            value = values[tag.name]
            if tag.modbus_table in ("coil", "discrete_input"):
                if value:
                    registers[tag.modbus_address // 16] |= 1 << (tag.modbus_address % 16)
                continue
            words = encode(value, tag.data_type, self._byte_order, tag.string_length)
            registers[tag.modbus_address : tag.modbus_address + len(words)] = words
        self._tables = tables
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
        """pymodbus hook: refresh the block from the machine; the simulator is read-only."""
        table = _TABLE_OF_FUNCTION.get(function_code)
        if values is not None or table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        self.requests_served += 1
        registers[:] = self.table(table)
        return None


def build_server(image: ModbusImage, host: str, port: int) -> ModbusTcpServer:
    """A Modbus TCP server answering every unit id from the image."""
    bits = [
        [SimData(0, count=image.sizes[table] * 16, values=False, datatype=SimType.BITS)]
        for table in ("coil", "discrete_input")
    ]
    registers = [
        [SimData(0, count=image.sizes[table], values=0, datatype=SimType.REGISTERS)]
        for table in ("holding_register", "input_register")
    ]
    device = SimDevice(
        0, simdata=(bits[0], bits[1], registers[0], registers[1]), action=image.on_access
    )
    return ModbusTcpServer(device, address=(host, port))
