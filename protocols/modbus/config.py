"""Configuration of a Modbus device (TCP, RTU over TCP, or RTU on a serial line) and its tags."""

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from protocols.common import DeviceBase, TagBase, check_unique_tags
from protocols.modbus.codec import ByteOrder
from shared.config import Duration, StrictModel
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


class ModbusTag(TagBase):
    """One value on a Modbus device."""

    table: Table = Field(description="Which Modbus table the value lives in.")
    address: int = Field(ge=0, le=65535, description="Address of the first register or bit.")
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
    tags: list[ModbusTag] = Field(min_length=1, description="Tags to read.")

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
            assert self.serial is not None
            return str(self.serial.port)
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
