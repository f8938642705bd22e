"""One coordinator per device: connect, poll on schedule, hand readings to the buffer."""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from agent.report import ExceptionFilter
from protocols.base import DeviceState, DeviceUnreachable, Source
from shared.backoff import Backoff
from shared.cancellation import raise_if_cancelled
from shared.clock import Clock
from shared.readings import Reading

log = logging.getLogger(__name__)
_RANDOM = random.Random()  # noqa: S311 - spreads poll times, nothing secret

ReadingSink = Callable[[Sequence[Reading]], Awaitable[int]]
HANDING_AT_STOP_S = 1.0
"""How long a stop waits for the last readings to be buffered before giving them up."""


def first_poll_delay(
    interval: float, now_s: float, *, align: bool, jitter: float, rng: random.Random
) -> float:
    """Seconds from `now_s` (wall clock) to a device's first poll, or its first after an outage.

    Aligned, devices poll on whole seconds of the wall clock (on multiples of the interval
    when it is shorter), so the agent wakes once per tick for all of them (at 1 Hz most of
    a poll's cost is the wake-up, not the points) and their timestamps line up across
    devices; `jitter` then delays each by a random part of it. Not aligned, each device gets
    a random phase within its interval.
    """
    grid = min(interval, 1.0)
    if not align:
        return rng.uniform(0, grid)
    return grid - now_s % grid + rng.uniform(0, min(jitter, interval))


class DevicePoller:
    """Polls one device every `interval` seconds until cancelled; never dies on a device error.

    A failure is logged once when it starts and once when it ends; while the device is
    unreachable its tags get one bad-quality reading, and reconnects back off with jitter.
    While the buffer cannot write (disk full), the hand-over of the last poll's readings
    waits, and so polling of this device pauses until they are written.
    """

    def __init__(
        self,
        source: Source,
        sink: ReadingSink,
        *,
        interval: float,
        clock: Clock,
        backoff: Backoff | None = None,
        report: ExceptionFilter | None = None,
        align: bool = True,
        jitter: float = 0.0,
    ) -> None:
        self._source = source
        self._sink = sink
        self._report = report
        self._interval = interval
        self._clock = clock
        self._backoff = backoff or Backoff(initial=min(1.0, interval), cap=30.0)
        self._align = align
        self._jitter = jitter
        self._down_since: float | None = None
        self.polls = 0
        self.readings = 0
        self.handed = 0  # readings given to the buffer, bad ones included
        self.skipped = 0  # polls that could not start on time
        self._handing: asyncio.Future[int] | None = None

    @property
    def suppressed(self) -> int:
        """Readings report-by-exception held back as unchanged."""
        return self._report.suppressed if self._report is not None else 0

    @property
    def state(self) -> DeviceState:
        """The device's connection state."""
        return self._source.state

    async def run(self) -> None:
        """Poll until cancelled."""
        await self._clock.sleep(self._phase_delay())
        next_poll = self._clock.monotonic()
        try:
            while True:
                # Checked after each call into a driver: see raise_if_cancelled.
                if self._source.state is not DeviceState.CONNECTED:
                    connected = await self._connect()
                    raise_if_cancelled()
                    if not connected:
                        await self._clock.sleep(self._backoff.next_delay())
                        # Back in step with the other devices, if it connects this time.
                        await self._clock.sleep(self._phase_delay())
                        next_poll = self._clock.monotonic()
                        continue
                await self._poll()
                raise_if_cancelled()
                next_poll += self._interval
                now = self._clock.monotonic()
                if next_poll < now:
                    # Overran: skip (and count) the polls that could not start on time, rather
                    # than queue them up and burst.
                    self.skipped += int((now - next_poll) // self._interval)
                    next_poll = now
                await self._clock.sleep(next_poll - now)
        finally:
            await self._finish_handing()
            await self._source.close()

    def _phase_delay(self) -> float:
        now_s = self._clock.time_us() / 1e6
        return first_poll_delay(
            self._interval, now_s, align=self._align, jitter=self._jitter, rng=_RANDOM
        )

    async def _finish_handing(self) -> None:
        """On stop: let the last hand-over commit, unless it waits for room or disk too long.

        Readings already read are committed on a clean stop; but a `block` buffer that stays
        full, or a disk that stays full, must not hold the stop up for ever (the buffer logs
        what it gave up, and it finishes a write it has begun even when cancelled).
        """
        handing, self._handing = self._handing, None
        if handing is None:
            return
        await asyncio.wait({handing}, timeout=HANDING_AT_STOP_S)
        if not handing.done():
            handing.cancel()
            await asyncio.wait({handing})
        if not handing.cancelled() and handing.exception() is not None:
            error = handing.exception()
            log.error("device %s: last readings not buffered: %s", self._source.name, error)

    async def _connect(self) -> bool:
        try:
            await self._source.connect()
        except DeviceUnreachable as exc:
            await self._went_down(str(exc))
            return False
        self._came_back()
        return True

    async def _poll(self) -> None:
        try:
            readings = await self._source.read()
        except DeviceUnreachable as exc:
            await self._source.close()
            await self._went_down(str(exc))
            return
        except Exception as exc:  # a driver bug must not end polling of this device
            log.exception("%s: unexpected error while polling", self._source.name)
            await self._source.close()
            await self._went_down(f"unexpected error: {exc!r}")
            return
        self.polls += 1
        self.readings += len(readings)
        if self._report is not None:
            readings = self._report(readings)
        if readings:
            await self._hand(readings)

    async def _went_down(self, reason: str) -> None:
        if self._down_since is not None:
            return
        self._down_since = self._clock.monotonic()
        log.error("device %s unreachable: %s", self._source.name, reason)
        bad = self._source.unreachable_readings(self._clock.time_us())
        await self._hand(self._report(bad) if self._report is not None else bad)

    async def _hand(self, readings: Sequence[Reading]) -> None:
        """Give readings to the buffer while the next poll goes ahead.

        At most one hand-over per device is outstanding: the next one waits for it, so order
        is kept, memory is bounded, and a blocking buffer still holds the poller back.
        """
        previous = self._handing
        if previous is not None:
            try:
                # Shielded: stopping the poller must not cancel a write of readings already read.
                await asyncio.shield(previous)
            except asyncio.CancelledError:
                # Stopped while the last hand-over waits for its commit: these readings were
                # read too, so they go behind it, and the stop commits them (or says it gave
                # them up) with the rest.
                self.handed += len(readings)
                self._handing = asyncio.ensure_future(self._after(previous, readings))
                raise
        self.handed += len(readings)
        self._handing = asyncio.ensure_future(self._sink(readings))

    async def _after(self, previous: "asyncio.Future[int]", readings: Sequence[Reading]) -> int:
        """Hand readings over once the previous hand-over has ended, however it ended."""
        try:
            await asyncio.wait({previous})
        except asyncio.CancelledError:
            # The stop gave up waiting: give up the one before too (the buffer says what it
            # held), and say what these were.
            previous.cancel()
            log.warning(
                "device %s: %d readings not buffered: stopped while the buffer had no room or"
                " could not write",
                self._source.name,
                len(readings),
            )
            raise
        return await self._sink(readings)

    def _came_back(self) -> None:
        self._backoff.reset()
        if self._down_since is None:
            return
        outage = self._clock.monotonic() - self._down_since
        self._down_since = None
        log.info("device %s reachable again after %.1fs", self._source.name, outage)
