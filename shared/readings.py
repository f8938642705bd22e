"""A reading: one value of one tag of one device at one instant, with its quality."""

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import NamedTuple

Value = bool | int | float | str


class DataType(StrEnum):
    """The PLC-side type of a tag; decides how its value is encoded and stored."""

    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"

    @property
    def python_type(self) -> type:
        """The Python type a value of this data type has."""
        return _PYTHON_TYPES[self]


_PYTHON_TYPES: dict[DataType, type] = {
    DataType.BOOL: bool,
    DataType.STRING: str,
    DataType.FLOAT32: float,
    DataType.FLOAT64: float,
    **{t: int for t in DataType if t.value.startswith(("int", "uint"))},
}

INTEGER_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


class Quality(IntEnum):
    """How far a reading can be trusted, after OPC UA's status code classes."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


def value_fits(data_type: DataType, value: object) -> bool:
    """Tell whether a Python value is a valid value of the data type."""
    expected = data_type.python_type
    if expected is int:
        low, high = INTEGER_RANGES[data_type]
        return type(value) is int and low <= value <= high
    if expected is float:
        return type(value) is float
    return type(value) is expected


class Reading(NamedTuple):
    """One sample of a tag. `value` is None exactly when quality is BAD and no value was read.

    `ts_us` is the source timestamp (or the poll time where the device gives none);
    `server_ts_us` is an OPC UA server's own timestamp, when it sent one. A named tuple: the
    pollers make one per point, and a tuple is built several times faster than a frozen
    dataclass.
    """

    device: str
    tag: str
    data_type: DataType
    ts_us: int
    value: Value | None
    quality: Quality = Quality.GOOD
    server_ts_us: int | None = None


def us_to_datetime(ts_us: int) -> datetime:
    """Convert microseconds since the Unix epoch to an aware UTC datetime."""
    return datetime.fromtimestamp(ts_us // 1_000_000, tz=UTC).replace(microsecond=ts_us % 1_000_000)


def datetime_to_us(moment: datetime) -> int:
    """Convert an aware datetime to microseconds since the Unix epoch."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
