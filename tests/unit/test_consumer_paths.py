"""The consumer's rarer outcomes: unexpected topics, refusals of the database, lost acks."""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest
from psycopg import DataError, IntegrityError, OperationalError

from collector.batches import Batch
from collector.config import IngestSettings
from collector.consumer import Consumer
from collector.metrics import CollectorMetrics
from collector.store import DeadLetter, WriteOutcome
from shared.acks import decode_ack
from shared.errors import MqttError
from shared.mqtt import Message
from tests.unit.test_consumer import TOPICS, Broker, Store, message, until, v3_message


def counted(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics() -> CollectorMetrics:
    return CollectorMetrics()


@pytest.fixture
async def run() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Started consumers, cancelled after the test."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start(
    tasks: list[asyncio.Task[None]],
    broker: Broker,
    store: Store,
    metrics: CollectorMetrics,
) -> None:
    consumer = Consumer(
        broker,
        store,  # type: ignore[arg-type]
        topics=TOPICS,
        settings=IngestSettings(group_max_readings=1, retry_interval="10ms"),
        metrics=metrics,
    )
    tasks.append(asyncio.create_task(consumer.run()))


@pytest.mark.parametrize(
    ("topic", "kind"),
    [(TOPICS.state("a1"), "state"), ("plantwire/v1/a1/command", "command")],
)
async def test_a_message_of_a_kind_this_consumer_does_not_take_is_quarantined(
    run: list[asyncio.Task[None]], metrics: CollectorMetrics, topic: str, kind: str
) -> None:
    broker, store = Broker(), Store()
    start(run, broker, store, metrics)  # no status handler: state messages are not expected
    broker.inbox.put_nowait(Message(topic, b"{}", 1, 7, False))
    await until(lambda: broker.acked == [7])
    assert store.quarantined == [f"no {kind!r} messages are expected here"]
    assert counted(metrics, "plantwire_collector_dead_letters_total", reason="topic") == 1.0
    assert broker.published == [], "not a batch: no agent is told"


async def test_a_dictionary_the_database_refuses_quarantines_its_batch(
    run: list[asyncio.Task[None]], metrics: CollectorMetrics
) -> None:
    class RefusingStore(Store):
        async def save_dictionary(self, agent: str, dict_hash: str, raw: bytes, tags: int) -> None:
            raise DataError("invalid byte sequence for encoding UTF8: 0x00")

    broker, store = Broker(), RefusingStore()
    start(run, broker, store, metrics)
    broker.inbox.put_nowait(v3_message(1))
    await until(lambda: broker.acked == [1])
    assert store.quarantined == ["DataError: invalid byte sequence for encoding UTF8: 0x00"]
    assert store.started == [], "none of its readings is written"
    await until(lambda: len(broker.published) == 1)
    rejected = decode_ack(broker.published[0][1]).rejected
    assert [(r.batch, r.reason) for r in rejected] == [(1, "store")]


class NoDeadLetters(Store):
    """Refuses every dead letter, as if its row broke a constraint."""

    async def quarantine(self, letter: DeadLetter) -> None:
        raise IntegrityError("duplicate key value violates unique constraint")


async def test_a_message_not_even_kept_as_a_dead_letter_is_counted_lost(
    run: list[asyncio.Task[None]], metrics: CollectorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    broker, store = Broker(), NoDeadLetters()
    start(run, broker, store, metrics)
    broker.inbox.put_nowait(Message(TOPICS.batch("a1"), b"junk", 1, 3, False))
    await until(lambda: broker.acked == [3])
    assert counted(metrics, "plantwire_collector_messages_total", outcome="lost") == 1.0
    assert counted(metrics, "plantwire_collector_messages_total", outcome="quarantined") == 0.0
    assert "could not keep the message from plantwire/v1/a1/batch: IntegrityError" in caplog.text
    assert broker.published == [], "the agent is not told: it sends the batch again"


async def test_a_refused_batch_that_cannot_be_kept_either_is_lost_but_acknowledged_in_turn(
    run: list[asyncio.Task[None]], metrics: CollectorMetrics
) -> None:
    class RefusingWrites(NoDeadLetters):
        async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
            raise DataError("value out of range")

    broker, store = Broker(), RefusingWrites()
    start(run, broker, store, metrics)
    broker.inbox.put_nowait(message(1))
    broker.inbox.put_nowait(message(2))
    await until(lambda: broker.acked == [1, 2])
    assert counted(metrics, "plantwire_collector_messages_total", outcome="lost") == 2.0
    assert counted(metrics, "plantwire_collector_messages_total", outcome="stored") == 0.0


async def test_an_ack_the_broker_does_not_take_is_counted_and_ingest_goes_on(
    run: list[asyncio.Task[None]], metrics: CollectorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    class NoPubacks(Broker):
        async def publish(
            self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
        ) -> None:
            self.published.append((topic, payload))
            raise MqttError(f"no PUBACK within {timeout:g}s")

    broker, store = NoPubacks(), Store()
    store.finish(1)
    store.finish(2)
    start(run, broker, store, metrics)
    broker.inbox.put_nowait(message(1))
    broker.inbox.put_nowait(message(2))
    await until(lambda: broker.acked == [1, 2])
    await until(lambda: counted(metrics, "plantwire_collector_ack_failures_total") == 2.0)
    assert "could not acknowledge to agent a1: no PUBACK within 10s" in caplog.text


async def test_a_database_outage_is_logged_once_and_its_end_once(
    run: list[asyncio.Task[None]], metrics: CollectorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    class Outage(Store):
        def __init__(self, failures: int) -> None:
            super().__init__()
            self.failures = failures

        async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
            if self.failures:
                self.failures -= 1
                raise OperationalError("connection refused")
            return WriteOutcome(len(batches), 0, sum(len(b) for b in batches))

    caplog.set_level(logging.INFO, logger="collector.consumer")
    broker, store = Broker(), Outage(failures=3)
    start(run, broker, store, metrics)
    broker.inbox.put_nowait(message(1))
    await until(lambda: broker.acked == [1])
    assert counted(metrics, "plantwire_collector_write_errors_total") == 3.0
    assert counted(metrics, "plantwire_collector_messages_total", outcome="stored") == 1.0
    messages = [r.getMessage() for r in caplog.records if r.name == "collector.consumer"]
    assert messages == [
        "cannot write to the database: connection refused; retrying",
        "database writes resumed",
    ]


async def test_stopping_while_a_status_message_is_stored_leaves_it_unacknowledged() -> None:
    storing = asyncio.Event()

    async def slow_registry(agent: str, kind: str, payload: bytes) -> None:
        storing.set()
        await asyncio.Event().wait()  # the database never answers

    broker = Broker()
    consumer = Consumer(
        broker,
        Store(),  # type: ignore[arg-type]
        topics=TOPICS,
        settings=IngestSettings(group_max_readings=1),
        metrics=CollectorMetrics(),
        on_status=slow_registry,
    )
    task = asyncio.create_task(consumer.run())
    broker.inbox.put_nowait(Message(TOPICS.heartbeat("a1"), b"{}", 1, 5, False))
    await asyncio.wait_for(storing.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the consumer stops"
    assert task.cancelled()
    assert broker.acked == [], "not recorded, so not acknowledged: the broker sends it again"
