"""Configuration of a Modbus device (TCP, RTU over TCP, or RTU on a serial line) and its tags."""

from collections.abc import Sequence
from pathlib import Path
from string import Formatter
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from protocols.common import DeviceBase, TagBase, check_unique_tags
from protocols.modbus.codec import ByteOrder, register_count
from shared.config import Duration, StrictModel
from shared.invariants import required
from shared.readings import DataType

Table = Literal["coil", "discrete_input", "holding_register", "input_register"]
BIT_TABLES = ("coil", "discrete_input")
INTEGER_TYPES = (
    DataType.INT16,
    DataType.UINT16,
    DataType.INT32,
    DataType.UINT32,
    DataType.INT64,
    DataType.UINT64,
)
READ_ONLY_TABLES = ("discrete_input", "input_register")


NAME_PLACEHOLDERS = ("address", "index", "number")
"""What a range's `name` may use: a value's address, its position from 0, its position from 1."""


class AddressRange(StrictModel):
    """A block of equally spaced values of one shape, configured as one tag entry."""

    start: int = Field(ge=0, le=65535, description="Address of the first value.")
    count: int = Field(ge=1, le=65536, description="How many values (tags) the block holds.")
    step: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Addresses from one value to the next; if omitted, the width of the type"
        " (1 for 16-bit types and bits, 2 for 32-bit, 4 for 64-bit, `length` for strings).",
    )


class ModbusTag(TagBase):
    """One value on a Modbus device, or with `range` a block of them."""

    table: Table = Field(description="Which Modbus table the value lives in.")
    address: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Address of the first register or bit. Required unless `range` is given.",
    )
    range: AddressRange | None = Field(
        default=None,
        exclude=True,  # expanded at validation: a validated config has none left to dump
        description="Instead of `address`: `count` tags of this shape from `start` on, named"
        " from `name` with the placeholders `{address}`, `{index}` (0, 1, ...) or `{number}`"
        " (1, 2, ...), which take format specs such as `{index:03d}`.",
    )
    type: DataType = Field(default=DataType.UINT16, description="PLC data type of the value.")
    length: int = Field(default=0, ge=0, le=125, description="Registers of a string tag.")
    bit: int | None = Field(
        default=None, ge=0, le=15, description="For a bool in a register: its bit, 0 = lowest."
    )
    byte_order: ByteOrder | None = Field(
        default=None, description="Byte/word order; the device's `byte_order` if omitted."
    )
    scale: float = Field(
        default=1.0, description="Reported value = raw * scale + offset (then a float64)."
    )
    offset: float = Field(default=0.0, description="See `scale`.")

    @property
    def scaled(self) -> bool:
        """Whether scale or offset change the raw value."""
        return self.scale != 1.0 or self.offset != 0.0

    @property
    def reported_type(self) -> DataType:
        """The data type readings of this tag carry."""
        return DataType.FLOAT64 if self.scaled else self.type

    @property
    def span(self) -> int:
        """How many registers (or bits) one value occupies."""
        return 1 if self.table in BIT_TABLES else register_count(self.type, self.length)

    @property
    def addresses(self) -> Sequence[int]:
        """Addresses of the values this entry stands for: one, or its range's."""
        if self.range is None:
            return range(self.address, self.address + 1)
        first = self.range.start
        step = self.range.step or self.span
        return range(first, first + self.range.count * step, step)

    def expand(self) -> list["ModbusTag"]:
        """The ordinary tags this entry stands for: itself, or one per value of its range."""
        if self.range is None:
            return [self]
        pattern = self.name
        # Validated as a whole already: only the name and address differ between members.
        return [
            self.model_copy(
                update={
                    "name": pattern.format(address=address, index=index, number=index + 1),
                    "address": address,
                    "range": None,
                }
            )
            for index, address in enumerate(self.addresses)
        ]

    @model_validator(mode="after")
    def _check_shape(self) -> "ModbusTag":
        if self.table in BIT_TABLES and self.type is not DataType.BOOL:
            raise ValueError(f"a {self.table} holds one bit: type must be bool")
        if self.type is DataType.BOOL and self.table not in BIT_TABLES and self.bit is None:
            raise ValueError("a bool in a register needs `bit`")
        if self.bit is not None and (self.type is not DataType.BOOL or self.table in BIT_TABLES):
            raise ValueError("`bit` is only for a bool in a holding or input register")
        if self.type is DataType.STRING and self.length == 0:
            raise ValueError("a string tag needs `length` (number of registers)")
        if self.scaled and self.type in (DataType.BOOL, DataType.STRING):
            raise ValueError(f"a {self.type.value} tag cannot be scaled")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.writable and (self.table in READ_ONLY_TABLES or self.bit is not None):
            raise ValueError(
                "only whole coils and holding registers can be writable"
                f" (this is a {self.table}{' bit' if self.bit is not None else ''})"
            )
        return self

    @model_validator(mode="after")
    def _check_range(self) -> "ModbusTag":
        if self.range is None:
            if "address" not in self.model_fields_set:
                raise ValueError("a tag needs `address` (or `range`, for a block of tags)")
            return self
        if "address" in self.model_fields_set:
            raise ValueError("give either `address` or `range`, not both")
        step = self.range.step or self.span
        if step < self.span:
            raise ValueError(
                f"range step {step} is less than the {self.span} registers of a"
                f" {self.type.value}: its values would overlap"
            )
        addresses = self.addresses
        if addresses[-1] + self.span - 1 > 65535:
            raise ValueError(
                f"range ends past address 65535 (its last value is at {addresses[-1]})"
            )
        fields = _placeholders(self.name)
        if self.range.count > 1 and not fields:
            raise ValueError(
                "the `name` of a range needs a placeholder, {address}, {index} or {number},"
                " so that each of its tags gets its own name"
            )
        for index in (0, len(addresses) - 1):
            try:
                name = self.name.format(address=addresses[index], index=index, number=index + 1)
            except ValueError as exc:
                raise ValueError(f"cannot format the name {self.name!r}: {exc}") from exc
            if not 1 <= len(name) <= 200:
                raise ValueError(f"the range's tag names must be 1 to 200 characters: {name!r}")
        return self


def _placeholders(pattern: str) -> list[str]:
    """The placeholders of a range's name pattern; ValueError for any but the documented."""
    try:
        fields = [field for _, field, _, _ in Formatter().parse(pattern) if field is not None]
    except ValueError as exc:
        raise ValueError(f"cannot read the name pattern {pattern!r}: {exc}") from exc
    unknown = sorted({field for field in fields if field not in NAME_PLACEHOLDERS})
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in the name {pattern!r};"
            " use {address}, {index} or {number}"
        )
    return fields


def _expand_ranges(entries: list[ModbusTag]) -> list[ModbusTag]:
    """Check ranges against each other and the single tags, then expand them into tags."""
    if all(entry.range is None for entry in entries):
        return entries
    _check_overlaps(entries)
    return [tag for entry in entries for tag in entry.expand()]


def _check_overlaps(entries: list[ModbusTag]) -> None:
    """Refuse a range sharing registers with another range, or with a single tag.

    Single tags may overlap each other (a float read over two registers also read as words),
    and a bit of a register may sit inside a range (a status word's bits): anything else
    inside a range is most likely a block configured over the wrong addresses.
    """
    # A sweep over each entry's first..last register finds the candidates; only those are
    # compared register by register, so 1,000 devices of one range each cost no set at all.
    bounds = sorted(
        (entry.table, entry.addresses[0], entry.addresses[-1] + entry.span, position)
        for position, entry in enumerate(entries)
        if entry.range is not None or entry.bit is None
    )
    table = ""
    open_ranges: list[tuple[int, int]] = []  # (end, position) of entries not yet passed
    open_singles: list[tuple[int, int]] = []
    for entry_table, start, end, position in bounds:
        if entry_table != table:
            table, open_ranges, open_singles = entry_table, [], []
        open_ranges = [(stop, other) for stop, other in open_ranges if stop > start]
        open_singles = [(stop, other) for stop, other in open_singles if stop > start]
        is_range = entries[position].range is not None
        for _, other in open_ranges + (open_singles if is_range else []):
            shared = _registers(entries[other]) & _registers(entries[position])
            if shared:
                first, second = sorted((other, position))
                raise ValueError(_overlap(entries, first, second, min(shared)))
        (open_ranges if is_range else open_singles).append((end, position))


def _registers(entry: ModbusTag) -> set[int]:
    return {a for first in entry.addresses for a in range(first, first + entry.span)}


def _overlap(entries: list[ModbusTag], first: int, second: int, address: int) -> str:
    a, b = entries[first], entries[second]
    return (
        f"tags {first} ({a.name!r}) and {second} ({b.name!r}) both cover {a.table}"
        f" {address}; a range must not overlap another range or a tag"
        " (except a `bit` of a register)"
    )


class SerialLine(StrictModel):
    """A serial port for Modbus RTU."""

    port: Path = Field(description="Serial device, e.g. /dev/ttyUSB0.")
    baudrate: int = Field(default=19200, gt=0, description="Line speed in bit/s.")
    parity: Literal["N", "E", "O"] = Field(default="E", description="Parity: none, even, odd.")
    bytesize: Literal[7, 8] = Field(default=8, description="Data bits.")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits.")


class ModbusDevice(DeviceBase):
    """A Modbus device (PLC, gateway, meter) polled on an interval."""

    type: Literal["modbus"] = Field(description="Selects the Modbus driver.")
    transport: Literal["tcp", "rtu_over_tcp", "rtu"] = Field(
        default="tcp", description="Modbus TCP, RTU frames over TCP, or RTU on a serial line."
    )
    host: str | None = Field(default=None, description="Host name or IP (tcp, rtu_over_tcp).")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port (tcp, rtu_over_tcp).")
    serial: SerialLine | None = Field(default=None, description="Serial line (rtu).")
    unit: int = Field(default=1, ge=0, le=255, description="Unit (slave) id.")
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Most connections the agent opens to this device's endpoint (host and port,"
        " or serial port); devices on one endpoint share them and, where they set this, must"
        " agree. Unset: 1. A serial line takes only 1.",
    )
    timeout: Duration = Field(default=2.0, gt=0, description="Per-request timeout.")
    busy_retries: int = Field(
        default=3, ge=0, le=20, description="Retries of a request the device answers 'busy'."
    )
    busy_retry_delay: Duration = Field(default=0.1, ge=0, description="Pause before a retry.")
    byte_order: ByteOrder = Field(default="ABCD", description="Default byte/word order.")
    zero_based: bool = Field(
        default=True, description="Addresses in this config start at 0 (false: they start at 1)."
    )
    max_gap: int = Field(
        default=16, ge=0, le=124, description="Unused registers one request may read over."
    )
    write_functions: Literal["single", "multiple"] = Field(
        default="single",
        description="single: FC 5/6 where one coil/register is written, else FC 15/16;"
        " multiple: always FC 15/16 (for devices without the single-write functions).",
    )
    tags: Annotated[list[ModbusTag], AfterValidator(_expand_ranges)] = Field(
        min_length=1, description="Tags to read; an entry with `range` is a block of tags."
    )

    @model_validator(mode="after")
    def _check_device(self) -> "ModbusDevice":
        check_unique_tags(list(self.tags))
        if not self.zero_based and any(tag.address == 0 for tag in self.tags):
            raise ValueError("with zero_based: false, addresses start at 1")
        if self.transport == "rtu" and self.serial is None:
            raise ValueError("transport rtu needs `serial`")
        if self.transport != "rtu" and not self.host:
            raise ValueError(f"transport {self.transport} needs `host`")
        if self.transport == "rtu" and (self.max_connections or 1) > 1:
            raise ValueError("a serial line carries one connection: max_connections must be 1")
        return self

    @property
    def endpoint(self) -> str:
        """Where the device is reached; devices naming the same endpoint share its connections."""
        if self.transport == "rtu":
            return str(required(self.serial, "an RTU device's serial settings").port)
        where = f"{self.host}:{self.port}"
        return f"{where} (RTU over TCP)" if self.transport == "rtu_over_tcp" else where


def shared_endpoint_problems(devices: Sequence[object]) -> list[str]:
    """Modbus devices on one endpoint that disagree on its settings, as `devices.N.key: ...`."""
    first: dict[str, tuple[int, ModbusDevice]] = {}
    limits: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    for index, device in enumerate(devices):
        if not isinstance(device, ModbusDevice):
            continue
        endpoint = device.endpoint
        if device.max_connections is not None:
            other, limit = limits.setdefault(endpoint, (index, device.max_connections))
            if limit != device.max_connections:
                problems.append(
                    f"devices.{index}.max_connections: {device.max_connections}, but"
                    f" devices.{other}.max_connections is {limit}; devices on {endpoint}"
                    " share its connections and must agree"
                )
        other, first_device = first.setdefault(endpoint, (index, device))
        if device.transport == "rtu" and device.serial != first_device.serial:
            problems.append(
                f"devices.{index}.serial: differs from devices.{other}.serial; devices on"
                f" {endpoint} share the line and its settings"
            )
    return problems
