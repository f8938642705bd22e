"""Configuration of a Modbus TCP device and its tags."""

from typing import Literal

from pydantic import Field, model_validator

from protocols.modbus.codec import ByteOrder
from shared.config import Duration, StrictModel, require_unique
from shared.readings import DataType

Table = Literal["coil", "discrete_input", "holding_register", "input_register"]
BIT_TABLES = ("coil", "discrete_input")


class ModbusTag(StrictModel):
    """One value on a Modbus device."""

    name: str = Field(min_length=1, max_length=200, description="Tag name, unique per device.")
    table: Table = Field(description="Which Modbus table the value lives in.")
    address: int = Field(ge=0, le=65535, description="Address of the first register or bit.")
    type: DataType = Field(default=DataType.UINT16, description="PLC data type of the value.")
    length: int = Field(default=0, ge=0, le=125, description="Registers of a string tag.")
    byte_order: ByteOrder | None = Field(
        default=None, description="Byte/word order; the device's `byte_order` if omitted."
    )

    @model_validator(mode="after")
    def _check_shape(self) -> "ModbusTag":
        if self.table in BIT_TABLES and self.type is not DataType.BOOL:
            raise ValueError(f"a {self.table} holds one bit: type must be bool")
        if self.type is DataType.STRING and self.length == 0:
            raise ValueError("a string tag needs `length` (number of registers)")
        return self


class ModbusDevice(StrictModel):
    """A Modbus TCP server (PLC, gateway, meter) polled on an interval."""

    type: Literal["modbus"] = Field(description="Selects the Modbus driver.")
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^/]+$",
        description="Device name, unique per agent; no '/'.",
    )
    host: str = Field(description="Host name or IP address.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port.")
    unit: int = Field(default=1, ge=0, le=255, description="Unit (slave) id.")
    poll_interval: Duration = Field(default=1.0, gt=0, description="Time between polls.")
    timeout: Duration = Field(default=2.0, gt=0, description="Per-request timeout.")
    byte_order: ByteOrder = Field(default="ABCD", description="Default byte/word order.")
    zero_based: bool = Field(
        default=True, description="Addresses in this config start at 0 (false: they start at 1)."
    )
    max_gap: int = Field(
        default=16, ge=0, le=124, description="Unused registers one request may read over."
    )
    tags: list[ModbusTag] = Field(min_length=1, description="Tags to read.")

    @model_validator(mode="after")
    def _unique_tags(self) -> "ModbusDevice":
        require_unique((tag.name for tag in self.tags), "tag names")
        if not self.zero_based and any(tag.address == 0 for tag in self.tags):
            raise ValueError("with zero_based: false, addresses start at 1")
        return self
