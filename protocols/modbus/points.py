"""The compact form a running agent keeps of each configured Modbus tag.

A validated `ModbusTag` model costs about 770 bytes; an agent with 10,000 tags would keep
7 MB of them for its whole life. Once its device is configured, a source holds a
`ModbusPoint` per tag instead (about 150 bytes) and lets the models go.
"""

from dataclasses import dataclass
from typing import Protocol

from protocols.modbus.codec import ByteOrder
from protocols.modbus.config import ModbusTag, Table
from shared.readings import DataType


class ModbusTagView(Protocol):
    """What planning, decoding and labelling reads of a tag: a ModbusTag or its ModbusPoint."""

    @property
    def name(self) -> str: ...
    @property
    def table(self) -> Table: ...
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> DataType: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def byte_order(self) -> ByteOrder | None: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...
    @property
    def scaled(self) -> bool: ...
    @property
    def reported_type(self) -> DataType: ...
    @property
    def span(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ModbusPoint:
    """One Modbus tag as polled and written: its settings and the values derived from them.

    Made by `of` from a validated tag, whose `scaled`, `reported_type` and `span` it copies.
    """

    name: str
    table: Table
    address: int
    type: DataType
    length: int
    bit: int | None
    byte_order: ByteOrder | None
    scale: float
    offset: float
    writable: bool
    min: float | None
    max: float | None
    scaled: bool
    reported_type: DataType
    span: int

    @classmethod
    def of(cls, tag: ModbusTag) -> "ModbusPoint":
        """The point of a validated (range-expanded) tag."""
        return cls(
            name=tag.name,
            table=tag.table,
            address=tag.address,
            type=tag.type,
            length=tag.length,
            bit=tag.bit,
            byte_order=tag.byte_order,
            scale=tag.scale,
            offset=tag.offset,
            writable=tag.writable,
            min=tag.min,
            max=tag.max,
            scaled=tag.scaled,
            reported_type=tag.reported_type,
            span=tag.span,
        )
