"""Noticing overload: polls that could not start on time, reported once each way."""

import logging
from collections.abc import Sequence
from typing import Protocol

from shared.clock import Clock

log = logging.getLogger(__name__)


class Skipping(Protocol):
    """What the watch needs of a poller."""

    @property
    def skipped(self) -> int:
        """Polls that could not start on time, so far."""
        ...


class OverloadWatch:
    """Overloaded while any poll was skipped in the last `window` seconds.

    The agent then runs at its capacity (polls that cannot start on time are skipped, not
    queued): a plateau, reported by metric, /healthz and one log line each way.
    """

    def __init__(self, pollers: Sequence[Skipping], clock: Clock, window: float = 10.0) -> None:
        self._pollers = pollers
        self._clock = clock
        self._window = window
        self._seen = 0
        self._last_skip = 0.0
        self.overloaded = False

    def check(self) -> bool:
        """Look at the pollers' skip counts; return whether the agent is overloaded."""
        skipped = sum(poller.skipped for poller in self._pollers)
        now = self._clock.monotonic()
        if skipped > self._seen:
            self._last_skip = now
            if not self.overloaded:
                self.overloaded = True
                log.warning(
                    "overloaded: %d polls could not start on time and were skipped; the agent"
                    " polls at its capacity",
                    skipped - self._seen,
                )
        elif self.overloaded and now - self._last_skip >= self._window:
            self.overloaded = False
            log.info("no longer overloaded: every poll on time for %.0f s", self._window)
        self._seen = skipped
        return self.overloaded
