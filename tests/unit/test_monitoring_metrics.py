"""The collector metrics the alerts stand on: ingest lag, agents online, replica lag."""

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from collector.metrics import CollectorMetrics
from collector.replica import ReadPools
from shared.mqtt import Message
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.unit.test_consumer import TOPICS, Broker, Store, consumer_of, until


async def test_ingest_lag_is_observed_per_stored_batch_from_its_newest_reading() -> None:
    broker, store = Broker(), Store()
    store.finish(1)
    consumer = consumer_of(broker, store, group_max_readings=1)
    metrics: CollectorMetrics = consumer._metrics
    now_us = time.time_ns() // 1000
    readings = [
        Reading("d", "t", DataType.FLOAT64, now_us - 90_000_000, 1.0),
        Reading("d", "t", DataType.FLOAT64, now_us - 30_000_000, 2.0),
    ]
    payload = encode_batch("a1", 1, [1, 2], readings)
    # Every reading refused (from 1601): stored, but nothing to measure a lag from.
    old = [Reading("d", "t", DataType.FLOAT64, -11_644_473_600_000_000, 3.0)]
    refused = encode_batch("a1", 1, [3], old)
    task = asyncio.create_task(consumer.run())
    try:
        broker.inbox.put_nowait(Message(TOPICS.batch("a1"), payload, 1, 1, False))
        await until(lambda: broker.acked == [1])
        store.finish(3)  # the fake store's writes are named by their first batch id
        broker.inbox.put_nowait(Message(TOPICS.batch("a1"), refused, 1, 2, False))
        await until(lambda: broker.acked == [1, 2])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    count = metrics.registry.get_sample_value("plantwire_collector_ingest_lag_seconds_count")
    total = metrics.registry.get_sample_value("plantwire_collector_ingest_lag_seconds_sum")
    assert count == 1
    assert total is not None
    assert 30 <= total < 40, "measured from the newest reading"


def test_agents_online_follow_the_registry_and_forget_removed_agents() -> None:
    metrics = CollectorMetrics()
    metrics.show_agents({"a1": True, "a2": False})
    sample = metrics.registry.get_sample_value
    assert sample("plantwire_collector_agent_online", {"agent": "a1"}) == 1.0
    assert sample("plantwire_collector_agent_online", {"agent": "a2"}) == 0.0
    metrics.show_agents({"a2": True})
    assert sample("plantwire_collector_agent_online", {"agent": "a1"}) is None
    assert sample("plantwire_collector_agent_online", {"agent": "a2"}) == 1.0


class _Replica:
    """A pool whose connection answers the lag query from a script, or fails."""

    def __init__(self, answers: list[tuple[bool, float] | Exception]) -> None:
        self.answers = answers

    @asynccontextmanager
    async def connection(self, timeout: float) -> AsyncIterator["_Replica"]:
        yield self

    async def execute(self, query: str) -> "_Replica":
        return self

    async def fetchone(self) -> tuple[bool, float]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def _lag_after(answers: list[tuple[bool, float] | Exception]) -> list[float]:
    """The gauge's successive values while the replica gives these answers, one per check."""
    metrics = CollectorMetrics()
    replica = _Replica(list(answers))
    reads = ReadPools(replica, replica, metrics)  # type: ignore[arg-type]
    seen: list[float] = []
    original_set = metrics.replica_lag.set

    def record(value: float) -> None:
        seen.append(value)
        original_set(value)

    metrics.replica_lag.set = record  # type: ignore[method-assign]
    task = asyncio.create_task(reads.watch_lag(every_s=0.001))
    try:
        await until(lambda: len(seen) >= len(answers))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return seen[: len(answers)]


async def test_replica_lag_gauge_tracks_the_replica_and_is_nan_while_it_fails() -> None:
    assert math.isnan(
        CollectorMetrics().registry.get_sample_value("plantwire_collector_replica_lag_seconds")
        or 0.0
    ), "no replica: no number"
    seen = await _lag_after(
        [(True, 2.5), psycopg.OperationalError("gone"), (False, 0.0), (True, 0.0)]
    )
    assert seen[0] == 2.5
    assert math.isnan(seen[1]), "a failing replica has no lag to show"
    assert math.isnan(seen[2]), "a server not in recovery is not a replica"
    assert seen[3] == 0.0
