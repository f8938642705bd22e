"""Connections to Modbus endpoints, shared by the devices behind them.

An endpoint is where devices are reached: a host and port (Modbus TCP, RTU over TCP) or a
serial port (RTU). Devices naming the same endpoint (unit ids behind a gateway, slaves on one
RS-485 line) share up to `max_connections` connections to it, each carrying one request at a
time; every request names its device's unit id.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from protocols.base import DeviceUnreachable
from protocols.modbus.config import ModbusDevice
from shared.clock import Clock
from shared.invariants import required

log = logging.getLogger(__name__)

ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient
Send = Callable[[ModbusClient], Awaitable[ModbusPDU]]

OPEN_HOLDOFF_S = 1.0
"""After a failed attempt to open a connection, devices asking within this time get its
failure instead of a new attempt: one endpoint, one attempt, however many devices it has."""

_NEVER_GIVE_UP = 2**30  # pymodbus closes a connection after a few timeouts; that is ours to decide
_TRANSPORT_ERRORS = (ModbusException, OSError, asyncio.TimeoutError)


class ConnectionLost(DeviceUnreachable):
    """The shared connection broke: every device on it is unreachable until it reopens."""


class UnitSilent(DeviceUnreachable):
    """One unit id did not answer in time, while the connection itself is still usable."""


def new_client(config: ModbusDevice) -> ModbusClient:
    """A pymodbus client for a device's endpoint, without retries or reconnects of its own."""
    # Retries and reconnects are ours (busy retries, backoff in the poller), not pymodbus's.
    client: ModbusClient
    if config.transport == "rtu":
        serial = required(config.serial, "an RTU device's serial settings")
        client = AsyncModbusSerialClient(
            str(serial.port),
            framer=FramerType.RTU,
            baudrate=serial.baudrate,
            bytesize=serial.bytesize,
            parity=serial.parity,
            stopbits=serial.stopbits,
            timeout=config.timeout,
            retries=0,
            reconnect_delay=0,
        )
    else:
        client = AsyncModbusTcpClient(
            required(config.host, "a TCP device's host"),
            port=config.port,
            framer=FramerType.RTU if config.transport == "rtu_over_tcp" else FramerType.SOCKET,
            timeout=config.timeout,
            retries=0,
            reconnect_delay=0,
        )
    client.set_max_no_responses(_NEVER_GIVE_UP)
    return client


class ModbusConnection:
    """One open connection (socket or serial port), shared by the devices attached to it."""

    def __init__(self, client: ModbusClient, where: str) -> None:
        self._client = client
        self.where = where
        self._lock = asyncio.Lock()  # one request outstanding per connection
        self._units: Counter[int] = Counter()  # unit ids of the attached devices
        self._silent: set[int] = set()  # units unanswered since the last answer of any unit
        self._dropped = False

    @property
    def open(self) -> bool:
        """Whether requests can be sent (pymodbus notices a peer's close by itself)."""
        return not self._dropped and self._client.connected

    @property
    def devices(self) -> int:
        """How many devices are attached."""
        return self._units.total()

    def attach(self, unit: int) -> None:
        """Count a device (by unit id) as using this connection."""
        self._units[unit] += 1

    def detach(self, unit: int) -> None:
        """Stop counting a device as using this connection."""
        self._units[unit] -= 1
        if self._units[unit] <= 0:
            del self._units[unit]
            self._silent.discard(unit)

    def drop(self) -> None:
        """Close the connection; the devices on it see it closed and attach again."""
        if not self._dropped:
            self._dropped = True
            self._client.close()

    async def request(self, unit: int, timeout: float, send: Send) -> ModbusPDU:
        """Send one request for `unit` when the connection is free; return the response.

        Raise UnitSilent when that unit did not answer (the connection stays, unless no unit
        on it answers any more), ConnectionLost when the connection broke.
        """
        async with self._lock:
            if not self.open:
                raise ConnectionLost(f"connection to {self.where} lost")
            # One client for all devices on the connection, each with its own timeout.
            self._client.comm_params.timeout_connect = timeout
            try:
                response = await send(self._client)
            except ModbusIOException as exc:
                if not self._client.connected:
                    self.drop()
                    raise ConnectionLost(f"connection to {self.where} lost: {exc}") from exc
                raise UnitSilent(self._unanswered(unit, exc)) from exc
            except _TRANSPORT_ERRORS as exc:
                self.drop()
                raise ConnectionLost(f"connection to {self.where} lost: {exc}") from exc
            self._silent.clear()
            return response

    def _unanswered(self, unit: int, exc: Exception) -> str:
        self._silent.add(unit)
        if self._silent.issuperset(self._units):
            # No device here answers: more likely the gateway or the line than every unit.
            # Not a warning: each device logs its own outage once, and this repeats per retry.
            log.debug("no unit on %s answers: closing the connection", self.where)
            self.drop()
            return f"no answer from unit {unit} ({exc}); no unit on {self.where} answers"
        return f"no answer from unit {unit} on {self.where}: {exc}"


class ModbusEndpoint:
    """A host and port, or a serial port, with up to `max_connections` shared connections."""

    def __init__(
        self,
        where: str,
        new_client: Callable[[], ModbusClient],
        clock: Clock,
    ) -> None:
        self.where = where
        self.max_connections = 1
        self._limit_set = False
        self._new_client = new_client
        self._clock = clock
        self._connections: list[ModbusConnection] = []
        self._opening = asyncio.Lock()  # one attempt at a time; devices waiting share its outcome
        self._failure: tuple[float, str] | None = None  # (monotonic time, reason) of last attempt
        self.opened = 0  # connections opened so far

    def limit(self, max_connections: int) -> None:
        """Set the most connections; every device that sets it must set the same."""
        if self._limit_set and max_connections != self.max_connections:
            raise ValueError(
                f"{self.where}: max_connections {max_connections} disagrees with"
                f" {self.max_connections} set by another device on it"
            )
        self.max_connections = max_connections
        self._limit_set = True

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return sum(1 for connection in self._connections if connection.open)

    async def attach(self, unit: int, timeout: float) -> ModbusConnection:
        """The connection a device uses: a new one while fewer than the limit are open, else
        the one with the fewest devices. Raise DeviceUnreachable if none can be opened."""
        async with self._opening:
            self._forget_closed()
            if len(self._connections) < self.max_connections:
                try:
                    self._connections.append(await self._open(timeout))
                except DeviceUnreachable:
                    if not self._connections:
                        raise
            connection = min(self._connections, key=lambda c: c.devices)
            connection.attach(unit)
            return connection

    def detach(self, connection: ModbusConnection, unit: int) -> None:
        """A device stops using a connection; the last one out closes it."""
        connection.detach(unit)
        if connection.devices == 0:
            connection.drop()
            if connection in self._connections:
                self._connections.remove(connection)

    def _forget_closed(self) -> None:
        for connection in self._connections:
            if not connection.open:
                connection.drop()
        self._connections = [c for c in self._connections if c.open]

    async def _open(self, timeout: float) -> ModbusConnection:
        now = self._clock.monotonic()
        if self._failure is not None and now - self._failure[0] < OPEN_HOLDOFF_S:
            raise DeviceUnreachable(self._failure[1])
        client = self._new_client()
        client.comm_params.timeout_connect = timeout
        if not await client.connect():
            client.close()
            reason = f"cannot connect to {self.where}"
            self._failure = (self._clock.monotonic(), reason)
            raise DeviceUnreachable(reason)
        self._failure = None
        self.opened += 1
        log.debug("connection %d to %s open", self.opened, self.where)
        return ModbusConnection(client, self.where)


class ModbusPool:
    """The endpoints of an agent's Modbus devices: devices naming the same one share it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._endpoints: dict[str, ModbusEndpoint] = {}

    def endpoint(self, config: ModbusDevice) -> ModbusEndpoint:
        """The endpoint a device names (its transport settings come from the first device)."""
        key = config.endpoint
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = ModbusEndpoint(key, lambda: new_client(config), self._clock)
            self._endpoints[key] = endpoint
        if config.max_connections is not None:
            endpoint.limit(config.max_connections)
        return endpoint
