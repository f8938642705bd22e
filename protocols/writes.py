"""Checking a requested write against a tag's configuration, before anything is sent."""

from typing import Protocol

from protocols.base import WriteRefused
from shared.readings import DataType, Value, value_fits


class WriteLimits(Protocol):
    """What a write is checked against: any tag's config, or a Modbus tag's compact point."""

    @property
    def writable(self) -> bool: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...


def check_write(
    device: str, tag: WriteLimits | None, name: str, data_type: DataType, value: Value
) -> None:
    """Raise WriteRefused unless the tag exists, is writable, and the value fits its bounds."""
    where = f"{device}/{name}"
    if tag is None:
        raise WriteRefused(f"{where}: no such tag")
    if not tag.writable:
        raise WriteRefused(f"{where}: the tag is read-only (set writable: true to allow writes)")
    if data_type.python_type is float and type(value) is int:
        value = float(value)
    if not value_fits(data_type, value):
        raise WriteRefused(f"{where}: {value!r} is not a valid {data_type.value}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if tag.min is not None and value < tag.min:
        raise WriteRefused(f"{where}: {value!r} is below the configured minimum {tag.min:g}")
    if tag.max is not None and value > tag.max:
        raise WriteRefused(f"{where}: {value!r} is above the configured maximum {tag.max:g}")
