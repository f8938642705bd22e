"""The device coordinator: polls on schedule, survives failures, reports them once."""

import asyncio
import logging
import random
from collections.abc import Sequence

import pytest

from agent.poller import DevicePoller, first_poll_delay
from protocols.base import DeviceState
from shared.readings import DataType, Quality, Reading
from tests.harness import eventually
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
    # After the first phase delay: each failed connect sleeps its backoff, then to the tick.
    backoffs = clock.sleeps[1::2][:5]
    assert backoffs[-1] > backoffs[0], "delays grow while the device stays away"
    assert all(0 < phase <= 1.0 for phase in clock.sleeps[2:11:2])


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
    assert poller.skipped == 2, "a 3.5 s overrun skips two whole 1 s polls, counted"


class AnsweringSource(ScriptedSource):
    """A device whose reads wait for an answer through asyncio.wait_for, as pymodbus does."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, [])
        self.answer: asyncio.Future[list[Reading]] | None = None
        self.reads = 0

    async def connect(self) -> None:
        self._state = DeviceState.CONNECTED

    async def read(self) -> list[Reading]:
        self.reads += 1
        self.answer = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(self.answer, timeout=30)


async def test_a_stop_is_honoured_when_the_driver_swallows_the_cancellation() -> None:
    # On Python 3.11 a cancel that arrives with the answer is lost inside wait_for; the
    # poller must stop all the same (this hung AgentService.stop before).
    clock = FakeClock()
    source = AnsweringSource(clock)
    sink = Collected()
    poller = DevicePoller(source, sink, interval=0.01, clock=clock)
    task = asyncio.create_task(poller.run())

    async def reading() -> bool:
        return source.answer is not None and not source.answer.done()

    await eventually(reading, timeout=5, what="a read in progress")
    assert source.answer is not None
    source.answer.set_result([Reading("fake", "t", DataType.INT32, clock.time_us(), 1)])
    task.cancel()  # same loop iteration as the answer
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the poller ran on after being cancelled"
    assert task.cancelled()
    assert source.reads == 1, "no poll after the stop"
    assert source.closed == 1
    assert len(sink.readings) == 1, "the readings read before the stop are handed over"


class SlowSink:
    """A buffer stand-in whose first write takes a while and whose later ones never get room."""

    def __init__(self) -> None:
        self.committed: list[Reading] = []
        self.writing = asyncio.Event()

    async def __call__(self, readings: Sequence[Reading]) -> int:
        if self.committed:
            await asyncio.Event().wait()  # a `block` buffer that stays full
        self.writing.set()
        await asyncio.shield(asyncio.sleep(0.05))
        self.committed.extend(readings)
        return 0


async def test_stopping_gives_up_a_hand_over_that_waits_for_room() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, ["ok", "ok", "ok", "ok", "ok"])
    sink = SlowSink()
    poller = DevicePoller(source, sink, interval=1.0, clock=clock)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(sink.writing.wait(), 5)

    async def blocked() -> bool:
        return poller.handed == 2

    await eventually(blocked, timeout=5, what="the second hand-over to wait")
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "a hand-over waiting for room held the stop up"
    assert len(sink.committed) == 1
    assert source.closed == 1


class DelayedCommits:
    """A buffer stand-in committing each hand-over a while later, as group commits do."""

    def __init__(self) -> None:
        self.committed: list[Reading] = []

    async def __call__(self, readings: Sequence[Reading]) -> int:
        await asyncio.shield(asyncio.sleep(0.2))
        self.committed.extend(readings)
        return 0


async def test_a_stop_while_the_last_commit_is_pending_still_commits_every_reading_read() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, ["ok"] * 10)
    sink = DelayedCommits()
    poller = DevicePoller(source, sink, interval=0.01, clock=clock)
    task = asyncio.create_task(poller.run())

    async def second_waits() -> bool:
        return poller.polls >= 2 and not sink.committed

    await eventually(second_waits, timeout=5, what="a poll waiting for the commit before it")
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done
    assert poller.handed == poller.readings == poller.polls
    assert len(sink.committed) == poller.readings, "no reading read is lost to the stop"


async def test_aligned_devices_poll_together_on_whole_intervals_of_the_wall_clock() -> None:
    clock = FakeClock(start_us=1_790_000_012_300_000)  # 0.3 s past a whole second
    source = ScriptedSource(clock, ["ok", "ok", "ok"])
    sink = Collected()
    poller = DevicePoller(source, sink, interval=1.0, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert clock.sleeps[0] == pytest.approx(0.7)
    assert [r.ts_us % 1_000_000 for r in sink.readings] == [0, 0]


def test_first_poll_delay_aligns_jitters_within_the_interval_or_spreads() -> None:
    rng = random.Random(7)
    assert first_poll_delay(5.0, 1002.25, align=True, jitter=0.0, rng=rng) == pytest.approx(0.75)
    assert first_poll_delay(0.2, 1002.25, align=True, jitter=0.0, rng=rng) == pytest.approx(0.15)
    jittered = [first_poll_delay(1.0, 10.25, align=True, jitter=9.0, rng=rng) for _ in range(200)]
    assert all(0.75 <= d <= 1.75 for d in jittered)  # jitter is capped at the interval
    assert max(jittered) - min(jittered) > 0.5
    spread = [first_poll_delay(10.0, 3.0, align=False, jitter=0.0, rng=rng) for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in spread)
    assert max(spread) - min(spread) > 0.5
