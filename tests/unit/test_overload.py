"""Overload is noticed from skipped polls and reported once each way."""

import logging
from dataclasses import dataclass

import pytest

from agent.overload import OverloadWatch
from tests.unit.fakes import FakeClock


@dataclass
class Poller:
    skipped: int = 0


def test_overload_starts_with_a_skipped_poll_and_ends_after_a_quiet_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.overload")
    clock, pollers = FakeClock(), [Poller(), Poller()]
    watch = OverloadWatch(pollers, clock, window=10.0)
    assert not watch.check()
    pollers[1].skipped = 3
    assert watch.check()
    for _ in range(5):
        clock.now += 3.0
        pollers[0].skipped += 1  # still skipping: still overloaded, no new log line
        assert watch.check()
    clock.now += 9.0
    assert watch.check(), "quiet for less than the window"
    clock.now += 1.0
    assert not watch.check()
    assert not watch.check()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("overloaded: 3 polls could not start on time")
    assert messages[1] == "no longer overloaded: every poll on time for 10 s"
