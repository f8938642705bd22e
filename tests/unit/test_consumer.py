"""The consumer's ordering: overlapping writes, broker acknowledgements in arrival order."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from psycopg import DataError, OperationalError
from psycopg.errors import QueryCanceled

from collector.batches import Batch
from collector.config import IngestSettings
from collector.consumer import Consumer
from collector.metrics import CollectorMetrics
from collector.store import DeadLetter, WriteOutcome
from shared.acks import AckPayload, Refusal, decode_ack
from shared.mqtt import Message
from shared.readings import DataType, Reading
from shared.wire import Topics, encode_batch
from tests.payloads import v3_batch

TS = 1_790_000_000_000_000
TOPICS = Topics()


def message(mid: int, agent: str = "a1") -> Message:
    readings = [Reading("d", "t", DataType.FLOAT64, TS + mid, float(mid))]
    payload = encode_batch(agent, 1, [mid], readings)
    return Message(TOPICS.batch(agent), payload, 1, mid, False)


class Broker:
    """Hands messages to the consumer and records what it acknowledges and publishes."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.acked: list[int] = []
        self.published: list[tuple[str, bytes]] = []
        self.puback = asyncio.Event()

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            yield await self.inbox.get()

    def ack(self, message: Message) -> None:
        self.acked.append(message.mid)

    def backlog(self) -> int:
        return self.inbox.qsize()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        self.published.append((topic, payload))
        await self.puback.wait()  # a broker that never answers must not stall ingest


class Store:
    """Writes that finish when the test says so, possibly out of order."""

    def __init__(self) -> None:
        self.started: list[list[int]] = []
        self.release: dict[int, asyncio.Event] = {}
        self.quarantined: list[str] = []
        self.written: list[int] = []

    async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
        ids = [b.batch_id for b in batches]
        self.started.append(ids)
        gate = self.release.setdefault(ids[0], asyncio.Event())
        await gate.wait()
        self.written.append(sum(len(b) for b in batches))
        return WriteOutcome(len(batches), 0, sum(len(b) for b in batches))

    async def quarantine(self, letter: DeadLetter) -> None:
        self.quarantined.append(letter.error)

    def finish(self, first_id: int) -> None:
        self.release.setdefault(first_id, asyncio.Event()).set()


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def test_writes_overlap_but_broker_acks_keep_arrival_order() -> None:
    broker, store = Broker(), Store()
    settings = IngestSettings(group_max_readings=1, group_max_delay="10ms", concurrent_writes=2)
    consumer = Consumer(
        broker,
        store,  # type: ignore[arg-type]
        topics=TOPICS,
        settings=settings,
        metrics=CollectorMetrics(),
    )
    task = asyncio.create_task(consumer.run())
    try:
        for mid in (1, 2, 3):
            broker.inbox.put_nowait(message(mid))
        await until(lambda: store.started == [[1], [2]])
        await asyncio.sleep(0.05)
        assert store.started == [[1], [2]], "a third write waits for a free slot"
        store.finish(2)
        await asyncio.sleep(0.05)
        assert broker.acked == [], "message 2 is committed, but 1 is not: nothing is acked"
        broker.inbox.put_nowait(Message(TOPICS.batch("a1"), b"junk", 1, 4, False))
        store.finish(1)
        await until(lambda: broker.acked == [1, 2])
        await until(lambda: store.started == [[1], [2], [3]])
        store.finish(3)
        await until(lambda: broker.acked == [1, 2, 3, 4])
        assert len(store.quarantined) == 1
        assert "not a Plantwire batch" in store.quarantined[0]

        def stored() -> list[list[int]]:
            return [decode_ack(p).stored for t, p in broker.published if decode_ack(p).stored]

        # acks go out in their own tasks, so the last may follow the PUBACK by a moment
        await until(lambda: len(stored()) == 3)
        assert stored() == [[1], [2], [3]], "agents hear of each commit though PUBACKs never come"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_cancelled_write_ends_even_if_it_surfaces_as_a_database_error() -> None:
    class CancelledQueryStore(Store):
        async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
            self.started.append([b.batch_id for b in batches])
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise QueryCanceled("canceling statement due to user request") from None
            raise AssertionError("unreachable")

    broker, store = Broker(), CancelledQueryStore()
    consumer = Consumer(
        broker,
        store,  # type: ignore[arg-type]
        topics=TOPICS,
        settings=IngestSettings(group_max_readings=1, retry_interval="10ms"),
        metrics=CollectorMetrics(),
    )
    task = asyncio.create_task(consumer.run())
    broker.inbox.put_nowait(message(1))
    broker.inbox.put_nowait(message(2))
    broker.inbox.put_nowait(message(3))
    await until(lambda: len(store.started) == 2)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "the consumer stopped"
    assert broker.acked == []


def consumer_of(broker: Broker, store: Store, **settings: object) -> Consumer:
    return Consumer(
        broker,
        store,  # type: ignore[arg-type]
        topics=TOPICS,
        settings=IngestSettings.model_validate({"retry_interval": "10ms", **settings}),
        metrics=CollectorMetrics(),
    )


def mixed(first: int) -> Message:
    """A batch of two readings whose second has a timestamp from 1601."""
    readings = [
        Reading("d", "t", DataType.FLOAT64, TS, 1.0),
        Reading("d", "t", DataType.FLOAT64, -11_644_473_600_000_000, 2.0),
    ]
    return Message(
        TOPICS.batch("a1"), encode_batch("a1", 1, [first, first + 1], readings), 1, first, False
    )


@pytest.mark.parametrize("version", [1, 2])
async def test_refused_readings_are_acknowledged_in_the_version_asked_for(version: int) -> None:
    broker, store = Broker(), Store()
    store.finish(1)
    task = asyncio.create_task(consumer_of(broker, store, ack_version=version).run())
    try:
        broker.inbox.put_nowait(mixed(1))
        await until(lambda: broker.acked == [1] and len(broker.published) == 1)
        ack = decode_ack(broker.published[0][1])
        assert (ack.v, ack.stored) == (version, [1])
        assert ack.refused == (
            [Refusal(batch=1, readings={"timestamp": 1})] if version == 2 else []
        )
        assert store.written[0] == 1, "the good reading is written"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_batch_the_database_refuses_as_data_is_quarantined_alone() -> None:
    class PickyStore(Store):
        async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
            if any(b.batch_id == 2 for b in batches):
                raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
            self.written.append(sum(len(b) for b in batches))
            return WriteOutcome(len(batches), 0, sum(len(b) for b in batches))

    broker, store = Broker(), PickyStore()
    consumer = consumer_of(broker, store, group_max_readings=10, group_max_delay="200ms")
    task = asyncio.create_task(consumer.run())
    try:
        for mid in (1, 2, 3):
            broker.inbox.put_nowait(message(mid))
        await until(lambda: broker.acked == [1, 2, 3])
        assert len(store.quarantined) == 1
        assert "the database refused it: DataError" in store.quarantined[0]

        def acks() -> list[AckPayload]:
            return [decode_ack(p) for _, p in broker.published]

        # agents' acks go out in their own tasks, after the PUBACK
        await until(lambda: sorted(b for a in acks() for b in a.stored) == [1, 3])
        await until(lambda: any(a.rejected for a in acks()))
        rejected = [r for a in acks() for r in a.rejected]
        assert [(r.batch, r.reason) for r in rejected] == [(2, "store")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_crashing_consumer_releases_the_messages_it_held() -> None:
    class BrokenStore(Store):
        async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
            raise RuntimeError("a bug")

    broker = Broker()
    consumer = consumer_of(broker, BrokenStore(), group_max_readings=1)
    broker.inbox.put_nowait(message(1))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(consumer.run(), 5)
    assert broker.acked == [1], "the broker is not left waiting for a PUBACK"


def v3_message(mid: int, tag: str = "t", *, inline: bool = True) -> Message:
    readings = [Reading("d", tag, DataType.FLOAT64, TS + mid, float(mid))]
    payload = v3_batch("a1", 1, [(mid, readings)], inline=inline).payload
    return Message(TOPICS.batch("a1"), payload, 1, mid, False)


async def test_a_dictionary_is_kept_once_before_its_batches_are_acknowledged() -> None:
    events: list[tuple[object, ...]] = []

    class DictionaryStore(Store):
        async def save_dictionary(self, agent: str, dict_hash: str, raw: bytes, tags: int) -> None:
            events.append(("save", agent, tags))
            if len(events) == 1:
                raise OperationalError("the database restarts")  # retried, like a write

        async def load_dictionary(self, agent: str, dict_hash: str) -> bytes | None:
            events.append(("load", agent))
            return None

        async def write(self, batches: Sequence[Batch]) -> WriteOutcome:
            events.append(("write", *[b.batch_id for b in batches]))
            return await super().write(batches)

    broker, store = Broker(), DictionaryStore()
    for first in (1, 2, 3):
        store.finish(first)
    metrics = CollectorMetrics()
    consumer = Consumer(
        broker,
        store,  # type: ignore[arg-type]
        topics=TOPICS,
        settings=IngestSettings(group_max_readings=1, retry_interval="10ms"),
        metrics=metrics,
    )
    task = asyncio.create_task(consumer.run())
    try:
        broker.inbox.put_nowait(v3_message(1))
        broker.inbox.put_nowait(v3_message(2))  # the same dictionary, sent along again
        broker.inbox.put_nowait(v3_message(3, inline=False))
        broker.inbox.put_nowait(v3_message(4, "other", inline=False))  # a dictionary never seen
        await until(lambda: broker.acked == [1, 2, 3, 4])

        def acks() -> list[AckPayload]:
            return [decode_ack(p) for _, p in broker.published]

        await until(lambda: len(acks()) == 4)
        assert events == [
            ("save", "a1", 1),
            ("save", "a1", 1),
            ("write", 1),
            ("write", 2),
            ("write", 3),
            ("load", "a1"),
        ]
        assert sorted(b for a in acks() for b in a.stored) == [1, 2, 3]
        assert [a.dictionary for a in acks() if a.dictionary] == [[4]]
        assert not any(a.rejected for a in acks())
        assert store.quarantined == []
        counted = metrics.registry.get_sample_value(
            "plantwire_collector_messages_total", {"outcome": "dictionary"}
        )
        assert counted == 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
