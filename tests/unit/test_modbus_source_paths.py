"""The Modbus driver's paths that need no device: error words, and scaled float writes."""

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from protocols.base import DeviceUnreachable, SourceError
from protocols.modbus.config import ModbusDevice
from protocols.modbus.pool import ModbusClient, ModbusEndpoint, ModbusPool
from protocols.modbus.source import ModbusSource, describe_error
from tests.unit.fakes import FakeClock


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (2, "illegal data address (exception 2)"),
        (11, "gateway target device failed to respond (exception 11)"),
        (12, "unknown exception (exception 12)"),
    ],
)
def test_an_error_response_in_words(code: int, words: str) -> None:
    assert describe_error(ExceptionResponse(3, code)) == words


@dataclass
class Params:
    timeout_connect: float = 0.0


@dataclass
class RecordingClient:
    """Stands in for a pymodbus client that accepts every register write."""

    connected: bool = False
    comm_params: Params = field(default_factory=Params)
    writes: list[tuple[int, list[int], int]] = field(default_factory=list)

    async def connect(self) -> bool:
        self.connected = True
        return True

    def close(self) -> None:
        self.connected = False

    async def write_registers(self, address: int, values: list[int], device_id: int) -> ModbusPDU:
        self.writes.append((address, values, device_id))
        return ModbusPDU()


class OneClientPool(ModbusPool):
    """A pool whose every endpoint opens the same recording client."""

    def __init__(self, clock: FakeClock, client: RecordingClient) -> None:
        super().__init__(clock)
        self._client = client

    def endpoint(self, config: ModbusDevice) -> ModbusEndpoint:
        return ModbusEndpoint(
            config.endpoint, lambda: cast(ModbusClient, self._client), FakeClock()
        )


async def test_a_scaled_float_is_written_unrounded() -> None:
    tag: dict[str, Any] = {
        "name": "level",
        "table": "holding_register",
        "address": 40,
        "type": "float32",
        "writable": True,
        "scale": 0.5,
        "offset": 1.0,
    }
    config = ModbusDevice.model_validate(
        {"type": "modbus", "name": "m", "host": "h", "unit": 3, "tags": [tag]}
    )
    client = RecordingClient()
    source = ModbusSource(config, FakeClock(), OneClientPool(FakeClock(), client))
    await source.connect()
    await source.write("level", 2.25)
    # (2.25 - 1.0) / 0.5 = 2.5, a float32 0x40200000 in ABCD order: not rounded to 2 or 3.
    assert client.writes == [(40, [0x4020, 0x0000], 3)]


async def test_reading_one_tag_needs_the_tag_and_a_connection() -> None:
    config = ModbusDevice.model_validate(
        {
            "type": "modbus",
            "name": "m",
            "host": "h",
            "tags": [{"name": "level", "table": "holding_register", "address": 40}],
        }
    )
    source = ModbusSource(config, FakeClock(), OneClientPool(FakeClock(), RecordingClient()))
    with pytest.raises(SourceError, match=r"^m/speed: no such tag$"):
        await source.read_tag("speed")
    with pytest.raises(DeviceUnreachable, match=r"^m: not connected$"):
        await source.read_tag("level")
