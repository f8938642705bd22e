"""Shared Modbus connections: the per-endpoint limit, one attempt for many devices, silent
units, and the configuration rules for devices on one endpoint."""

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pydantic import ValidationError
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from agent.config import AgentConfig
from protocols.base import DeviceUnreachable
from protocols.modbus.config import ModbusDevice
from protocols.modbus.pool import (
    OPEN_HOLDOFF_S,
    ConnectionLost,
    ModbusClient,
    ModbusEndpoint,
    ModbusPool,
    UnitSilent,
)
from tests.unit.fakes import FakeClock


@dataclass
class Params:
    timeout_connect: float = 0.0


@dataclass
class FakeClient:
    """Stands in for a pymodbus client: connects if `reachable`, then stays up until closed."""

    reachable: bool
    connected: bool = False
    closed: bool = False
    comm_params: Params = field(default_factory=Params)

    async def connect(self) -> bool:
        self.connected = self.reachable
        return self.connected

    def close(self) -> None:
        self.closed = True
        self.connected = False


class FakeEndpoint:
    def __init__(self, clock: FakeClock, max_connections: int = 1) -> None:
        self.clients: list[FakeClient] = []
        self.reachable = True
        self.endpoint = ModbusEndpoint("plc:502", self._new_client, clock)
        self.endpoint.limit(max_connections)

    def _new_client(self) -> ModbusClient:
        client = FakeClient(self.reachable)
        self.clients.append(client)
        return cast(ModbusClient, client)


ANSWER = ModbusPDU()


async def answer(client: ModbusClient) -> ModbusPDU:
    return ANSWER


async def no_answer(client: ModbusClient) -> ModbusPDU:
    raise ModbusIOException("No response received after 0 retries")


async def test_devices_share_up_to_the_limit_and_the_last_one_out_closes() -> None:
    fake = FakeEndpoint(FakeClock(), max_connections=2)
    attached = [await fake.endpoint.attach(unit, 1.0) for unit in range(1, 6)]
    assert len(fake.clients) == 2
    assert fake.endpoint.connections == 2
    assert sorted(c.devices for c in {id(c): c for c in attached}.values()) == [2, 3]
    for unit, connection in zip(range(1, 6), attached, strict=True):
        fake.endpoint.detach(connection, unit)
    assert fake.endpoint.connections == 0
    assert all(client.closed for client in fake.clients)


async def test_one_attempt_answers_every_device_within_the_holdoff() -> None:
    clock = FakeClock()
    fake = FakeEndpoint(clock)
    fake.reachable = False
    for _ in range(5):
        with pytest.raises(DeviceUnreachable, match=r"cannot connect to plc:502"):
            await fake.endpoint.attach(1, 1.0)
    assert len(fake.clients) == 1
    await clock.sleep(OPEN_HOLDOFF_S)
    fake.reachable = True
    first = await fake.endpoint.attach(1, 1.0)
    assert first is await fake.endpoint.attach(2, 1.0)
    assert len(fake.clients) == 2
    assert fake.endpoint.opened == 1


async def test_a_silent_unit_leaves_the_connection_until_no_unit_answers() -> None:
    fake = FakeEndpoint(FakeClock())
    connection = await fake.endpoint.attach(1, 1.0)
    assert connection is await fake.endpoint.attach(2, 1.0)
    with pytest.raises(UnitSilent, match="no answer from unit 1 on plc:502"):
        await connection.request(1, 0.5, no_answer)
    assert fake.clients[0].comm_params.timeout_connect == 0.5
    assert connection.open
    assert await connection.request(2, 1.0, answer) is ANSWER  # an answer forgives unit 1
    with pytest.raises(UnitSilent):
        await connection.request(1, 1.0, no_answer)
    with pytest.raises(UnitSilent, match="no unit on plc:502 answers"):
        await connection.request(2, 1.0, no_answer)
    assert not connection.open
    assert fake.clients[0].closed
    with pytest.raises(ConnectionLost, match="connection to plc:502 lost"):
        await connection.request(2, 1.0, answer)
    reopened = await fake.endpoint.attach(2, 1.0)
    assert reopened is not connection
    assert fake.endpoint.opened == 2


async def test_a_broken_connection_is_lost_for_every_device_on_it() -> None:
    fake = FakeEndpoint(FakeClock())
    connection = await fake.endpoint.attach(1, 1.0)
    await fake.endpoint.attach(2, 1.0)

    async def peer_closed(client: ModbusClient) -> ModbusPDU:
        fake.clients[0].connected = False
        raise ModbusIOException("No response received after 0 retries")

    with pytest.raises(ConnectionLost):
        await connection.request(1, 1.0, peer_closed)
    assert not connection.open


def modbus(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus",
        "host": "10.0.0.5",
        "tags": [{"name": "t", "table": "holding_register", "address": 0}],
        **extra,
    }


def serial(name: str, **line: Any) -> dict[str, Any]:
    return modbus(name, transport="rtu", serial={"port": "/dev/ttyUSB0", **line})


def agent(*devices: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"id": "a"},
            "buffer": {"path": "b.sqlite"},
            "mqtt": {"url": "mqtt://127.0.0.1"},
            "devices": list(devices),
        }
    )


def test_devices_on_one_endpoint_must_agree_on_its_limit() -> None:
    config = agent(modbus("a"), modbus("b", max_connections=2), modbus("c", max_connections=2))
    pool = ModbusPool(FakeClock())
    endpoints = {id(pool.endpoint(cast(ModbusDevice, d))) for d in config.devices}
    assert len(endpoints) == 1
    assert pool.endpoint(cast(ModbusDevice, config.devices[0])).max_connections == 2
    with pytest.raises(
        ValidationError,
        match=r"devices\.2\.max_connections: 3, but devices\.1\.max_connections is 2;"
        r" devices on 10\.0\.0\.5:502 share",
    ):
        agent(modbus("a"), modbus("b", max_connections=2), modbus("c", max_connections=3))
    # Another port, or RTU framing to the same port, is another endpoint.
    agent(modbus("a", max_connections=2), modbus("b", port=503, max_connections=3))
    agent(modbus("a", max_connections=2), modbus("b", transport="rtu_over_tcp", max_connections=3))


def test_a_serial_line_is_one_connection_with_one_set_of_settings() -> None:
    with pytest.raises(ValidationError, match="a serial line carries one connection"):
        ModbusDevice.model_validate(serial("a", baudrate=9600) | {"max_connections": 2})
    agent(serial("a", baudrate=9600), serial("b", baudrate=9600) | {"unit": 2})
    with pytest.raises(
        ValidationError, match=r"devices\.1\.serial: differs from devices\.0\.serial"
    ):
        agent(serial("a", baudrate=9600), serial("b", baudrate=19200) | {"unit": 2})


async def test_a_device_attached_twice_stays_until_both_leave() -> None:
    fake = FakeEndpoint(FakeClock())
    connection = await fake.endpoint.attach(1, 1.0)
    assert connection is await fake.endpoint.attach(1, 1.0)
    fake.endpoint.detach(connection, 1)
    assert connection.devices == 1
    assert connection.open
    fake.endpoint.detach(connection, 1)
    assert not connection.open
    assert fake.clients[0].closed


@pytest.mark.parametrize(
    "error",
    [OSError("connection reset by peer"), TimeoutError("timed out"), ModbusException("garbled")],
)
async def test_a_transport_error_loses_the_connection(error: Exception) -> None:
    fake = FakeEndpoint(FakeClock())
    connection = await fake.endpoint.attach(1, 1.0)

    async def broken(client: ModbusClient) -> ModbusPDU:
        raise error

    with pytest.raises(ConnectionLost, match=f"connection to plc:502 lost: .*{error}"):
        await connection.request(1, 1.0, broken)
    assert not connection.open
    assert fake.clients[0].closed


async def test_a_failed_extra_connection_falls_back_to_an_open_one() -> None:
    fake = FakeEndpoint(FakeClock(), max_connections=2)
    first = await fake.endpoint.attach(1, 1.0)
    fake.reachable = False
    assert await fake.endpoint.attach(2, 1.0) is first
    assert first.devices == 2
    assert fake.endpoint.connections == 1
    assert len(fake.clients) == 2  # the second attempt was made, and failed


def test_an_endpoint_refuses_a_second_limit_that_disagrees() -> None:
    pool = ModbusPool(FakeClock())
    one = ModbusDevice.model_validate(modbus("a", max_connections=1))
    two = ModbusDevice.model_validate(modbus("b", max_connections=2))
    endpoint = pool.endpoint(one)
    assert pool.endpoint(one) is endpoint
    with pytest.raises(
        ValueError, match=r"10\.0\.0\.5:502: max_connections 2 disagrees with 1 set by another"
    ):
        pool.endpoint(two)


async def test_leaving_a_connection_already_replaced_leaves_the_new_one_alone() -> None:
    fake = FakeEndpoint(FakeClock())
    old = await fake.endpoint.attach(1, 1.0)
    await fake.endpoint.attach(2, 1.0)
    fake.clients[0].connected = False  # the peer closed it
    new = await fake.endpoint.attach(2, 1.0)  # device 2 reconnects first
    assert new is not old
    fake.endpoint.detach(old, 1)
    fake.endpoint.detach(old, 2)
    assert new.open
    assert fake.endpoint.connections == 1
