"""Fakes for unit tests: a clock that does not wait, a scripted device, a flaky publisher."""

import asyncio
from collections.abc import Sequence

from protocols.base import DeviceState, DeviceUnreachable
from shared.errors import MqttError
from shared.readings import DataType, Quality, Reading


class FakeClock:
    """A clock whose sleep advances time instantly (and yields to the loop)."""

    def __init__(self, start_us: int = 1_790_000_000_000_000) -> None:
        self.now = 0.0
        self.start_us = start_us
        self.sleeps: list[float] = []

    def time_us(self) -> int:
        return self.start_us + int(self.now * 1_000_000)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class ScriptedSource:
    """A device whose connect and read outcomes follow a script of 'ok', 'down' or 'crash'."""

    def __init__(self, clock: FakeClock, script: Sequence[str]) -> None:
        self._clock = clock
        self._script = list(script)
        self._state = DeviceState.DISCONNECTED
        self.closed = 0

    @property
    def name(self) -> str:
        return "fake"

    @property
    def state(self) -> DeviceState:
        return self._state

    def _next(self) -> str:
        if not self._script:
            raise asyncio.CancelledError  # end of script ends the poller
        return self._script.pop(0)

    async def connect(self) -> None:
        if self._next() == "down":
            raise DeviceUnreachable("fake: connection refused")
        self._state = DeviceState.CONNECTED

    async def read(self) -> list[Reading]:
        step = self._next()
        if step == "down":
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable("fake: read timed out")
        if step == "crash":
            raise ZeroDivisionError("driver bug")
        return [Reading("fake", "t", DataType.INT32, self._clock.time_us(), 1)]

    def unreachable_readings(self, ts_us: int) -> list[Reading]:
        return [Reading("fake", "t", DataType.INT32, ts_us, None, Quality.BAD)]

    async def close(self) -> None:
        self.closed += 1
        self._state = DeviceState.DISCONNECTED


class FlakyPublisher:
    """Fails the first `failures` publishes, then records every payload."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[tuple[str, bytes]] = []
        self.connected_checks = 0

    @property
    def connected(self) -> bool:
        self.connected_checks += 1
        return self.connected_checks > 2  # the broker turns up on the third look

    async def wait_connected(self, timeout: float) -> bool:
        await asyncio.sleep(0)
        return self.connected

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise MqttError("no PUBACK")
        self.published.append((topic, payload))
