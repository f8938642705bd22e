"""ReadPools falling back to the primary: warned once per outage, retried on a schedule."""

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import PoolTimeout

from collector.metrics import CollectorMetrics
from collector.replica import REPLICA_RETRY_S, ReadPools


class FakePool:
    """Hands out its name as the connection, or times out while `down`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.asked = 0

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[str]:
        self.asked += 1
        if self.down:
            raise PoolTimeout(f"couldn't get a connection after {timeout} sec")
        yield self.name


async def which(conn: Any) -> Any:
    """The connection itself: a fake pool's connection is its name."""
    return conn


async def test_a_failing_replica_is_retried_after_a_pause_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    primary, replica = FakePool("primary"), FakePool("replica")
    # No metrics: a command-line tool's reads count nothing.
    reads = ReadPools(primary, replica, clock=lambda: now[0])  # type: ignore[arg-type]
    replica.down = True
    with caplog.at_level(logging.INFO, logger="collector.replica"):
        assert await reads.run(which) == "primary"
        assert await reads.run(which) == "primary"
        assert replica.asked == 1, "the replica is left alone after it failed"
        now[0] += REPLICA_RETRY_S
        assert await reads.run(which) == "primary"
        assert replica.asked == 2, "tried again once the pause is over"
        now[0] += REPLICA_RETRY_S - 0.5
        assert await reads.run(which) == "primary"
        assert replica.asked == 2, "the pause counts from the latest failure"
        replica.down = False
        now[0] += 0.5
        assert await reads.run(which) == "replica"
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("read replica failed (PoolTimeout")]) == 1
    assert messages[-1] == "read replica answers again; API reads go to it"


async def test_without_a_replica_there_is_no_lag_and_reads_go_to_the_primary() -> None:
    reads = ReadPools(FakePool("primary"))  # type: ignore[arg-type]
    assert await reads.replica_lag() is None
    assert await reads.run(which) == "primary"


async def test_each_read_that_falls_back_to_the_primary_is_counted() -> None:
    now = [0.0]
    primary, replica, metrics = FakePool("primary"), FakePool("replica"), CollectorMetrics()
    reads = ReadPools(primary, replica, metrics, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await reads.run(which) == "replica"
    replica.down = True
    assert await reads.run(which) == "primary"  # the replica fails
    assert await reads.run(which) == "primary"  # sent straight on
    now[0] += REPLICA_RETRY_S
    assert await reads.run(which) == "primary"  # the replica fails again
    fallbacks = metrics.registry.get_sample_value("plantwire_collector_read_fallbacks_total")
    assert fallbacks == 2.0, "only reads the replica failed count, not those sent straight on"
