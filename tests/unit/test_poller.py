"""The device coordinator: polls on schedule, survives failures, reports them once."""

import asyncio
import logging
from collections.abc import Sequence

import pytest

from agent.poller import DevicePoller
from protocols.base import DeviceState
from shared.readings import Quality, Reading
from tests.unit.fakes import FakeClock, ScriptedSource


class Collected:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, readings: Sequence[Reading]) -> int:
        self.readings.extend(readings)
        return 0


async def run(script: list[str]) -> tuple[Collected, ScriptedSource, DevicePoller, FakeClock]:
    clock = FakeClock()
    source = ScriptedSource(clock, script)
    sink = Collected()
    poller = DevicePoller(source, sink, interval=1.0, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    return sink, source, poller, clock


async def test_polls_every_interval() -> None:
    sink, source, poller, _ = await run(["ok", "ok", "ok", "ok"])
    assert poller.polls == 3
    assert [r.quality for r in sink.readings] == [Quality.GOOD] * 3
    gaps = [b.ts_us - a.ts_us for a, b in zip(sink.readings, sink.readings[1:], strict=False)]
    assert gaps == [1_000_000, 1_000_000]
    assert source.closed >= 1
    assert poller.state is DeviceState.DISCONNECTED


async def test_outage_gives_one_bad_reading_and_one_log_line_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.poller")
    script = ["ok", "ok", "down", "down", "down", "down", "ok", "ok"]
    sink, _, _, _ = await run(script)
    qualities = [r.quality for r in sink.readings]
    assert qualities == [Quality.GOOD, Quality.BAD, Quality.GOOD]
    assert sink.readings[1].value is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    recoveries = [r for r in caplog.records if "reachable again" in r.message]
    assert len(errors) == 1
    assert len(recoveries) == 1


async def test_reconnect_backs_off_and_resets() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, ["down"] * 6 + ["ok", "ok"])
    poller = DevicePoller(source, Collected(), interval=1.0, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    backoffs = clock.sleeps[1:7]
    assert backoffs[-1] > backoffs[0], "delays grow while the device stays away"


async def test_a_driver_bug_does_not_end_polling(caplog: pytest.LogCaptureFixture) -> None:
    sink, _, poller, _ = await run(["ok", "crash", "ok", "ok"])
    assert poller.polls == 1
    assert [r.quality for r in sink.readings] == [Quality.BAD, Quality.GOOD]
    assert "unexpected error" in caplog.text


async def test_overrun_skips_missed_polls() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, ["ok", "ok", "ok"])

    async def slow_sink(readings: Sequence[Reading]) -> int:
        clock.now += 3.5
        return 0

    poller = DevicePoller(source, slow_sink, interval=1.0, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert 0.0 in clock.sleeps[1:], "no sleep after an overrun: poll again at once"
