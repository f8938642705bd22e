"""Report by exception: pass a reading only when it says something new."""

import math
from collections.abc import Mapping, Sequence

from shared.clock import Clock
from shared.readings import Quality, Reading, Value


def _moved(old: Value | None, new: Value | None, deadband: float) -> bool:
    if old is None or new is None or isinstance(new, bool | str) or isinstance(old, bool | str):
        return old != new
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return False
    if deadband > 0:
        return abs(new - old) > deadband
    return old != new


class ExceptionFilter:
    """Keeps a reading if its value moved beyond the tag's deadband, its quality changed, or
    `heartbeat_s` passed since the tag was last sent; counts the rest as suppressed."""

    def __init__(self, deadbands: Mapping[str, float], heartbeat_s: float, clock: Clock) -> None:
        self._deadbands = deadbands
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._last: dict[str, tuple[Value | None, Quality, float]] = {}
        self.suppressed = 0

    def __call__(self, readings: Sequence[Reading]) -> list[Reading]:
        """The readings worth sending."""
        now = self._clock.monotonic()
        kept = []
        for reading in readings:
            last = self._last.get(reading.tag)
            if (
                last is None
                or last[1] is not reading.quality
                or now - last[2] >= self._heartbeat_s
                or _moved(last[0], reading.value, self._deadbands.get(reading.tag, 0.0))
            ):
                kept.append(reading)
                self._last[reading.tag] = (reading.value, reading.quality, now)
        self.suppressed += len(readings) - len(kept)
        return kept
