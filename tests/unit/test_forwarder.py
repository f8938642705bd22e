"""The forwarder: readings leave the buffer only when the collector confirms them."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.buffer import SqliteBuffer
from agent.config import ForwardSettings
from agent.forwarder import Forwarder
from shared.acks import Rejection, encode_ack
from shared.clock import SystemClock
from shared.readings import DataType, Reading
from shared.wire import Topics
from tests.payloads import split
from tests.unit.fakes import FlakyPublisher


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[SqliteBuffer]:
    store = SqliteBuffer(tmp_path / "b.sqlite")
    await store.open()
    await store.add(
        [Reading("d", "t", DataType.INT32, 1_790_000_000_000_000 + i, i) for i in range(25)]
    )
    yield store
    await store.close()


def forwarder(buffer: SqliteBuffer, publisher: FlakyPublisher, **settings: object) -> Forwarder:
    options = {
        "batch_max_readings": 10,
        "retry_interval": 0.001,
        "linger": 0.001,
        "ack_timeout": 0.2,
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
    sender = forwarder(buffer, publisher, ack_timeout=60)
    async with running(sender):
        await until(lambda: _true(len(publisher.published) >= 2))
        await asyncio.sleep(0.05)
        assert len(publisher.published) == 2, "the window holds two batches in flight"
        assert (await buffer.stats()).readings == 25, "the broker's PUBACK deletes nothing"
        for payload in list(publisher.published):
            await sender.handle_ack(encode_ack(buffer.epoch, [split(payload[1])[0]["batch"]]))
        await until(lambda: _true(len(publisher.published) == 3))
        await sender.handle_ack(encode_ack(buffer.epoch, [21]))
        await until(_empty(buffer))
    values = [v for _, payload in publisher.published for v in split(payload)[2]["val"]]
    assert values == list(range(25))
    assert sender.send_failures == 3
    assert sender.readings_acknowledged == sender.readings_sent == 25
    assert caplog.text.count("cannot forward") == 1
    assert "forwarding resumed" in caplog.text


async def test_unconfirmed_batches_are_sent_again_unchanged(buffer: SqliteBuffer) -> None:
    publisher = FlakyPublisher(failures=0)
    sender = forwarder(buffer, publisher, window=1, ack_timeout=0.05)
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
    sender = forwarder(buffer, publisher, ack_timeout=60, window=1)
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


async def _true(value: bool) -> bool:
    return value


def _empty(buffer: SqliteBuffer) -> object:
    async def check() -> bool:
        return (await buffer.stats()).readings == 0

    return check
