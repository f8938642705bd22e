"""The device poller's less travelled paths: report by exception, a last hand-over that fails."""

import asyncio
import logging
from collections.abc import Sequence

import pytest

from agent.buffer import BufferClosed
from agent.poller import DevicePoller
from agent.report import ExceptionFilter
from shared.readings import Reading
from tests.unit.fakes import FakeClock, ScriptedSource


async def test_unchanged_readings_are_held_back_and_not_handed_to_the_buffer() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, ["ok", "ok", "ok", "ok"])  # the same value on every poll
    buffered: list[Reading] = []

    async def sink(readings: Sequence[Reading]) -> int:
        buffered.extend(readings)
        return 0

    report = ExceptionFilter({}, heartbeat_s=60.0, clock=clock)
    poller = DevicePoller(source, sink, interval=1.0, clock=clock, report=report)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert (poller.polls, poller.readings, poller.suppressed) == (3, 3, 2)
    assert poller.handed == len(buffered) == 1, "only the first poll said something new"


async def test_a_last_hand_over_that_fails_at_stop_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, ["ok", "ok"])

    async def closed(readings: Sequence[Reading]) -> int:
        raise BufferClosed("buffer b.sqlite is closed")

    poller = DevicePoller(source, closed, interval=1.0, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "device fake: last readings not buffered: buffer b.sqlite is closed"
    ]


async def test_a_poller_stopped_before_its_first_poll_closes_the_device_and_hands_nothing() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])  # stopped while connecting

    async def sink(readings: Sequence[Reading]) -> int:
        raise AssertionError("nothing was read")

    poller = DevicePoller(source, sink, interval=1.0, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert (source.closed, poller.handed) == (1, 0)
