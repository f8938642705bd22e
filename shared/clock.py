"""An injectable clock, so logic that reads time can be tested without waiting."""

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for intervals, and sleeping."""

    def time_us(self) -> int:
        """Return wall-clock time in microseconds since the Unix epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Return seconds from an arbitrary but steady origin."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for the given number of seconds."""
        ...


class SystemClock:
    """The real clock."""

    def time_us(self) -> int:
        """Return wall-clock time in microseconds since the Unix epoch (UTC)."""
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        """Return seconds from the process's monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait for the given number of seconds."""
        await asyncio.sleep(seconds)
