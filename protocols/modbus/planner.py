"""Grouping a device's tags into as few Modbus read requests as the protocol allows."""

from collections.abc import Sequence
from dataclasses import dataclass

from protocols.modbus.config import BIT_TABLES, Table
from protocols.modbus.points import ModbusTagView

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read of `count` consecutive registers or bits starting at `address` (wire addressing)."""

    table: Table
    address: int
    count: int
    tags: tuple[ModbusTagView, ...]


def tag_span(tag: ModbusTagView) -> int:
    """How many registers (or bits) a tag occupies."""
    return tag.span


def plan_reads(
    tags: Sequence[ModbusTagView], *, max_gap: int, address_shift: int = 0
) -> list[ReadRequest]:
    """Coalesce tags per table into requests, reading over gaps of at most `max_gap`."""
    requests: list[ReadRequest] = []
    by_table: dict[Table, list[ModbusTagView]] = {}
    for tag in tags:
        by_table.setdefault(tag.table, []).append(tag)
    for table, members in by_table.items():
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        gap = max_gap * 16 if table in BIT_TABLES else max_gap
        members.sort(key=lambda tag: tag.address)
        start = end = -1
        group: list[ModbusTagView] = []
        for tag in members:
            first = tag.address - address_shift
            last = first + tag_span(tag)
            if group and first - end <= gap and max(end, last) - start <= limit:
                end = max(end, last)
                group.append(tag)
                continue
            if group:
                requests.append(ReadRequest(table, start, end - start, tuple(group)))
            start, end, group = first, last, [tag]
        requests.append(ReadRequest(table, start, end - start, tuple(group)))
    return requests
