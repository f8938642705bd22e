"""The forwarder: readings leave the buffer only when the collector confirms them."""

import asyncio
import contextlib
import logging
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.buffer import BufferUnavailable, PendingBatch, SqliteBuffer
from agent.config import ForwardSettings
from agent.forwarder import Forwarder
from shared.acks import Refusal, Rejection, encode_ack
from shared.clock import SystemClock
from shared.readings import DataType, Reading
from shared.wire import Topics
from shared.wire_v3 import BLOCK_TABLE_BYTES, split_v3
from tests.payloads import split
from tests.unit.fakes import FlakyPublisher


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[SqliteBuffer]:
    store = SqliteBuffer(tmp_path / "b.sqlite")
    await store.open()
    for poll in range(5):  # five polls of five readings: batches of 10 hold two
        await store.add(
            [
                Reading("d", f"t{i % 5}", DataType.INT32, 1_790_000_000_000_000 + i, i)
                for i in range(poll * 5, poll * 5 + 5)
            ]
        )
    yield store
    await store.close()


def forwarder(buffer: SqliteBuffer, publisher: FlakyPublisher, **settings: object) -> Forwarder:
    options = {
        "batch_max_readings": 10,
        "retry_interval": "1ms",
        "linger": "1ms",
        "ack_timeout": "200ms",
        "window": 2,
        **settings,
    }
    return Forwarder(
        buffer,
        publisher,
        agent_id="a1",
        topics=Topics("plant"),
        settings=ForwardSettings.model_validate(options),
        clock=SystemClock(),
    )


@contextlib.asynccontextmanager
async def running(forwarder: Forwarder) -> AsyncIterator[None]:
    task = asyncio.create_task(forwarder.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_only_the_collectors_ack_deletes_and_the_window_bounds_sends(
    buffer: SqliteBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.forwarder")
    publisher = FlakyPublisher(failures=3)
    sender = forwarder(buffer, publisher, ack_timeout="60s")
    async with running(sender):
        await until(lambda: _true(len(publisher.published) >= 2))
        await asyncio.sleep(0.05)
        assert len(publisher.published) == 2, "the window holds two batches in flight"
        assert (await buffer.stats()).readings == 25, "the broker's PUBACK deletes nothing"
        for payload in list(publisher.published):
            await sender.handle_ack(encode_ack(buffer.epoch, [split_v3(payload[1]).header.batch]))
        await until(lambda: _true(len(publisher.published) == 3))
        await sender.handle_ack(encode_ack(buffer.epoch, [21]))
        await until(_empty(buffer))
    values = [v for _, payload in publisher.published for v in values_of(payload)]
    assert values == list(range(25))
    assert sender.send_failures == 3
    assert sender.readings_acknowledged == sender.readings_sent == 25
    assert caplog.text.count("cannot forward") == 1
    assert "forwarding resumed" in caplog.text


async def test_unconfirmed_batches_are_sent_again_unchanged(buffer: SqliteBuffer) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, window=1, ack_timeout="50ms")
    async with running(sender):
        await until(lambda: _true(len(publisher.published) >= 3))
    first, second, third = publisher.published[:3]
    assert first == second == third
    assert sender.resends >= 2
    assert sender.batches_sent == 1


async def test_rejections_delete_and_are_counted_stale_acks_are_ignored(
    buffer: SqliteBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=1)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 1))
        await sender.handle_ack(encode_ack(buffer.epoch + 1, [1]))
        await sender.handle_ack(b"not json")
        assert (await buffer.stats()).readings == 25
        await sender.handle_ack(encode_ack(buffer.epoch, [], [Rejection(batch=1, error="bad")]))
        await until(lambda: _true(len(publisher.published) == 2))
    assert sender.rejected_batches == 1
    assert (await buffer.stats()).readings == 15
    assert "rejected batch 1" in caplog.text
    assert "ignored an acknowledgement" in caplog.text


def values_of(raw: bytes) -> list[float]:
    """The value column of a version 3 batch."""
    sections = split_v3(raw)
    start = sections.header.blocks * BLOCK_TABLE_BYTES
    values = array("d")
    values.frombytes(sections.body[start : start + 8 * sections.header.n])
    return values.tolist()


async def _true(value: bool) -> bool:
    return value


def _empty(buffer: SqliteBuffer) -> object:
    async def check() -> bool:
        return (await buffer.stats()).readings == 0

    return check


async def test_v2_refusals_and_rejections_are_counted_by_reason_once(
    buffer: SqliteBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.forwarder")
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=3)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 3))
        ack = encode_ack(
            buffer.epoch,
            stored=[1],
            rejected=[Rejection(batch=11, error="bad header", reason="schema")],
            refused=[Refusal(batch=1, readings={"timestamp": 2, "value": 1})],
        )
        await sender.handle_ack(ack)
        await sender.handle_ack(ack)  # a repeated acknowledgement counts nothing again
    assert sender.rejected_readings == {"timestamp": 2, "value": 1, "schema": 10}
    assert sender.rejected_batches == 1
    assert sender.readings_acknowledged == 20
    assert (await buffer.stats()).readings == 5
    refusals = [r for r in caplog.records if "refused 3 readings of batch 1" in r.message]
    assert len(refusals) == 1
    assert "2 timestamp, 1 value" in refusals[0].message
    assert "rejected batch 11" in caplog.text
    assert "(schema)" in caplog.text


async def test_a_v1_rejection_counts_its_readings_as_unknown(buffer: SqliteBuffer) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=1)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 1))
        v1 = encode_ack(buffer.epoch, [], [Rejection(batch=1, error="bad")], version=1)
        assert b'"v":1' in v1
        await sender.handle_ack(v1)
    assert sender.rejected_readings == {"unknown": 10}


class FailingBuffer:
    """A buffer whose begin and acknowledge fail the way a full disk makes them fail."""

    def __init__(self, inner: SqliteBuffer, failures: int) -> None:
        self.inner = inner
        self.epoch = inner.epoch
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise BufferUnavailable("database or disk is full")

    async def begin(self, limit: int) -> PendingBatch | None:
        self._maybe_fail()
        return await self.inner.begin(limit)

    async def acknowledge(self, batch_id: int) -> int:
        self._maybe_fail()
        return await self.inner.acknowledge(batch_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_failing_buffer_makes_the_forwarder_wait_not_crash(buffer: SqliteBuffer) -> None:
    failing = FailingBuffer(buffer, failures=3)
    publisher = FlakyPublisher(failures=0)
    sender = Forwarder(
        failing,  # type: ignore[arg-type]
        publisher,
        agent_id="a1",
        topics=Topics("plant"),
        settings=ForwardSettings.model_validate(
            {"batch_max_readings": 10, "retry_interval": "1ms", "ack_timeout": "50ms"}
        ),
        clock=SystemClock(),
    )
    task = asyncio.create_task(sender.run())
    try:
        await until(lambda: _true(len(publisher.published) >= 1))
        assert not failing.failures, "begin was retried"
        failing.failures = 1
        await sender.handle_ack(encode_ack(buffer.epoch, [1]))
        assert (await buffer.stats()).readings == 25, "a failed delete keeps the batch"
        await until(lambda: _true(len(publisher.published) >= 4))  # batch 1 is sent again
        await sender.handle_ack(encode_ack(buffer.epoch, [1]))
        assert (await buffer.stats()).readings == 15
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_stop_is_not_lost_when_data_arrives_at_the_same_moment(
    buffer: SqliteBuffer,
) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=8)
    task = asyncio.create_task(sender.run())
    await until(lambda: _true(len(publisher.published) == 3))
    await asyncio.sleep(0.05)  # now waiting for new data
    buffer.wait_for_data().set()
    task.cancel()  # in the same loop iteration: Python 3.11's wait_for would lose this
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the forwarder ran on after being cancelled"
    assert task.cancelled()


def carries_dictionary(raw: bytes) -> bool:
    return bool(split_v3(raw).dictionary)


async def test_the_dictionary_travels_until_confirmed_and_again_when_asked_for(
    buffer: SqliteBuffer,
) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=1)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 1))
        first = publisher.published[0][1]
        assert carries_dictionary(first), "nothing is confirmed yet: the dictionary goes along"
        assert split_v3(first).header.z, "compressed by default"
        await sender.handle_ack(encode_ack(buffer.epoch, [1]))
        await until(lambda: _true(len(publisher.published) == 2))
        second = publisher.published[1][1]
        assert not carries_dictionary(second), "confirmed: named by its hash only"
        assert split_v3(second).header.tags == split_v3(first).header.tags
        # Another collector replica, which never saw the dictionary, asks for it.
        await sender.handle_ack(encode_ack(buffer.epoch, [], dictionary=[11]))
        await until(lambda: _true(len(publisher.published) == 3))
        again = publisher.published[2][1]
        assert split_v3(again).header.batch == 11
        assert carries_dictionary(again)
        await sender.handle_ack(encode_ack(buffer.epoch, [11]))
        await until(lambda: _true(len(publisher.published) == 4))
        assert not carries_dictionary(publisher.published[3][1])
    assert (sender.dictionary_requests, sender.dictionaries_sent) == (1, 2)
    assert sender.batches_sent == 3


async def test_wire_version_2_is_still_sent_when_configured(buffer: SqliteBuffer) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=1, wire_version=2)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 1))
    header, dictionary, columns = split(publisher.published[0][1])
    assert (header["batch"], header["n"]) == (1, 10)
    assert columns["val"] == list(range(10))
    assert dictionary["name"] == ["t0", "t1", "t2", "t3", "t4"]


@pytest.mark.parametrize("linger", ["0s", "10ms"])
async def test_data_buffered_after_the_buffer_ran_empty_is_sent_with_or_without_linger(
    buffer: SqliteBuffer, linger: str
) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=8, linger=linger)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 3))
        # The forwarder has found the buffer empty by now (its look was queued first).
        await buffer.add([Reading("d", "t0", DataType.INT32, 1_790_000_000_000_100, 100)])
        await until(lambda: _true(len(publisher.published) == 4))
    assert values_of(publisher.published[3][1]) == [100]


async def test_a_dictionary_request_for_a_batch_already_confirmed_is_ignored(
    buffer: SqliteBuffer,
) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=1)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 1))
        await sender.handle_ack(encode_ack(buffer.epoch, [1]))
        await until(lambda: _true(len(publisher.published) == 2))
        await sender.handle_ack(encode_ack(buffer.epoch, [], dictionary=[1]))
        assert sender.dictionary_requests == 0
        await sender.handle_ack(encode_ack(buffer.epoch, [11]))
        await until(lambda: _true(len(publisher.published) == 3))
    batches = [split_v3(payload).header.batch for _, payload in publisher.published]
    assert batches == [1, 11, 21], "batch 1 was not sent again"


async def test_a_dictionary_request_for_a_version_2_batch_sends_it_again_unchanged(
    buffer: SqliteBuffer,
) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, ack_timeout="60s", window=1, wire_version=2)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) == 1))
        await sender.handle_ack(encode_ack(buffer.epoch, [], dictionary=[1]))
        await until(lambda: _true(len(publisher.published) == 2))
    first, again = publisher.published
    assert again == first, "a version 2 batch always carries its tags"
    assert (sender.dictionary_requests, sender.resends) == (1, 1)
